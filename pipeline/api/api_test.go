package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/bert/task"
	"github.com/bertstream/bertstream/loader"
	"github.com/bertstream/bertstream/loader/loadertest"
	"github.com/bertstream/bertstream/pipeline"
	"github.com/bertstream/bertstream/pipeline/api"
)

const (
	tiny  = "../../testdata/bert-tiny/"
	tasks = "../../testdata/tasks/"
)

func load(t testing.TB, dir string, truncate bool) *bert.Predictor {
	t.Helper()
	p, err := loader.LoadPredictor(dir, loader.Options{}, bert.PredictorOptions{Truncate: truncate})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Model.Close() })
	return p
}

// server is an API on a real TCP listener, its batcher running.
type server struct {
	url string
	reg *prometheus.Registry
	m   *pipeline.Metrics
}

func start(t testing.TB, model api.Model, bc pipeline.BatchConfig, o api.Options) *server {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := pipeline.NewMetrics(reg)
	b := pipeline.NewBatcher(model, bc, m)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Run(ctx)
	}()
	o.Model, o.Batcher, o.Gatherer, o.Registerer = model, b, reg, reg
	h, err := api.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(func() {
		ts.Close()
		cancel()
		<-done
	})
	return &server{url: ts.URL, reg: reg, m: m}
}

// post sends body (a value to encode, or raw bytes) and decodes a 200
// answer into out; it returns the status and the raw answer.
func post(t testing.TB, url string, body any, out any, header ...string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case []byte:
		rd = bytes.NewReader(b)
	case io.Reader:
		rd = b
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(http.MethodPost, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return do(t, req, out)
}

func do(t testing.TB, req *http.Request, out any) (int, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == http.StatusOK && out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s: decoding %s: %v", req.URL, raw, err)
		}
	}
	return resp.StatusCode, raw
}

func get(t testing.TB, url string, out any, header ...string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return do(t, req, out)
}

// wantError checks a TEI error answer: its status and JSON shape.
func wantError(t *testing.T, what string, status int, raw []byte, code int, typ, substr string) {
	t.Helper()
	var e struct {
		Error string `json:"error"`
		Type  string `json:"error_type"`
	}
	if err := json.Unmarshal(raw, &e); err != nil || e.Error == "" {
		t.Errorf("%s: answer %q is not a JSON error (%v)", what, raw, err)
		return
	}
	if status != code || e.Type != typ || !strings.Contains(e.Error, substr) {
		t.Errorf("%s: got %d %s %q, want %d %s containing %q", what, status, e.Type, e.Error, code, typ, substr)
	}
}

func readJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func maxDiff(a, b []float64) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	d := 0.0
	for i := range a {
		d = max(d, math.Abs(a[i]-b[i]))
	}
	return d
}

func f64(x []float32) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

