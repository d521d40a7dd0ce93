package loader_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/bert/task"
	"github.com/bertstream/bertstream/loader"
	"github.com/bertstream/bertstream/loader/loadertest"
)

// The model directories of testdata/tasks, laid out as on the Hub, with
// the outputs of Hugging Face's BERT computed by testdata/make_tasks.py.
func tasksDir(name string) string { return filepath.Join("..", "testdata", "tasks", name) }

func readRef(t *testing.T, name string, v any) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(tasksDir(name), "reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatal(err)
	}
}

func loadTask(t *testing.T, name string, opts bert.PredictorOptions) *bert.Predictor {
	t.Helper()
	p, err := loader.LoadPredictor(tasksDir(name), loader.Options{}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Model.Close)
	return p
}

func predictOne(t *testing.T, p *bert.Predictor, reqs ...task.Request) []any {
	t.Helper()
	var out []any
	for i, r := range p.Predict(context.Background(), reqs) {
		if r.Err != nil {
			t.Fatalf("request %d (%s): %v", i, reqs[i].Task, r.Err)
		}
		out = append(out, r.Value)
	}
	return out
}

const logitTol = 1e-4

func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

// TestCrossEncoder: classify on a one-label cross-encoder answers the
// logit and its sigmoid (not a softmax over one logit), and rerank orders
// the passages as the reference logits do.
func TestCrossEncoder(t *testing.T) {
	var ref loadertest.RerankRef
	readRef(t, "cross-encoder", &ref)
	p := loadTask(t, "cross-encoder", bert.PredictorOptions{})
	if got := strings.Join(p.Tasks(), ","); got != "classify,rerank,embed" {
		t.Errorf("tasks %s", got)
	}
	for _, q := range ref.Queries {
		var reqs []task.Request
		for _, ps := range q.Passages {
			reqs = append(reqs, task.Request{Task: task.Classify, Text: q.Query, TextPair: ps, HasPair: true})
		}
		for i, v := range predictOne(t, p, reqs...) {
			c := v.(bert.ClassifyResult)
			want := q.Logits[i]
			if c.Function != bert.FuncSigmoid || len(c.Logits) != 1 || math.Abs(c.Logits[0]-want) > logitTol ||
				math.Abs(c.Score-sigmoid(want)) > logitTol || c.Label != "LABEL_0" || math.Abs(c.Scores["LABEL_0"]-c.Score) > 0 {
				t.Errorf("%q / %q: %+v, want logit %.6f, score %.6f (sigmoid)", q.Query, q.Passages[i], c, want, sigmoid(want))
			}
		}
		v := predictOne(t, p, task.Request{Task: task.Rerank, Query: q.Query, Passages: q.Passages, ReturnText: true})[0]
		r := v.(bert.RerankResult)
		if len(r.Ranking) != len(q.Order) {
			t.Fatalf("%q: %d ranked, want %d", q.Query, len(r.Ranking), len(q.Order))
		}
		for k, e := range r.Ranking {
			if e.Index != q.Order[k] || math.Abs(e.Logit-q.Logits[e.Index]) > logitTol ||
				math.Abs(e.Score-sigmoid(q.Logits[e.Index])) > logitTol || e.Text != q.Passages[e.Index] {
				t.Errorf("%q: rank %d is %+v, want passage %d (logit %.6f)", q.Query, k, e, q.Order[k], q.Logits[q.Order[k]])
			}
		}
	}
	// Two rerank requests and a classify in one batch: each answered alone.
	q0, q1 := ref.Queries[0], ref.Queries[1]
	res := predictOne(t, p,
		task.Request{Task: task.Rerank, Query: q0.Query, Passages: q0.Passages},
		task.Request{Task: task.Classify, Text: q1.Query, TextPair: q1.Passages[1], HasPair: true},
		task.Request{Task: task.Rerank, Query: q1.Query, Passages: q1.Passages})
	if r := res[2].(bert.RerankResult); r.Ranking[0].Index != q1.Order[0] || r.Ranking[0].Text != "" {
		t.Errorf("batched rerank: %+v, want passage %d first and no text", r.Ranking[0], q1.Order[0])
	}
	if c := res[1].(bert.ClassifyResult); math.Abs(c.Logits[0]-q1.Logits[1]) > logitTol {
		t.Errorf("batched classify: logit %g, want %g", c.Logits[0], q1.Logits[1])
	}
	// A passage over the limit refuses the request, naming the passage.
	strict := loadTask(t, "cross-encoder", bert.PredictorOptions{MaxLen: 12})
	bad := strict.Predict(context.Background(), []task.Request{{Task: task.Rerank, Query: "paris", Passages: []string{"rome", strings.Repeat("the cat ", 10)}}})
	if !errors.Is(bad[0].Err, task.ErrTooLong) || !strings.Contains(bad[0].Err.Error(), "passage 1") {
		t.Errorf("over-long passage: %v", bad[0].Err)
	}
	for _, r := range []task.Request{
		{Task: task.Rerank, Passages: []string{"a"}},
		{Task: task.Rerank, Query: "q"},
		{Task: task.Rerank, Query: "q", Passages: []string{"a", " "}},
	} {
		if _, err := p.CountTokens(r); !errors.Is(err, task.ErrBadRequest) {
			t.Errorf("%+v: %v, want a bad request", r, err)
		}
	}
}

