package loader_test

import (
	"fmt"
	"path/filepath"
	"sort"
	"testing"

	"github.com/bertstream/bertstream/kernels"
	"github.com/bertstream/bertstream/loader"
	"github.com/bertstream/bertstream/loader/loadertest"
	"github.com/bertstream/bertstream/nn"
)

// TestShapes loads the checkpoints of testdata/shapes, whose sizes differ
// from bert-tiny's in every dimension (hidden size, layers, heads, head
// size, intermediate size, activation, vocabulary, positions, token types,
// layer_norm_eps, sequence length, batch size, checkpoint format and
// names), and compares every output with the PyTorch reference
// (testdata/make_shapes.py) where the attention mask is 1.
func TestShapes(t *testing.T) {
	testShapes(t, nn.CPU{}, loadertest.F32)
}

// TestShapesInt8 is TestShapes with INT8 linear layers, on every INT8
// kernel this CPU runs, within the INT8 bounds of the bert-tiny parity
// test: the errors measured (go test -v) are at most 0.128 on hidden
// states and pooled outputs and 0.368 on logits (h48's MLM head; 0.096 on
// the token classifier's, 0.038 on NSP's).
func TestShapesInt8(t *testing.T) {
	for _, v := range kernels.Int8Versions() {
		t.Run(v, func(t *testing.T) {
			be, err := nn.NewCPU(nn.Options{Int8: true, Int8Kernels: v})
			if err != nil {
				t.Fatal(err)
			}
			testShapes(t, be, INT8)
		})
	}
}

func testShapes(t *testing.T, be nn.Backend, tol loadertest.Tolerances) {
	for _, c := range []struct {
		dir    string
		format loader.Format
		arch   string
		labels int
		layers int
	}{
		{"h48-l3-a3-gelunew", loader.SafeTensors, "BertForPreTraining", 0, 3},
		{"h40-l1-a5-relu", loader.TorchBin, "BertForSequenceClassification", 4, 1},
		{"h64-l2-a8-tok", loader.TorchBin, "BertForTokenClassification", 7, 2},
	} {
		t.Run(c.dir, func(t *testing.T) {
			dir := filepath.Join("..", "testdata", "shapes", c.dir)
			ref, err := loadertest.ReadReference(dir)
			if err != nil {
				t.Fatal(err)
			}
			m, err := loader.Load(dir, loader.Options{Backend: be})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if m.Format != c.format || m.Arch != c.arch || len(m.Labels) != c.labels || m.Config.NumHiddenLayers != c.layers {
				t.Fatalf("loaded %s %s with %d labels and %d layers, want %s %s with %d labels and %d layers",
					m.Format, m.Arch, len(m.Labels), m.Config.NumHiddenLayers, c.format, c.arch, c.labels, c.layers)
			}
			if len(m.Ignored) != 0 {
				t.Errorf("checkpoint tensors left unused: %v", m.Ignored)
			}

			beforeN, beforeB := loadertest.Live("cpu")
			s := nn.NewScope("shapes")
			out, err := m.Forward(s, ref.Inputs, m.WantAll())
			if err != nil {
				s.Close()
				t.Fatal(err)
			}
			// Forward frees its temporaries: what is live in s is exactly
			// the outputs.
			results := map[string]*nn.Tensor{
				"embeddings":   out.Embeddings,
				"pooled":       out.Pooled,
				"mlm_logits":   out.MLMLogits,
				"nsp_logits":   out.NSPLogits,
				"logits":       out.Logits,
				"token_logits": out.TokenLogits,
			}
			for i, h := range out.Hidden {
				results[fmt.Sprintf("hidden.%d", i)] = h
			}
			distinct := map[*nn.Tensor]bool{out.Sequence: true}
			for name, x := range results {
				if x == nil {
					delete(results, name)
					continue
				}
				distinct[x] = true
			}
			var wantBytes int64
			for x := range distinct {
				wantBytes += int64(x.Len() * x.DType().Size())
			}
			if n, b := s.Live(); n != len(distinct) || b != wantBytes {
				t.Errorf("after Forward the scope holds %d tensors / %d bytes, want only the %d outputs / %d bytes", n, b, len(distinct), wantBytes)
			}

			host := s.Child("host")
			cmp := loadertest.Comparer{T: t, Ref: ref}
			H := m.Config.HiddenSize
			var names []string
			for name := range ref.F32 {
				names = append(names, name)
			}
			sort.Strings(names)
			for _, name := range names {
				x := results[name]
				if x == nil {
					t.Errorf("reference has %s %v, the engine computed no such output", name, ref.Shapes[name])
					continue
				}
				delete(results, name)
				h, err := be.Download(host, x, nn.F32)
				if err != nil {
					t.Fatal(err)
				}
				got := h.F32()
				t.Logf("%-12s %v max abs error %.3g", name, ref.Shapes[name], maskedMaxErr(ref, name, got))
				switch name {
				case "pooled":
					cmp.Rows(name, got, tol.Hidden)
				case "nsp_logits", "logits":
					cmp.Rows(name, got, tol.Logits)
				case "mlm_logits":
					cmp.Tokens(name, got, m.Config.VocabSize, tol.Logits)
				case "token_logits":
					cmp.Tokens(name, got, len(m.Labels), tol.Logits)
				default: // embeddings, hidden.<i>
					cmp.Tokens(name, got, H, tol.Hidden)
				}
			}
			for name, x := range results {
				t.Errorf("the engine computed %s %v, which the reference lacks", name, x.Shape())
			}
			if cmp.Checked != len(names) {
				t.Errorf("compared %d of the reference's %d tensors", cmp.Checked, len(names))
			}

			s.Close()
			if n, b := s.Live(); n != 0 || b != 0 {
				t.Errorf("closed scope still holds %d tensors / %d bytes", n, b)
			}
			if afterN, afterB := loadertest.Live("cpu"); afterN != beforeN || afterB != beforeB {
				t.Errorf("forward pass leaked: %d tensors / %d bytes live on cpu before, %d / %d after closing its scope", beforeN, beforeB, afterN, afterB)
			}
		})
	}
}