// direct is what the predictor answers outside the API, as JSON, which
// is what `bertstream predict` prints.
func direct(t testing.TB, p task.Predictor, reqs ...task.Request) []json.RawMessage {
	t.Helper()
	var out []json.RawMessage
	for i, r := range p.Predict(context.Background(), reqs) {
		if r.Err != nil {
			t.Fatalf("request %d: %v", i, r.Err)
		}
		b, err := json.Marshal(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// TestEmbed: /embed answers the sentence-transformers embeddings PyTorch
// computed, and what the predictor answers, for one text and a list.
func TestEmbed(t *testing.T) {
	var ref struct {
		Texts      []string    `json:"texts"`
		Embeddings [][]float64 `json:"embeddings"`
		Mean       [][]float64 `json:"mean"`
	}
	readJSON(t, tasks+"st-mean/reference.json", &ref)
	p := load(t, tasks+"st-mean", true)
	s := start(t, p, pipeline.BatchConfig{}, api.Options{})

	var list [][]float32
	if code, raw := post(t, s.url+"/embed", map[string]any{"inputs": ref.Texts}, &list); code != 200 {
		t.Fatalf("/embed: %d %s", code, raw)
	}
	var one [][]float32
	if code, raw := post(t, s.url+"/embed", map[string]any{"inputs": ref.Texts[2]}, &one); code != 200 || len(one) != 1 {
		t.Fatalf("/embed of one string: %d %s", code, raw)
	}
	var raw [][]float32
	if code, b := post(t, s.url+"/embed", map[string]any{"inputs": ref.Texts, "normalize": false}, &raw); code != 200 {
		t.Fatalf("/embed normalize false: %d %s", code, b)
	}
	for i, text := range ref.Texts {
		if d := maxDiff(f64(list[i]), ref.Embeddings[i]); d > 1e-4 {
			t.Errorf("text %d: embedding differs from PyTorch's by %g", i, d)
		}
		if d := maxDiff(f64(raw[i]), ref.Mean[i]); d > 1e-4 {
			t.Errorf("text %d: unnormalised embedding differs from PyTorch's mean pooling by %g", i, d)
		}
		var want struct {
			Embedding []float64 `json:"embedding"`
		}
		if err := json.Unmarshal(direct(t, p, task.Request{Task: task.Embed, Text: text, Normalize: true, HasNormalize: true})[0], &want); err != nil {
			t.Fatal(err)
		}
		if d := maxDiff(f64(list[i]), want.Embedding); d > 1e-4 {
			t.Errorf("text %d: /embed differs from predict by %g", i, d)
		}
	}
	if d := maxDiff(f64(one[0]), f64(list[2])); d > 1e-4 {
		t.Errorf("one string and the same in a list differ by %g", d)
	}
}

// TestRerank: /rerank ranks the passages as the PyTorch cross-encoder
// scores them, raw or through the sigmoid, with or without the texts.
func TestRerank(t *testing.T) {
	var ref loadertest.RerankRef
	readJSON(t, tasks+"cross-encoder/reference.json", &ref)
	p := load(t, tasks+"cross-encoder", true)
	s := start(t, p, pipeline.BatchConfig{}, api.Options{})
	for _, q := range ref.Queries {
		for _, rawScores := range []bool{false, true} {
			var ranks []struct {
				Index int      `json:"index"`
				Score float64  `json:"score"`
				Text  *string  `json:"text"`
				Extra *float64 `json:"logit"`
			}
			code, b := post(t, s.url+"/rerank", map[string]any{"query": q.Query, "texts": q.Passages, "raw_scores": rawScores, "return_text": rawScores}, &ranks)
			if code != 200 || len(ranks) != len(q.Passages) {
				t.Fatalf("/rerank: %d %s", code, b)
			}
			for i, r := range ranks {
				want := q.Logits[r.Index]
				if !rawScores {
					want = 1 / (1 + math.Exp(-want))
				}
				if math.Abs(r.Score-want) > 1e-4 {
					t.Errorf("%q passage %d: score %g, PyTorch %g", q.Query, r.Index, r.Score, want)
				}
				if r.Index != q.Order[i] {
					t.Errorf("%q: rank %d is passage %d, PyTorch ranks %d", q.Query, i, r.Index, q.Order[i])
				}
				if (r.Text != nil) != rawScores || r.Text != nil && *r.Text != q.Passages[r.Index] {
					t.Errorf("return_text %t: text %v", rawScores, r.Text)
				}
				if r.Extra != nil {
					t.Errorf("TEI's Rank has no logit field: %s", b)
				}
			}
		}
	}
}

// TestPredict: /predict answers a text, a pair and a batch of both with
// every label and the score predict gives it, best first.
func TestPredict(t *testing.T) {
	p := load(t, tiny+"bert-classifier", true)
	s := start(t, p, pipeline.BatchConfig{}, api.Options{})
	a, b := "Stocks fell sharply as investors worried about rates.", "The striker scored twice in the final."
	check := func(got []api.Prediction, r task.Request, raw bool) {
		t.Helper()
		var want struct {
			Scores map[string]float64 `json:"scores"`
			Logits []float64          `json:"logits"`
		}
		if err := json.Unmarshal(direct(t, p, r)[0], &want); err != nil {
			t.Fatal(err)
		}
		if len(got) != len(p.Labels()) {
			t.Fatalf("%d labels, the model has %d", len(got), len(p.Labels()))
		}
		for i, g := range got {
			w := want.Scores[g.Label]
			if raw {
				for j, l := range p.Labels() {
					if l == g.Label {
						w = want.Logits[j]
					}
				}
			}
			if math.Abs(g.Score-w) > 1e-4 {
				t.Errorf("%q label %s: %g, predict %g", r.Text, g.Label, g.Score, w)
			}
			if i > 0 && g.Score > got[i-1].Score {
				t.Errorf("labels not sorted by score: %v", got)
			}
		}
	}
	var one []api.Prediction
	if code, raw := post(t, s.url+"/predict", map[string]any{"inputs": a}, &one); code != 200 {
		t.Fatalf("%d %s", code, raw)
	}
	check(one, task.Request{Task: task.Classify, Text: a}, false)
	var pair []api.Prediction
	if code, raw := post(t, s.url+"/predict", map[string]any{"inputs": []string{a, b}, "raw_scores": true}, &pair); code != 200 {
		t.Fatalf("%d %s", code, raw)
	}
	check(pair, task.Request{Task: task.Classify, Text: a, TextPair: b, HasPair: true}, true)
	var batch [][]api.Prediction
	if code, raw := post(t, s.url+"/predict", map[string]any{"inputs": [][]string{{b}, {a, b}}}, &batch); code != 200 || len(batch) != 2 {
		t.Fatalf("%d %s", code, raw)
	}
	check(batch[0], task.Request{Task: task.Classify, Text: b}, false)
	check(batch[1], task.Request{Task: task.Classify, Text: a, TextPair: b, HasPair: true}, false)
}

// TestTokenize: /tokenize gives the ids and offsets Hugging Face's fast
// tokenizer gives, with [CLS] and [SEP] as TEI shows them.
func TestTokenize(t *testing.T) {
	var ref struct {
		Cases []struct {
			Text    string   `json:"text"`
			Tokens  []string `json:"tokens"`
			IDs     []int32  `json:"ids"`
			Offsets [][2]int `json:"offsets"`
		} `json:"cases"`
	}
	readJSON(t, tasks+"ner/reference.json", &ref)
	p := load(t, tasks+"ner", true)
	s := start(t, p, pipeline.BatchConfig{}, api.Options{})
	var texts []string
	for _, c := range ref.Cases {
		texts = append(texts, c.Text)
	}
	var got [][]api.Token
	if code, raw := post(t, s.url+"/tokenize", map[string]any{"inputs": texts}, &got); code != 200 || len(got) != len(texts) {
		t.Fatalf("%d %s", code, raw)
	}
	for i, c := range ref.Cases {
		toks := got[i]
		if len(toks) != len(c.IDs) {
			t.Fatalf("%q: %d tokens, Hugging Face %d", c.Text, len(toks), len(c.IDs))
		}
		for j, tk := range toks {
			if tk.ID != c.IDs[j] {
				t.Errorf("%q token %d: id %d, Hugging Face %d", c.Text, j, tk.ID, c.IDs[j])
			}
			if j == 0 || j == len(toks)-1 {
				if !tk.Special || tk.Start != nil || tk.Stop != nil {
					t.Errorf("%q token %d: %+v, want an added special token without offsets", c.Text, j, tk)
				}
				continue
			}
			// Python's offsets count characters, TEI's bytes.
			off := byteOffsets(c.Text, c.Offsets[j-1])
			if tk.Special || tk.Start == nil || *tk.Start != off[0] || *tk.Stop != off[1] || tk.Text != c.Text[off[0]:off[1]] || tk.Token != c.Tokens[j-1] {
				t.Errorf("%q token %d: %+v, Hugging Face %q at %v", c.Text, j, tk, c.Tokens[j-1], off)
			}
		}
	}
	var bare [][]api.Token
	if code, raw := post(t, s.url+"/tokenize", map[string]any{"inputs": texts[0], "add_special_tokens": false}, &bare); code != 200 || len(bare) != 1 || len(bare[0]) != len(ref.Cases[0].Tokens) {
		t.Fatalf("without special tokens: %d %s", code, raw)
	}
}

// TestOwnRoutes: /fill-mask, /nsp and /ner answer what predict answers.
func TestOwnRoutes(t *testing.T) {
	same := func(t *testing.T, got []byte, want json.RawMessage) {
		t.Helper()
		var g, w any
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(want, &w); err != nil {
			t.Fatal(err)
		}
		if d := jsonDiff(g, w); d != "" {
			t.Errorf("%s\nAPI:     %s\npredict: %s", d, got, want)
		}
	}
	t.Run("pretraining", func(t *testing.T) {
		p := load(t, tiny+"bert-pretraining", true)
		s := start(t, p, pipeline.BatchConfig{}, api.Options{})
		code, raw := post(t, s.url+"/fill-mask", map[string]any{"inputs": "the capital of france is [MASK].", "top_k": 3}, nil)
		if code != 200 {
			t.Fatalf("%d %s", code, raw)
		}
		same(t, raw, direct(t, p, task.Request{Task: task.FillMask, Text: "the capital of france is [MASK].", TopK: 3})[0])
		code, raw = post(t, s.url+"/nsp", map[string]any{"inputs": [][]string{{"I went to the store.", "I bought milk."}}}, nil)
		if code != 200 {
			t.Fatalf("%d %s", code, raw)
		}
		want := direct(t, p, task.Request{Task: task.NSP, Text: "I went to the store.", TextPair: "I bought milk.", HasPair: true})
		same(t, raw, json.RawMessage("["+string(want[0])+"]"))
	})
	t.Run("ner", func(t *testing.T) {
		p := load(t, tasks+"ner", true)
		s := start(t, p, pipeline.BatchConfig{}, api.Options{})
		text := "Angela Merkel met Emmanuel Macron in Paris."
		code, raw := post(t, s.url+"/ner", map[string]any{"inputs": text, "aggregation": "simple"}, nil)
		if code != 200 {
			t.Fatalf("%d %s", code, raw)
		}
		same(t, raw, direct(t, p, task.Request{Task: task.NER, Text: text, Aggregation: "simple"})[0])
	})
}

// jsonDiff compares decoded JSON, numbers within 1e-4.
func jsonDiff(a, b any) string {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return fmt.Sprintf("%v vs %v", a, b)
		}
		for k := range x {
			if d := jsonDiff(x[k], y[k]); d != "" {
				return k + ": " + d
			}
		}
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return fmt.Sprintf("%v vs %v", a, b)
		}
		for i := range x {
			if d := jsonDiff(x[i], y[i]); d != "" {
				return fmt.Sprintf("[%d]: %s", i, d)
			}
		}
	case float64:
		y, ok := b.(float64)
		if !ok || math.Abs(x-y) > 1e-4 {
			return fmt.Sprintf("%v vs %v", a, b)
		}
	default:
		if a != b {
			return fmt.Sprintf("%v vs %v", a, b)
		}
	}
	return ""
}