// TestMultiLabel: problem_type multi_label_classification gives a sigmoid
// per label.
func TestMultiLabel(t *testing.T) {
	var ref struct {
		Labels []string    `json:"labels"`
		Texts  []string    `json:"texts"`
		Logits [][]float64 `json:"logits"`
	}
	readRef(t, "multi-label", &ref)
	p := loadTask(t, "multi-label", bert.PredictorOptions{})
	if strings.Contains(strings.Join(p.Tasks(), ","), task.Rerank) {
		t.Errorf("a three-label model offers rerank: %v", p.Tasks())
	}
	for i, text := range ref.Texts {
		c := predictOne(t, p, task.Request{Task: task.Classify, Text: text})[0].(bert.ClassifyResult)
		if c.Function != bert.FuncSigmoid {
			t.Errorf("function %s", c.Function)
		}
		best := 0
		for k, l := range ref.Logits[i] {
			if math.Abs(c.Logits[k]-l) > logitTol || math.Abs(c.Scores[ref.Labels[k]]-sigmoid(l)) > logitTol {
				t.Errorf("%q %s: logit %g score %g, want %g, %g", text, ref.Labels[k], c.Logits[k], c.Scores[ref.Labels[k]], l, sigmoid(l))
			}
			if l > ref.Logits[i][best] {
				best = k
			}
		}
		if c.Label != ref.Labels[best] {
			t.Errorf("%q: label %s, want %s", text, c.Label, ref.Labels[best])
		}
	}
}

type refEntity struct {
	Entity      string  `json:"entity"`
	EntityGroup string  `json:"entity_group"`
	Score       float64 `json:"score"`
	Index       int     `json:"index"`
	Word        string  `json:"word"`
	Start       int     `json:"start"`
	End         int     `json:"end"`
}

// TestNER: ner on a token classifier gives, for texts with accents, CJK,
// an emoji and runs of spaces, the reference's per-token argmax labels
// with character spans (aggregation none) and transformers' grouping for
// simple, first, average and max.
func TestNER(t *testing.T) {
	var ref struct {
		Labels []string `json:"labels"`
		Cases  []struct {
			Text        string      `json:"text"`
			Tokens      []string    `json:"tokens"`
			IDs         []int32     `json:"ids"`
			TokenLogits [][]float64 `json:"token_logits"`
			None        []refEntity `json:"none"`
			Simple      []refEntity `json:"simple"`
			First       []refEntity `json:"first"`
			Average     []refEntity `json:"average"`
			Max         []refEntity `json:"max"`
		} `json:"cases"`
	}
	readRef(t, "ner", &ref)
	p := loadTask(t, "ner", bert.PredictorOptions{})
	if got := strings.Join(p.Tasks(), ","); got != "ner,embed" {
		t.Errorf("tasks %s", got)
	}
	groups := 0
	for _, c := range ref.Cases {
		// Every token's label, O included, from the reference logits.
		var want []refEntity
		for k, row := range c.TokenLogits[1 : len(c.TokenLogits)-1] {
			best := 0
			for i, v := range row {
				if v > row[best] {
					best = i
				}
			}
			if ref.Labels[best] != "O" {
				want = append(want, refEntity{Entity: ref.Labels[best], Index: k + 1})
			}
		}
		got := predictOne(t, p, task.Request{Task: "token-classification", Text: c.Text})[0].(bert.NERResult)
		if len(got.Entities) != len(want) || len(want) != len(c.None) {
			t.Fatalf("%q: %d entities, argmax of the reference logits %d, pipeline %d", c.Text, len(got.Entities), len(want), len(c.None))
		}
		for k, e := range got.Entities {
			if e.Entity != want[k].Entity || e.Index != want[k].Index {
				t.Errorf("%q: entity %d is %s at token %d, reference %s at %d", c.Text, k, e.Entity, e.Index, want[k].Entity, want[k].Index)
			}
		}
		compare := func(agg string, wantEnts []refEntity) {
			got := predictOne(t, p, task.Request{Task: task.NER, Text: c.Text, Aggregation: agg})[0].(bert.NERResult)
			if got.Aggregation != agg || len(got.Entities) != len(wantEnts) {
				t.Errorf("%q %s: %d entities %+v, want %d %+v", c.Text, agg, len(got.Entities), got.Entities, len(wantEnts), wantEnts)
				return
			}
			for k, e := range got.Entities {
				w := wantEnts[k]
				if e.Entity != w.Entity || e.EntityGroup != w.EntityGroup || e.Index != w.Index || e.Word != w.Word ||
					e.Start != w.Start || e.End != w.End || math.Abs(e.Score-w.Score) > logitTol {
					t.Errorf("%q %s: entity %d is %+v, want %+v", c.Text, agg, k, e, w)
				}
				// The span is the text the entity came from.
				if e.EntityGroup != "" {
					groups++
				}
				if span := []rune(c.Text)[e.Start:e.End]; len(span) == 0 {
					t.Errorf("%q %s: empty span %+v", c.Text, agg, e)
				}
			}
		}
		compare(bert.AggNone, c.None)
		compare(bert.AggSimple, c.Simple)
		compare(bert.AggFirst, c.First)
		compare(bert.AggAverage, c.Average)
		compare(bert.AggMax, c.Max)
	}
	if groups < 20 {
		t.Errorf("only %d groups compared", groups)
	}
	// Spans written out by hand from the fixture's texts.
	got := predictOne(t, p, task.Request{Task: task.NER, Text: ref.Cases[3].Text, Aggregation: bert.AggSimple})[0].(bert.NERResult)
	var spans []string
	for _, e := range got.Entities {
		spans = append(spans, e.EntityGroup+":"+string([]rune(ref.Cases[3].Text)[e.Start:e.End]))
	}
	if s := strings.Join(spans, "|"); s != "ORG:United Nations|LOC:York" {
		t.Errorf("spans %s", s)
	}
	if _, err := p.CountTokens(task.Request{Task: task.NER, Text: "x", Aggregation: "mean"}); !errors.Is(err, task.ErrBadRequest) {
		t.Errorf("aggregation mean: %v", err)
	}
}

