package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bertstream/bertstream/loader/loadertest"
)

const tasksFixtures = "../../testdata/tasks"

// runCode runs bertstream in-process and returns its exit status.
func runCode(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := runMain(args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestPredictUnservableTask: an unknown task, or one the model has no
// head for, is one line on stderr naming the directory and the tasks it
// supports, and a non-zero exit, with nothing on stdout.
func TestPredictUnservableTask(t *testing.T) {
	for _, c := range []struct {
		model, task, supports string
	}{
		{"st-mean", "bogus", "embed"},
		{"st-mean", "ner", "embed"},
		{"../bert-tiny/bert-pretraining", "classify", "fill-mask, nsp, embed"},
		{"cross-encoder", "nsp", "classify, rerank, embed"},
	} {
		dir := filepath.Join(tasksFixtures, c.model)
		code, out, errs := runCode("predict", "--model", dir, "--task", c.task, "some text")
		lines := strings.Split(strings.TrimSpace(errs), "\n")
		last := lines[len(lines)-1]
		want := "model directory " + dir + " cannot serve task \"" + c.task + "\": it supports " + c.supports
		if code == 0 || out != "" || !strings.Contains(last, want) {
			t.Errorf("--task %s on %s: exit %d, stdout %q, stderr %q; want non-zero and %q", c.task, c.model, code, out, errs, want)
		}
	}
}

// TestPredictLineErrors: errors of single JSON lines stay on their lines,
// every line is answered, and the exit status says that some failed.
func TestPredictLineErrors(t *testing.T) {
	in := filepath.Join(t.TempDir(), "in.jsonl")
	writeFile(t, in, "{\"text\":\"Angela Merkel met Emmanuel Macron in Paris.\"}\nnot json\n{\"text\":\" \"}\n{\"text\":\"Taro Yamada\"}\n")
	code, out, errs := runCode("predict", "--model", filepath.Join(tasksFixtures, "ner"), "--task", "token-classification", "--input", in)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code == 0 || len(lines) != 4 || !strings.Contains(errs, "2 of 4 inputs failed") {
		t.Fatalf("exit %d, %d lines, stderr %q", code, len(lines), errs)
	}
	for i, l := range lines {
		var obj map[string]any
		if err := json.Unmarshal([]byte(l), &obj); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if _, failed := obj["error"]; failed != (i == 1 || i == 2) {
			t.Errorf("line %d: %s", i, l)
		}
	}
	code, _, _ = runCode("predict", "--model", filepath.Join(tasksFixtures, "ner"), "--task", "ner", "Taro Yamada")
	if code != 0 {
		t.Errorf("all answered: exit %d", code)
	}
}

// TestPredictRerank: rerank from the command line orders the passages as
// the reference logits of testdata/tasks/cross-encoder do.
func TestPredictRerank(t *testing.T) {
	var ref loadertest.RerankRef
	dir := filepath.Join(tasksFixtures, "cross-encoder")
	if err := json.Unmarshal(mustRead(t, filepath.Join(dir, "reference.json")), &ref); err != nil {
		t.Fatal(err)
	}
	q := ref.Queries[0]
	out, _ := run(t, append([]string{"predict", "--model", dir, "--task", "rerank", "--query", q.Query, "--return-text"}, q.Passages...)...)
	var got struct {
		Query   string `json:"query"`
		Ranking []struct {
			Index int     `json:"index"`
			Logit float64 `json:"logit"`
			Text  string  `json:"text"`
		} `json:"ranking"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if got.Query != q.Query || len(got.Ranking) != len(q.Order) {
		t.Fatalf("%s", out)
	}
	for k, r := range got.Ranking {
		if r.Index != q.Order[k] || math.Abs(r.Logit-q.Logits[r.Index]) > 1e-4 || r.Text != q.Passages[r.Index] {
			t.Errorf("rank %d: %+v, want passage %d", k, r, q.Order[k])
		}
	}
	// JSON lines: one ranking per line.
	in := filepath.Join(t.TempDir(), "in.jsonl")
	var lines []string
	for _, q := range ref.Queries {
		b, _ := json.Marshal(map[string]any{"query": q.Query, "passages": q.Passages})
		lines = append(lines, string(b))
	}
	if err := os.WriteFile(in, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ = run(t, "predict", "--model", dir, "--task", "rerank", "--input", in)
	for i, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if err := json.Unmarshal([]byte(l), &got); err != nil || got.Ranking[0].Index != ref.Queries[i].Order[0] {
			t.Errorf("line %d: %s", i, l)
		}
	}
}

// TestPredictEmbedSentenceTransformers: embed without flags on a
// sentence-transformers directory is its pooling and Normalize; flags
// override.
func TestPredictEmbedSentenceTransformers(t *testing.T) {
	var ref struct {
		Texts      []string    `json:"texts"`
		Embeddings [][]float64 `json:"embeddings"`
		Mean       [][]float64 `json:"mean"`
	}
	dir := filepath.Join(tasksFixtures, "st-cls")
	if err := json.Unmarshal(mustRead(t, filepath.Join(dir, "reference.json")), &ref); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		flags []string
		want  [][]float64
		pool  string
		norm  bool
	}{
		{nil, ref.Embeddings, "cls", true},
		{[]string{"--pooling", "mean", "--normalize=false"}, ref.Mean, "mean", false},
	} {
		args := append([]string{"predict", "--model", dir, "--task", "embed"}, c.flags...)
		out, _ := run(t, append(args, ref.Texts...)...)
		for i, l := range strings.Split(strings.TrimSpace(out), "\n") {
			var got struct {
				Pooling    string    `json:"pooling"`
				Normalized bool      `json:"normalized"`
				Embedding  []float64 `json:"embedding"`
			}
			if err := json.Unmarshal([]byte(l), &got); err != nil {
				t.Fatal(err)
			}
			var maxErr float64
			for k, v := range got.Embedding {
				maxErr = math.Max(maxErr, math.Abs(v-c.want[i][k]))
			}
			if got.Pooling != c.pool || got.Normalized != c.norm || len(got.Embedding) != len(c.want[i]) || maxErr > 1e-4 {
				t.Errorf("%v text %d: %s normalized %v, max error %.2g", c.flags, i, got.Pooling, got.Normalized, maxErr)
			}
		}
	}
}

// TestInspectSentenceTransformers: inspect reports what the
// sentence-transformers files set, and dump --help lists its outputs.
func TestInspectSentenceTransformers(t *testing.T) {
	out, _ := run(t, "inspect", "--model", filepath.Join(tasksFixtures, "st-cls"), "--json")
	var r inspectReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if st := r.Sentence; st == nil || st.Pooling != "cls" || !st.Normalize || st.MaxSeqLength != 12 || !st.Lowercase || len(st.Modules) != 3 {
		t.Errorf("sentence-transformers: %+v", r.Sentence)
	}
	_, _, help := runCode("dump", "--help")
	for _, name := range []string{"embeddings", "hidden.N", "pooled", "mlm_logits", "nsp_logits", "logits", "token_logits"} {
		if !strings.Contains(help, "  "+name+" [") {
			t.Errorf("dump --help does not list %s:\n%s", name, help)
		}
	}
}
