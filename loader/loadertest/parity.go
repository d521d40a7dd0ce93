// Package loadertest checks a backend against the outputs of Hugging
// Face's PyTorch BERT on the bert-tiny fixtures (testdata/bert-tiny): every
// checkpoint format, every head, only where the attention mask is 1. Each
// backend's tests call Parity with their own tolerances.
package loadertest

import (
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/loader"
	"github.com/bertstream/bertstream/loader/safetensors"
	"github.com/bertstream/bertstream/nn"
)

// Tolerances are maximum absolute errors over unmasked positions.
type Tolerances struct {
	Hidden float64 // embeddings, hidden states, pooled output
	Logits float64 // MLM, NSP and classifier logits, log-sum-exp
}

// F32 are the fixtures' tolerances for an F32 engine (their README).
var F32 = Tolerances{Hidden: 1e-4, Logits: 1e-3}

// Reference is the fixture's reference.safetensors, read into F32 (and
// I64 for ids) host slices.
type Reference struct {
	Inputs bert.Inputs
	F32    map[string][]float32
	I64    map[string][]int64
	Shapes map[string][]int
}

// ReadReference reads reference.safetensors under root (testdata/bert-tiny).
func ReadReference(root string) (*Reference, error) {
	f, err := safetensors.Open(filepath.Join(root, "reference.safetensors"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := &Reference{F32: map[string][]float32{}, I64: map[string][]int64{}, Shapes: map[string][]int{}}
	for _, t := range f.Tensors {
		r.Shapes[t.Name] = t.Shape
		switch t.DType {
		case "F32":
			v := make([]float32, len(t.Data)/4)
			for i := range v {
				v[i] = math.Float32frombits(uint32(t.Data[4*i]) | uint32(t.Data[4*i+1])<<8 | uint32(t.Data[4*i+2])<<16 | uint32(t.Data[4*i+3])<<24)
			}
			r.F32[t.Name] = v
		case "I64":
			v := make([]int64, len(t.Data)/8)
			for i := range v {
				var u uint64
				for j := 7; j >= 0; j-- {
					u = u<<8 | uint64(t.Data[8*i+j])
				}
				v[i] = int64(u)
			}
			r.I64[t.Name] = v
		default:
			return nil, fmt.Errorf("reference tensor %s: unexpected dtype %s", t.Name, t.DType)
		}
	}
	shape := r.Shapes["input_ids"]
	if len(shape) != 2 {
		return nil, fmt.Errorf("reference input_ids: shape %v, want [B, T]", shape)
	}
	in := bert.Inputs{B: shape[0], T: shape[1]}
	for _, p := range []struct {
		name string
		dst  *[]int32
	}{{"input_ids", &in.IDs}, {"token_type_ids", &in.TypeIDs}, {"attention_mask", &in.Mask}} {
		v, ok := r.I64[p.name]
		if !ok {
			return nil, fmt.Errorf("reference has no %s", p.name)
		}
		*p.dst = make([]int32, len(v))
		for i, x := range v {
			(*p.dst)[i] = int32(x)
		}
	}
	r.Inputs = in
	return r, nil
}

// Case is one parity row: a model directory (relative to the fixture
// root) and the reference prefix its outputs are compared with.
type Case struct {
	Name   string
	Dir    string
	Prefix string // "pretraining.", "pretraining.fp16.", "classifier."
	// Depth says which hidden states the reference holds.
	Depth Depth
}

// Depth is how much of the encoder a reference row covers.
type Depth uint8

const (
	// AllLayers: embeddings, every layer, pooled output and the heads.
	AllLayers Depth = iota
	// LastLayer: the last hidden state and the heads (fp16/bf16 rows).
	LastLayer
	// PooledOnly: the pooled output and the heads (the classifier).
	PooledOnly
)

// Cases are every checkpoint format of the fixtures.
var Cases = []Case{
	{"safetensors", "bert-pretraining", "pretraining.", AllLayers},
	{"pytorch-zip", "bert-pretraining/pytorch_model.bin", "pretraining.", AllLayers},
	{"pytorch-legacy", "bert-pretraining/legacy", "pretraining.", AllLayers},
	{"safetensors-f16", "bert-pretraining/fp16", "pretraining.fp16.", LastLayer},
	{"safetensors-bf16", "bert-pretraining/bf16", "pretraining.bf16.", LastLayer},
	{"classifier", "bert-classifier", "classifier.", PooledOnly},
}

// Parity loads every case onto be and compares its outputs with the
// reference within tol. The fixture root is usually "../testdata/bert-tiny"
// relative to the calling package.
func Parity(t *testing.T, root string, be nn.Backend, tol Tolerances) {
	ref, err := ReadReference(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range Cases {
		t.Run(c.Name, func(t *testing.T) {
			dir := filepath.Join(root, c.Dir)
			opts := loader.Options{Backend: be}
			if filepath.Ext(dir) == ".bin" {
				opts.Weights = dir
				dir = filepath.Dir(dir)
			}
			m, err := loader.Load(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			before, _ := Live(be.Device())
			s := nn.NewScope("parity")
			out, err := m.Forward(s, ref.Inputs, m.WantAll())
			if err != nil {
				t.Fatal(err)
			}
			if err := be.Sync(); err != nil {
				t.Fatal(err)
			}
			host := s.Child("host")
			get := func(x *nn.Tensor) []float32 {
				h, err := be.Download(host, x, nn.F32)
				if err != nil {
					t.Fatal(err)
				}
				return h.F32()
			}
			cmp := Comparer{T: t, Ref: ref}
			H := m.Config.HiddenSize
			last := len(out.Hidden) - 1
			switch c.Depth {
			case AllLayers:
				cmp.Tokens(c.Prefix+"embeddings", get(out.Embeddings), H, tol.Hidden)
				for i, h := range out.Hidden {
					cmp.Tokens(fmt.Sprintf("%shidden.%d", c.Prefix, i), get(h), H, tol.Hidden)
				}
				cmp.Rows(c.Prefix+"pooled", get(out.Pooled), tol.Hidden)
			case LastLayer:
				cmp.Tokens(c.Prefix+"hidden.last", get(out.Hidden[last]), H, tol.Hidden)
			case PooledOnly:
				cmp.Rows(c.Prefix+"pooled", get(out.Pooled), tol.Hidden)
			}
			if out.NSPLogits != nil {
				cmp.Rows(c.Prefix+"nsp_logits", get(out.NSPLogits), tol.Logits)
			}
			if out.Logits != nil {
				cmp.Rows(c.Prefix+"logits", get(out.Logits), tol.Logits)
			}
			if out.MLMLogits != nil {
				cmp.MLM(c.Prefix, get(out.MLMLogits), m.Config.VocabSize, tol.Logits)
			}
			if cmp.Checked == 0 {
				t.Fatal("no reference tensor was compared")
			}
			s.Close()
			if after, _ := Live(be.Device()); after != before {
				t.Errorf("forward pass leaked: %d live tensors on %s before, %d after closing its scope", before, be.Device(), after)
			}
		})
	}
}

// Live is how many tensors, of how many bytes, are live on device dev: a
// forward pass must leave them as it found them once its scope is closed.
func Live(dev string) (tensors, bytes int64) {
	for _, u := range nn.Usage() {
		if u.Device == dev {
			return u.Tensors, u.Bytes
		}
	}
	return 0, 0
}

// MaskedMaxErr is the largest absolute difference between got and want,
// read as rows of width values, one per token, over the tokens whose mask
// is 1; at is that token (-1 when none differs). Padding is left out: what
// a model computes there is not defined.
func MaskedMaxErr(mask []int32, got, want []float32, width int) (worst float64, at int) {
	at = -1
	for i, m := range mask {
		if m == 0 {
			continue
		}
		if d := nn.MaxAbsDiff(got[i*width:(i+1)*width], want[i*width:(i+1)*width]); d > worst {
			worst, at = d, i
		}
	}
	return worst, at
}

// Comparer checks outputs against reference tensors, only at unmasked
// positions.
type Comparer struct {
	T       testing.TB
	Ref     *Reference
	Checked int
}

func (c *Comparer) ref(name string, n int) []float32 {
	c.T.Helper()
	r, ok := c.Ref.F32[name]
	if !ok {
		c.T.Fatalf("reference has no %s", name)
	}
	if len(r) != n {
		c.T.Fatalf("%s: engine gave %d values, reference has %d (shape %v)", name, n, len(r), c.Ref.Shapes[name])
	}
	c.Checked++
	return r
}

// Tokens compares a [B, T, width] tensor over tokens whose mask is 1.
func (c *Comparer) Tokens(name string, got []float32, width int, tol float64) {
	c.T.Helper()
	want := c.ref(name, len(got))
	in := c.Ref.Inputs
	worst, at := MaskedMaxErr(in.Mask, got, want, width)
	c.T.Logf("%s: max abs error %.3g", name, worst)
	if worst > tol {
		c.T.Errorf("%s: max abs error %.3g at token [%d,%d] exceeds %.3g", name, worst, at/in.T, at%in.T, tol)
	}
}

// Rows compares a [B, n] tensor (every sequence has a real first token).
func (c *Comparer) Rows(name string, got []float32, tol float64) {
	c.T.Helper()
	want := c.ref(name, len(got))
	d := nn.MaxAbsDiff(got, want)
	c.T.Logf("%s: max abs error %.3g", name, d)
	if d > tol {
		c.T.Errorf("%s: max abs error %.3g exceeds %.3g", name, d, tol)
	}
}

// MLM compares full-vocabulary logits [B, T, V] with the reference's first
// columns, log-sum-exp and top-5 ids.
func (c *Comparer) MLM(prefix string, logits []float32, V int, tol float64) {
	c.T.Helper()
	in := c.Ref.Inputs
	head := c.Ref.Shapes[prefix+"mlm_logits_head"]
	if len(head) != 3 {
		c.T.Fatalf("reference %smlm_logits_head: shape %v", prefix, head)
	}
	cols := head[2]
	got := make([]float32, in.B*in.T*cols)
	lse := make([]float32, in.B*in.T)
	for i := 0; i < in.B*in.T; i++ {
		row := logits[i*V : (i+1)*V]
		copy(got[i*cols:(i+1)*cols], row[:cols])
		lse[i] = logSumExp(row)
	}
	c.Tokens(prefix+"mlm_logits_head", got, cols, tol)
	c.Tokens(prefix+"mlm_logsumexp", lse, 1, tol)

	ids := c.Ref.I64[prefix+"mlm_top5_ids"]
	vals := c.ref(prefix+"mlm_top5_values", in.B*in.T*5)
	if len(ids) != in.B*in.T*5 {
		c.T.Fatalf("reference %smlm_top5_ids: %d values", prefix, len(ids))
	}
	for i, m := range in.Mask {
		if m == 0 {
			continue
		}
		top := bert.TopK(logits[i*V:(i+1)*V], 6)
		// The order is only defined where neighbouring logits differ by
		// more than the tolerance; compare the ids up to the first near-tie.
		for k := 0; k < 5; k++ {
			if math.Abs(float64(vals[i*5+k])-float64(logits[i*V+top[k]])) > tol {
				c.T.Errorf("%smlm top-5 at [%d,%d]: value %d is %g, reference %g", prefix, i/in.T, i%in.T, k, logits[i*V+top[k]], vals[i*5+k])
				break
			}
			// Within the tolerance of each other, two logits may come in
			// either order (1e-3, as the fixtures' README says, for F32).
			if k+1 < 6 && float64(logits[i*V+top[k]]-logits[i*V+top[k+1]]) <= tol {
				break
			}
			if int64(top[k]) != ids[i*5+k] {
				c.T.Errorf("%smlm top-5 at [%d,%d]: id %d is %d, reference %d", prefix, i/in.T, i%in.T, k, top[k], ids[i*5+k])
				break
			}
		}
	}
}

func logSumExp(x []float32) float32 {
	m := math.Inf(-1)
	for _, v := range x {
		m = math.Max(m, float64(v))
	}
	var s float64
	for _, v := range x {
		s += math.Exp(float64(v) - m)
	}
	return float32(m + math.Log(s))
}
