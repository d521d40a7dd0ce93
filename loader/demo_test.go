package loader_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/bert/tokenize"
	"github.com/bertstream/bertstream/loader"
	"github.com/bertstream/bertstream/nn"
)

// demoReference is demo/samples_reference.json, written by demo/train.py:
// test-set descriptions with the tokens, ids and logits PyTorch computed
// from the exported model.
type demoReference struct {
	Model     string  `json:"model"`
	Tolerance float64 `json:"tolerance_logits"`
	Cases     []struct {
		ID     string    `json:"id"`
		Text   string    `json:"text"`
		Tokens []string  `json:"tokens"`
		IDs    []int32   `json:"input_ids"`
		Logits []float32 `json:"logits"`
		Label  string    `json:"label"`
	} `json:"cases"`
}

// TestDemoModel checks the bundled demo model end to end against the
// training script's PyTorch outputs: our tokenizer gives its tokens and ids
// (its WordPiece is a separate Python implementation), and our forward
// pass its logits and label.
func TestDemoModel(t *testing.T) {
	data, err := os.ReadFile("../demo/samples_reference.json")
	if err != nil {
		t.Fatal(err)
	}
	var ref demoReference
	if err := json.Unmarshal(data, &ref); err != nil {
		t.Fatal(err)
	}
	if len(ref.Cases) == 0 {
		t.Fatal("no cases")
	}
	dir := filepath.Join("..", ref.Model)
	m, err := loader.Load(dir, loader.Options{Backend: nn.CPU{}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tok, err := tokenize.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range ref.Cases {
		toks, _ := tok.Tokenize(c.Text)
		if strings.Join(toks, " ") != strings.Join(c.Tokens, " ") {
			t.Errorf("%s %q: tokens %q, PyTorch side %q", c.ID, c.Text, toks, c.Tokens)
		}
		enc, err := tok.Encode([]tokenize.Input{{Text: c.Text}}, m.Config.MaxPositionEmbeddings)
		if err != nil {
			t.Fatal(err)
		}
		if len(enc.IDs) != len(c.IDs) {
			t.Fatalf("%s: %d ids, PyTorch side %d", c.ID, len(enc.IDs), len(c.IDs))
		}
		for i := range c.IDs {
			if enc.IDs[i] != c.IDs[i] {
				t.Fatalf("%s: ids %v, PyTorch side %v", c.ID, enc.IDs, c.IDs)
			}
		}
		n := len(c.IDs)
		in := bert.Inputs{B: 1, T: n, IDs: c.IDs, Mask: ones(n)}
		s := nn.NewScope("demo")
		out, err := m.Forward(s, in, bert.Want{Classify: true})
		if err != nil {
			t.Fatal(err)
		}
		logits := out.Logits.F32()
		if d := nn.MaxAbsDiff(logits, c.Logits); d > ref.Tolerance {
			t.Errorf("%s: logits differ by %g (tolerance %g)", c.ID, d, ref.Tolerance)
		}
		best := 0
		for i, v := range logits {
			if v > logits[best] {
				best = i
			}
		}
		if m.Labels[best] != c.Label {
			t.Errorf("%s %q: label %s, PyTorch side %s", c.ID, c.Text, m.Labels[best], c.Label)
		}
		s.Close()
	}
}

func ones(n int) []int32 {
	v := make([]int32, n)
	for i := range v {
		v[i] = 1
	}
	return v
}