// maskedMaxErr is the largest absolute difference between got and the
// reference tensor name, over tokens whose mask is 1 for [B, T, ...]
// tensors and everywhere for [B, n] ones.
func maskedMaxErr(ref *loadertest.Reference, name string, got []float32) float64 {
	want, shape := ref.F32[name], ref.Shapes[name]
	if len(want) != len(got) {
		return -1
	}
	in := ref.Inputs
	if len(shape) < 3 || shape[0] != in.B || shape[1] != in.T {
		return nn.MaxAbsDiff(got, want)
	}
	worst, _ := loadertest.MaskedMaxErr(in.Mask, got, want, len(want)/(in.B*in.T))
	return worst
}

// TestShapesSensitive shows that the shapes fixtures catch an engine that
// ignores a config field: loaded with one field of config.json changed,
// each model misses its reference by far more than the tolerance.
func TestShapesSensitive(t *testing.T) {
	for _, c := range []struct {
		dir, field string
		value      any
		output     string
	}{
		{"h48-l3-a3-gelunew", "layer_norm_eps", 1e-12, "embeddings"},
		{"h48-l3-a3-gelunew", "hidden_act", "gelu", "hidden.2"},
		{"h48-l3-a3-gelunew", "num_attention_heads", 4, "hidden.0"},
		{"h40-l1-a5-relu", "layer_norm_eps", 1e-5, "embeddings"},
		{"h40-l1-a5-relu", "hidden_act", "gelu", "hidden.0"},
		{"h64-l2-a8-tok", "layer_norm_eps", 1e-12, "embeddings"},
		{"h64-l2-a8-tok", "hidden_act", "gelu_new", "hidden.1"},
		{"h64-l2-a8-tok", "num_attention_heads", 4, "token_logits"},
	} {
		t.Run(fmt.Sprintf("%s/%s=%v", c.dir, c.field, c.value), func(t *testing.T) {
			dir := filepath.Join("..", "testdata", "shapes", c.dir)
			ref, err := loadertest.ReadReference(dir)
			if err != nil {
				t.Fatal(err)
			}
			cfgPath := filepath.Join(t.TempDir(), "config.json")
			editConfig(t, dir, cfgPath, c.field, c.value)
			m, err := loader.Load(dir, loader.Options{Backend: nn.CPU{}, Config: cfgPath})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			s := nn.NewScope("sensitive")
			defer s.Close()
			out, err := m.Forward(s, ref.Inputs, m.WantAll())
			if err != nil {
				t.Fatal(err)
			}
			x := map[string]*nn.Tensor{"embeddings": out.Embeddings, "token_logits": out.TokenLogits}[c.output]
			if x == nil {
				var i int
				if _, err := fmt.Sscanf(c.output, "hidden.%d", &i); err != nil {
					t.Fatalf("no output %s", c.output)
				}
				x = out.Hidden[i]
			}
			// Five times the tolerance: the fixture tells the configs
			// apart. (gelu and gelu_new never differ by more than 4.7e-4,
			// so that pair only reaches about ten times.)
			tol := loadertest.F32.Hidden
			if c.output == "token_logits" {
				tol = loadertest.F32.Logits
			}
			if d := maskedMaxErr(ref, c.output, x.F32()); d < 5*tol {
				t.Errorf("with %s = %v, %s is within %.3g of the reference: the fixture does not exercise %s", c.field, c.value, c.output, d, c.field)
			} else {
				t.Logf("with %s = %v, %s misses the reference by %.3g", c.field, c.value, c.output, d)
			}
		})
	}
}
