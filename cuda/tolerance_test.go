package cuda

import (
	"testing"

	"github.com/bertstream/bertstream/kernels"
	"github.com/bertstream/bertstream/loader/loadertest"
	"github.com/bertstream/bertstream/nn"
)

// The GPU backend in F16 or BF16 keeps every tensor in that dtype, weights
// included, and computes every operation in F32 from it, rounding once
// when it stores a result (twice for a Linear with an activation: after
// the GEMM and its bias, and after the activation). Its error against the
// fixtures' F32 reference is therefore that of storage rounding (unit
// roundoff 2^-11 for F16, 2^-8 for BF16) carried through the encoder, not
// of the arithmetic: the order of F32 sums on the GPU moves results by
// about 1e-7.
//
// roundingCPU below is the CPU backend with exactly those roundings, so
// the bounds are measured rather than guessed: on the bert-tiny fixtures
// it errs by at most 0.0065 (hidden states) and 0.0123 (logits) in F16 and
// by 0.046 and 0.090 in BF16 (go test -v -run ReducedPrecision). The
// bounds allow a little over twice that, for the GPU's other summation
// order, cuBLAS's split-K and tensor-core products and its own
// transcendentals, none of which comes near a rounding error of the
// stored dtype.
var (
	parityF16  = loadertest.Tolerances{Hidden: 1.5e-2, Logits: 2.5e-2}
	parityBF16 = loadertest.Tolerances{Hidden: 1e-1, Logits: 2e-1}
)

// TestReducedPrecisionBounds runs the fixtures' parity on the rounding
// emulation with the bounds the GPU tests use: an engine that rounds where
// the GPU backend does meets them. It needs no GPU.
func TestReducedPrecisionBounds(t *testing.T) {
	for _, c := range []struct {
		dt  nn.DType
		tol loadertest.Tolerances
	}{{nn.F16, parityF16}, {nn.BF16, parityBF16}} {
		t.Run(c.dt.String(), func(t *testing.T) {
			loadertest.Parity(t, "../testdata/bert-tiny", roundingCPU{dt: c.dt}, c.tol)
		})
	}
}

// roundingCPU is the CPU backend with every uploaded float and every
// operation's result rounded to dt (F16 or BF16) and widened back to F32.
type roundingCPU struct {
	nn.CPU
	dt nn.DType
}

func (r roundingCPU) Name() string { return "cpu-rounding-" + r.dt.String() }

func (r roundingCPU) round(t *nn.Tensor) {
	v := t.F32()
	u := make([]uint16, len(v))
	if r.dt == nn.F16 {
		kernels.F32ToF16(u, v)
		kernels.F16ToF32(v, u)
		return
	}
	kernels.F32ToBF16(u, v)
	kernels.BF16ToF32(v, u)
}

func (r roundingCPU) Upload(s *nn.Scope, src *nn.Tensor, dt nn.DType) (*nn.Tensor, error) {
	t, err := r.CPU.Upload(s, src, dt)
	if err != nil || dt != nn.F32 {
		return t, err
	}
	// The CPU backend shares a mapped checkpoint's weights instead of
	// copying them, and those pages are read-only: round a copy.
	c, err := r.CPU.Download(s, t, nn.F32)
	t.Release()
	if err != nil {
		return nil, err
	}
	r.round(c)
	return c, nil
}

func (r roundingCPU) Linear(out, x, w, bias *nn.Tensor, act nn.Act) error {
	if err := r.CPU.Linear(out, x, w, bias, nn.ActNone); err != nil {
		return err
	}
	r.round(out)
	if act != nn.ActNone {
		kernels.BiasActRef(out.F32(), out.Rows(), out.Cols(), nil, act)
		r.round(out)
	}
	return nil
}

func (r roundingCPU) LayerNorm(out, x, res, gamma, beta *nn.Tensor, eps float32) error {
	err := r.CPU.LayerNorm(out, x, res, gamma, beta, eps)
	r.round(out)
	return err
}

func (r roundingCPU) Attention(out, qkv, seqs *nn.Tensor, maxLen, heads int, scale float32) error {
	err := r.CPU.Attention(out, qkv, seqs, maxLen, heads, scale)
	r.round(out)
	return err
}

func (r roundingCPU) Embed(out, ids, types, positions, word, pos, typ, gamma, beta *nn.Tensor, eps float32) error {
	err := r.CPU.Embed(out, ids, types, positions, word, pos, typ, gamma, beta, eps)
	r.round(out)
	return err
}

func (r roundingCPU) Pool(out, x, seqs *nn.Tensor, p nn.Pooling) error {
	err := r.CPU.Pool(out, x, seqs, p)
	r.round(out)
	return err
}
