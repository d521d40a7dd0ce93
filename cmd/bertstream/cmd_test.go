package main

import (
	"bytes"
	"encoding/json"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bertstream/bertstream/loader/loadertest"
	"github.com/bertstream/bertstream/loader/safetensors"
)

const fixtures = "../../testdata/bert-tiny"

func run(t *testing.T, args ...string) (string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	if code := runMain(args, &out, &errb); code != 0 {
		t.Fatalf("bertstream %s: exit %d\nstderr: %s", strings.Join(args, " "), code, errb.String())
	}
	return out.String(), errb.String()
}

// TestDumpMatchesReference runs the dump contract of DESIGN.md on the
// fixtures: the reference file itself holds the I64 inputs.
func TestDumpMatchesReference(t *testing.T) {
	ref, err := loadertest.ReadReference(fixtures)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ model, prefix string }{
		{"bert-pretraining", "pretraining."},
		{"bert-classifier", "classifier."},
	} {
		t.Run(c.model, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.safetensors")
			run(t, "dump", "--model", filepath.Join(fixtures, c.model), "--inputs", filepath.Join(fixtures, "reference.safetensors"), "--out", out)
			f, err := safetensors.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got := map[string][]float32{}
			for _, tt := range f.Tensors {
				if tt.DType != "F32" {
					t.Fatalf("%s is %s, want F32", tt.Name, tt.DType)
				}
				v := make([]float32, len(tt.Data)/4)
				for i := range v {
					v[i] = f32le(tt.Data[4*i:])
				}
				got[tt.Name] = v
			}
			cmp := loadertest.Comparer{T: t, Ref: ref}
			tol := loadertest.F32
			H := 32
			if c.prefix == "pretraining." {
				cmp.Tokens(c.prefix+"embeddings", got["embeddings"], H, tol.Hidden)
				cmp.Tokens(c.prefix+"hidden.0", got["hidden.0"], H, tol.Hidden)
				cmp.Tokens(c.prefix+"hidden.1", got["hidden.1"], H, tol.Hidden)
				cmp.Rows(c.prefix+"nsp_logits", got["nsp_logits"], tol.Logits)
				cmp.MLM(c.prefix, got["mlm_logits"], 30522, tol.Logits)
			} else {
				cmp.Rows(c.prefix+"logits", got["logits"], tol.Logits)
			}
			cmp.Rows(c.prefix+"pooled", got["pooled"], tol.Hidden)
		})
	}
}

func f32le(b []byte) float32 {
	return math.Float32frombits(uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24)
}

type casesFile struct {
	Texts  []string    `json:"texts"`
	Pairs  [][2]string `json:"pairs"`
	Labels []string    `json:"labels"`
}

