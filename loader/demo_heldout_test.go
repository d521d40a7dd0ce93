package loader_test

import (
	"bufio"
	"encoding/json"
	"math"
	"os"
	"testing"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/bert/tokenize"
	"github.com/bertstream/bertstream/loader"
	"github.com/bertstream/bertstream/nn"
)

// heldOut is one line of demo/heldout.jsonl (demo/export_heldout.py): a
// description of the demo model's test split, its section and the label
// PyTorch predicts for it.
type heldOut struct {
	Text       string `json:"text"`
	Section    string `json:"section"`
	TorchLabel string `json:"torch_label"`
}

// demoMetrics are the accuracy and macro-F1 of train.py's metrics.
type demoMetrics struct{ accuracy, macroF1 float64 }

func scoreDemo(pred, gold []int, labels int) demoMetrics {
	var right int
	tp, fp, fn := make([]int, labels), make([]int, labels), make([]int, labels)
	for i := range pred {
		if pred[i] == gold[i] {
			right++
			tp[pred[i]]++
		} else {
			fp[pred[i]]++
			fn[gold[i]]++
		}
	}
	var f1 float64
	for c := 0; c < labels; c++ {
		var p, r float64
		if tp[c]+fp[c] > 0 {
			p = float64(tp[c]) / float64(tp[c]+fp[c])
		}
		if tp[c]+fn[c] > 0 {
			r = float64(tp[c]) / float64(tp[c]+fn[c])
		}
		if p+r > 0 {
			f1 += 2 * p * r / (p + r)
		}
	}
	return demoMetrics{float64(right) / float64(len(pred)), f1 / float64(labels)}
}

// TestDemoHeldOut computes the demo model's held-out accuracy and
// macro-F1 with the engine in F32, BF16 and INT8. F32 must reproduce
// PyTorch's (results.json, label for label but for near ties); the
// quantized paths must stay within half a point of F32's accuracy and
// one point of its macro-F1 (the README's table has the numbers).
func TestDemoHeldOut(t *testing.T) {
	if testing.Short() {
		t.Skip("4572 texts in three dtypes")
	}
	f, err := os.Open("../demo/heldout.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []heldOut
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var c heldOut
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, c)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	var results struct {
		BERT struct {
			Test struct {
				Accuracy float64 `json:"accuracy"`
				MacroF1  float64 `json:"macro_f1"`
			} `json:"test"`
		} `json:"bert"`
	}
	data, err := os.ReadFile("../demo/results.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &results); err != nil {
		t.Fatal(err)
	}
	if len(cases) != 4572 {
		t.Fatalf("%d held-out texts, results.json's test split has 4572", len(cases))
	}
	const dir = "../demo/model"
	tok, err := tokenize.Load(dir)
	if err != nil {
		t.Fatal(err)
	}

	var f32 demoMetrics
	for _, c := range []struct {
		name string
		be   nn.CPU
	}{{"F32", nn.CPU{}}, {"BF16", nn.CPU{BF16Weights: true}}, {"INT8", nn.CPU{Int8Weights: true}}} {
		m, err := loader.Load(dir, loader.Options{Backend: c.be})
		if err != nil {
			t.Fatal(err)
		}
		labelID := map[string]int{}
		for i, l := range m.Labels {
			labelID[l] = i
		}
		pred, gold := make([]int, len(cases)), make([]int, len(cases))
		var differ int
		const batch = 64
		for b0 := 0; b0 < len(cases); b0 += batch {
			var in []tokenize.Input
			for _, hc := range cases[b0:min(b0+batch, len(cases))] {
				in = append(in, tokenize.Input{Text: hc.Text})
			}
			enc, err := tok.Encode(in, m.Config.MaxPositionEmbeddings)
			if err != nil {
				t.Fatal(err)
			}
			s := nn.NewScope("heldout")
			out, err := m.Forward(s, bert.Inputs{B: enc.B, T: enc.T, IDs: enc.IDs, TypeIDs: enc.TypeIDs, Mask: enc.Mask}, bert.Want{Classify: true})
			if err != nil {
				t.Fatal(err)
			}
			logits := out.Logits.F32()
			n := len(m.Labels)
			for i := 0; i < enc.B; i++ {
				row := logits[i*n : i*n+n]
				best := 0
				for j, v := range row {
					if v > row[best] {
						best = j
					}
				}
				hc := cases[b0+i]
				g, ok := labelID[hc.Section]
				if !ok {
					t.Fatalf("section %q is not a label of the model", hc.Section)
				}
				pred[b0+i], gold[b0+i] = best, g
				if m.Labels[best] != hc.TorchLabel {
					differ++
				}
			}
			s.Close()
		}
		m.Close()
		got := scoreDemo(pred, gold, len(m.Labels))
		t.Logf("%s: accuracy %.4f, macro-F1 %.4f, %d of %d labels differ from PyTorch F32's", c.name, got.accuracy, got.macroF1, differ, len(cases))
		round := func(x float64) float64 { return math.Round(x*1e4) / 1e4 }
		switch c.name {
		case "F32":
			f32 = got
			if round(got.accuracy) != results.BERT.Test.Accuracy || round(got.macroF1) != results.BERT.Test.MacroF1 || differ > 2 {
				t.Errorf("F32: accuracy %.4f, macro-F1 %.4f, %d labels unlike PyTorch's; results.json: %.4f, %.4f",
					got.accuracy, got.macroF1, differ, results.BERT.Test.Accuracy, results.BERT.Test.MacroF1)
			}
		default:
			if math.Abs(got.accuracy-f32.accuracy) > 0.005 || math.Abs(got.macroF1-f32.macroF1) > 0.01 {
				t.Errorf("%s: accuracy %.4f, macro-F1 %.4f; F32 %.4f, %.4f", c.name, got.accuracy, got.macroF1, f32.accuracy, f32.macroF1)
			}
		}
	}
}