func cosine(a []float32, b []float64) (cos, maxErr float64) {
	var ab, aa, bb float64
	for i := range a {
		ab += float64(a[i]) * b[i]
		aa += float64(a[i]) * float64(a[i])
		bb += b[i] * b[i]
		maxErr = math.Max(maxErr, math.Abs(float64(a[i])-b[i]))
	}
	return ab / math.Sqrt(aa*bb), maxErr
}

// TestSentenceTransformers: embed without options on a
// sentence-transformers directory follows its modules: mean pooling and
// Normalize for st-mean, CLS, Normalize, max_seq_length and lowercasing
// for st-cls; options still override.
func TestSentenceTransformers(t *testing.T) {
	for _, c := range []struct {
		dir, pooling string
	}{{"st-mean", bert.PoolMean}, {"st-cls", bert.PoolCLS}} {
		t.Run(c.dir, func(t *testing.T) {
			var ref struct {
				Texts      []string    `json:"texts"`
				Embeddings [][]float64 `json:"embeddings"`
				Mean       [][]float64 `json:"mean"`
				CLS        [][]float64 `json:"cls"`
				Max        [][]float64 `json:"max"`
			}
			readRef(t, c.dir, &ref)
			p := loadTask(t, c.dir, bert.PredictorOptions{})
			check := func(what string, r task.Request, want [][]float64, pooling string, norm bool) {
				var reqs []task.Request
				for _, text := range ref.Texts {
					r.Task, r.Text = task.Embed, text
					reqs = append(reqs, r)
				}
				for i, v := range predictOne(t, p, reqs...) {
					e := v.(bert.EmbedResult)
					cos, maxErr := cosine(e.Embedding, want[i])
					if cos < 0.9999 || maxErr > 1e-4 || e.Pooling != pooling || e.Normalize != norm {
						t.Errorf("%s, text %d: %s normalized %v, cosine %.6f, max error %.2g", what, i, e.Pooling, e.Normalize, cos, maxErr)
					}
				}
			}
			check("defaults", task.Request{}, ref.Embeddings, c.pooling, true)
			check("normalize false", task.Request{Pooling: bert.PoolMax, HasNormalize: true}, ref.Max, bert.PoolMax, false)
			if c.dir == "st-mean" {
				check("pooling cls", task.Request{Pooling: bert.PoolCLS, HasNormalize: true}, ref.CLS, bert.PoolCLS, false)
			} else {
				check("pooling mean", task.Request{Pooling: bert.PoolMean, HasNormalize: true}, ref.Mean, bert.PoolMean, false)
			}
		})
	}
}

// TestUnsupportedTaskNamesDir: the error names the directory as given and
// the tasks the model serves.
func TestUnsupportedTaskNamesDir(t *testing.T) {
	p := loadTask(t, "st-mean", bert.PredictorOptions{})
	_, err := p.CountTokens(task.Request{Task: task.NER, Text: "x"})
	want := `task "ner" is not supported by model directory ` + tasksDir("st-mean") + ` (supports embed)`
	if !errors.Is(err, task.ErrBadRequest) || !strings.Contains(err.Error(), want) {
		t.Errorf("%v, want %s", err, want)
	}
}