func readCases(t *testing.T) casesFile {
	t.Helper()
	var c casesFile
	if err := json.Unmarshal(mustRead(t, filepath.Join(fixtures, "cases.json")), &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestPredictClassifyMatchesReference: the label printed for every fixture
// text is the argmax of the reference logits.
func TestPredictClassifyMatchesReference(t *testing.T) {
	ref, err := loadertest.ReadReference(fixtures)
	if err != nil {
		t.Fatal(err)
	}
	cases := readCases(t)
	args := []string{"predict", "--model", filepath.Join(fixtures, "bert-classifier"), "--task", "classify"}
	args = append(args, cases.Texts...)
	for _, p := range cases.Pairs {
		args = append(args, p[0]+" ||| "+p[1])
	}
	out, _ := run(t, args...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != ref.Inputs.B {
		t.Fatalf("%d lines for %d inputs:\n%s", len(lines), ref.Inputs.B, out)
	}
	logits := ref.F32["classifier.logits"]
	L := len(cases.Labels)
	for i, line := range lines {
		var r struct {
			Label  string             `json:"label"`
			Scores map[string]float64 `json:"scores"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %d: %v: %s", i, err, line)
		}
		best := 0
		for k := 1; k < L; k++ {
			if logits[i*L+k] > logits[i*L+best] {
				best = k
			}
		}
		if r.Label != cases.Labels[best] {
			t.Errorf("input %d: label %q, reference argmax %q (%s)", i, r.Label, cases.Labels[best], line)
		}
		if len(r.Scores) != L {
			t.Errorf("input %d: %d scores, want %d", i, len(r.Scores), L)
		}
	}
}

// TestPredictFillMaskMatchesReference: the top-5 ids at the [MASK] of the
// first fixture text are the reference's.
func TestPredictFillMaskMatchesReference(t *testing.T) {
	ref, err := loadertest.ReadReference(fixtures)
	if err != nil {
		t.Fatal(err)
	}
	cases := readCases(t)
	out, _ := run(t, "predict", "--model", filepath.Join(fixtures, "bert-pretraining"), "--task", "fill-mask", cases.Texts[0])
	var r struct {
		Masks []struct {
			Position int `json:"position"`
			Top      []struct {
				ID int64 `json:"id"`
			} `json:"top"`
		} `json:"masks"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(r.Masks) != 1 || len(r.Masks[0].Top) != 5 {
		t.Fatalf("want one [MASK] with 5 candidates: %s", out)
	}
	pos := r.Masks[0].Position
	if ref.Inputs.IDs[pos] != 103 {
		t.Fatalf("position %d of row 0 is id %d, not [MASK]", pos, ref.Inputs.IDs[pos])
	}
	want := ref.I64["pretraining.mlm_top5_ids"][pos*5 : pos*5+5]
	for k, c := range r.Masks[0].Top {
		if c.ID != want[k] {
			t.Errorf("candidate %d: id %d, reference %d", k, c.ID, want[k])
		}
	}
}

func TestPredictBadLinesKeepGoing(t *testing.T) {
	in := filepath.Join(t.TempDir(), "in.jsonl")
	writeFile(t, in, "{\"text\":\"hello world\"}\nnot json\n{\"nope\":1}\n{\"text\":\"\"}\n{\"text\":\"a b c\"}\n")
	// Every line is answered; the exit status says that some failed.
	code, out, errs := runCode("predict", "--model", filepath.Join(fixtures, "bert-classifier"), "--task", "classify", "--input", in)
	if code != 1 || !strings.Contains(errs, "3 of 5 inputs failed") {
		t.Errorf("exit %d, stderr %q; want 1 and the count of failed inputs", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 {
		t.Fatalf("want 5 lines, got %d:\n%s", len(lines), out)
	}
	for i, wantErr := range []bool{false, true, true, true, false} {
		var r map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &r); err != nil {
			t.Fatal(err)
		}
		_, hasErr := r["error"]
		_, hasLabel := r["label"]
		if hasErr != wantErr || hasLabel == wantErr {
			t.Errorf("line %d: %s", i, lines[i])
		}
	}
}

func TestInspect(t *testing.T) {
	out, _ := run(t, "inspect", "--model", filepath.Join(fixtures, "bert-pretraining"), "--json")
	var r inspectReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if r.Arch != "BertForPreTraining" || r.Format != "safetensors" || len(r.Heads) != 3 {
		t.Errorf("inspect: arch %q format %q heads %v", r.Arch, r.Format, r.Heads)
	}
	if len(r.Ignored) != 1 || r.Ignored[0] != "bert.embeddings.position_ids" {
		t.Errorf("ignored %v, want the position_ids buffer", r.Ignored)
	}
}

func TestHelpEveryCommand(t *testing.T) {
	for name := range commands {
		var out, errb bytes.Buffer
		if code := runMain([]string{name, "--help"}, &out, &errb); code != 0 {
			t.Errorf("%s --help: exit %d: %s", name, code, errb.String())
		}
		if !strings.Contains(errb.String()+out.String(), "usage: bertstream "+name) {
			t.Errorf("%s --help prints no usage line:\n%s", name, errb.String())
		}
	}
}
