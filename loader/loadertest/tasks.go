package loadertest

// RerankRef is the reference of the cross-encoder fixture
// (testdata/tasks/cross-encoder/reference.json, written by
// testdata/make_tasks.py): for each query its passages, PyTorch's logit
// for each (query, passage) pair, and the passages' order by that logit.
type RerankRef struct {
	Queries []struct {
		Query    string    `json:"query"`
		Passages []string  `json:"passages"`
		Logits   []float64 `json:"logits"`
		Order    []int     `json:"order"`
	} `json:"queries"`
}