// TestInfoHealthOpenAPI: /info describes the model and the limits, /health
// answers, /openapi.json is the checked-in document.
func TestInfoHealthOpenAPI(t *testing.T) {
	p := load(t, tasks+"cross-encoder", false)
	s := start(t, p, pipeline.BatchConfig{MaxBatch: 8, MaxTokens: 2048}, api.Options{MaxInputs: 16, Version: "test"})
	var info map[string]any
	if code, raw := get(t, s.url+"/info", &info); code != 200 {
		t.Fatalf("%d %s", code, raw)
	}
	for k, want := range map[string]any{"model_id": p.Name(), "max_input_length": float64(p.MaxLen()), "max_batch_requests": 8.0, "max_batch_tokens": 2048.0, "max_client_batch_size": 16.0, "auto_truncate": false, "version": "test"} {
		if info[k] != want {
			t.Errorf("info %s = %v, want %v", k, info[k], want)
		}
	}
	if mt, _ := info["model_type"].(map[string]any); mt["reranker"] == nil {
		t.Errorf("model_type %v, want a reranker", info["model_type"])
	}
	if code, raw := get(t, s.url+"/health", nil); code != 200 || len(raw) != 0 {
		t.Errorf("/health: %d %q", code, raw)
	}
	var doc struct {
		OpenAPI string         `json:"openapi"`
		Paths   map[string]any `json:"paths"`
	}
	if code, raw := get(t, s.url+"/openapi.json", &doc); code != 200 {
		t.Fatalf("%d %s", code, raw)
	}
	for _, path := range []string{"/embed", "/predict", "/rerank", "/tokenize", "/info", "/health", "/metrics", "/fill-mask", "/ner", "/nsp"} {
		if doc.Paths[path] == nil {
			t.Errorf("openapi.json lacks %s", path)
		}
	}
}

// TestErrors: every refusal has its status and a TEI error body, and
// none costs model time.
func TestErrors(t *testing.T) {
	p := load(t, tiny+"bert-classifier", false)
	s := start(t, p, pipeline.BatchConfig{}, api.Options{MaxBodyBytes: 1 << 20, MaxInputs: 4})
	long := strings.Repeat("the market rallied on strong earnings ", 20)
	for _, tc := range []struct {
		name, route string
		body        any
		code        int
		typ, msg    string
	}{
		{"malformed JSON", "/embed", []byte(`{"inputs": "a`), 422, "validation", "malformed JSON"},
		{"trailing data", "/embed", []byte(`{"inputs": "a"} {}`), 422, "validation", "trailing"},
		{"invalid UTF-8", "/embed", []byte("{\"inputs\": \"\xff\"}"), 422, "validation", "UTF-8"},
		{"no inputs", "/embed", map[string]any{}, 422, "validation", "missing"},
		{"inputs of numbers", "/embed", map[string]any{"inputs": 3}, 422, "validation", "neither"},
		{"empty text", "/embed", map[string]any{"inputs": []string{"a", " "}}, 422, "validation", "empty"},
		{"empty list", "/predict", map[string]any{"inputs": [][]string{}}, 422, "validation", "empty list"},
		{"too many inputs", "/embed", map[string]any{"inputs": []string{"a", "b", "c", "d", "e"}}, 422, "validation", "batch size 5"},
		{"three strings", "/predict", map[string]any{"inputs": []string{"a", "b", "c"}}, 422, "validation", "pair"},
		{"no rerank head", "/rerank", map[string]any{"query": "q", "texts": []string{"a"}}, 422, "validation", "no rerank head"},
		{"no mlm head", "/fill-mask", map[string]any{"inputs": "a [MASK]"}, 422, "validation", "no fill-mask head"},
		{"too long", "/predict", map[string]any{"inputs": long}, 413, "validation", "must have less than"},
		{"truncate on a refusing server", "/predict", map[string]any{"inputs": long, "truncate": true}, 422, "validation", "--truncate=false"},
		{"bad pooling", "/embed", map[string]any{"inputs": "a", "pooling": "median"}, 422, "validation", "median"},
		{"left truncation", "/embed", map[string]any{"inputs": "a", "truncation_direction": "left"}, 422, "validation", "right"},
		{"10 MB body", "/embed", []byte(`{"inputs": "` + strings.Repeat("a", 10<<20) + `"}`), 413, "validation", "over the limit"},
		{"10 MB body of unknown length", "/embed", io.MultiReader(strings.NewReader(`{"inputs": "`), strings.NewReader(strings.Repeat("a", 10<<20))), 413, "validation", "over the limit"},
		{"no route", "/classify", map[string]any{}, 404, "not_found", "no route"},
	} {
		code, raw := post(t, s.url+tc.route, tc.body, nil)
		wantError(t, tc.name, code, raw, tc.code, tc.typ, tc.msg)
	}
	if n := histCount(t, s.reg, "bertstream_batch_size", ""); n != 1 {
		// Only the bad pooling reaches the model, which refuses it.
		t.Errorf("%d model batches for refused requests, want 1 (the pooling the model refuses)", n)
	}
}

// histCount is the observation count of a histogram (with label value
// lv, when given).
func histCount(t testing.TB, g prometheus.Gatherer, name, lv string) uint64 {
	t.Helper()
	h := hist(t, g, name, lv)
	if h == nil {
		return 0
	}
	return h.GetSampleCount()
}

func hist(t testing.TB, g prometheus.Gatherer, name, lv string) *dto.Histogram {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if lv == "" || len(m.GetLabel()) > 0 && m.GetLabel()[0].GetValue() == lv {
				return m.GetHistogram()
			}
		}
	}
	return nil
}

func counter(t testing.TB, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// TestConcurrentEmbed: 200 clients at once are all answered, in batches
// of more than one, each with its own text's embedding.
func TestConcurrentEmbed(t *testing.T) {
	p := load(t, tasks+"st-mean", true)
	s := start(t, p, pipeline.BatchConfig{MaxBatch: 32, MaxWait: 20 * time.Millisecond, MaxQueue: 256}, api.Options{})
	const n = 200
	texts := make([]string, n)
	for i := range texts {
		texts[i] = fmt.Sprintf("sentence number %d about the river", i%7)
	}
	want := map[string][]float32{}
	for i := range 7 {
		var e [][]float32
		if code, raw := post(t, s.url+"/embed", map[string]any{"inputs": texts[i]}, &e); code != 200 {
			t.Fatalf("%d %s", code, raw)
		}
		want[texts[i]] = e[0]
	}
	before := histCount(t, s.reg, "bertstream_batch_requests", pipeline.SourceHTTP)
	var wg sync.WaitGroup
	codes := make([]int, n)
	got := make([][][]float32, n)
	for i := range n {
		wg.Go(func() {
			codes[i], _ = post(t, s.url+"/embed", map[string]any{"inputs": texts[i]}, &got[i])
		})
	}
	wg.Wait()
	for i, c := range codes {
		if c != 200 {
			t.Fatalf("request %d: %d", i, c)
		}
		if d := maxDiff(f64(got[i][0]), f64(want[texts[i]])); d > 1e-4 {
			t.Errorf("request %d: embedding differs from the same text's alone by %g", i, d)
		}
	}
	h := hist(t, s.reg, "bertstream_batch_requests", pipeline.SourceHTTP)
	batches := h.GetSampleCount() - before
	sum := h.GetSampleSum() - 7
	if batches >= n || sum != n {
		t.Errorf("%v requests in %d batches: want %d requests in batches of more than one on average", sum, batches, n)
	}
	t.Logf("%d requests in %d batches", n, batches)
}

func byteOffsets(s string, chars [2]int) [2]int {
	r := []rune(s)
	return [2]int{len(string(r[:chars[0]])), len(string(r[:chars[1]]))}
}
