package kernels

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// LinearRef computes out = act(x * w^T + bias) for x of m x k and w of
// n x k (PyTorch's layout); out is m x n and bias (n values) may be nil.
func LinearRef(out, x []float32, m int, w []float32, n, k int, bias []float32, a Act) {
	GemmRef(false, true, m, n, k, 1, x, k, w, k, 0, out, n)
	BiasActRef(out, m, n, bias, a)
}

// Weight is a linear layer's weight (PyTorch layout: n outputs x k inputs)
// prepared once, at load, for the GEMM that multiplies activations by its
// transpose: packed into the column panels an Engine's micro-kernel reads.
type Weight struct {
	N, K int
	Data []float32 // row-major n x k, as loaded
	// packed is Data^T in panels of kern.nr columns (see packB), or BF16
	// pairs when bf16 (see packBBF16).
	packed []float32
	kern   *microKernel
	bf16   bool
	i8     *int8Weight // not nil for INT8 weights (see PrepareWeightInt8)
}

// PrepareWeight packs w (n x k, row-major) for e.Linear. w is kept, not
// copied: the caller must not change it afterwards.
func (e *Engine) PrepareWeight(w []float32, n, k int) *Weight {
	pw := &Weight{N: n, K: k, Data: w}
	pw.pack(e.gemm, e.Threads())
	return pw
}

// PrepareWeightBF16 packs w (n x k, row-major) for e.Linear as BF16: the
// products of the layer then use weights and activations rounded to
// bfloat16, accumulated in float32.
func (e *Engine) PrepareWeightBF16(w []float32, n, k int) *Weight {
	pw := &Weight{N: n, K: k, Data: w, bf16: true}
	pw.pack(e.bf16.microKernel, e.Threads())
	return pw
}

func (w *Weight) pack(kern *microKernel, threads int) {
	w.packed = make([]float32, packedLen(kern, w.N, w.K))
	adviseHuge(w.packed)
	// Panels are independent: blocks of them go to all cores. A load
	// packs every weight of the model once, and with the checkpoint
	// mapped in place packing is most of what loading costs.
	t := &packTask{kern: kern, dst: w.packed, n: w.N, k: w.K, src: w.Data}
	t.per = kern.nr * max(1, (1<<18)/max(kern.nr*w.K, 1))
	parallel(threads, (w.N+t.per-1)/t.per, t)
	w.kern = kern
}

// packTask packs blocks of per rows of a weight (per a multiple of the
// micro-kernel's nr, so each block is whole panels).
type packTask struct {
	kern      *microKernel
	dst, src  []float32
	n, k, per int
}

func (t *packTask) run(i int, _ *scratch) {
	j0 := i * t.per
	n := min(t.per, t.n-j0)
	dst, src := t.dst[j0*kWords(t.kern, t.k):], t.src[j0*t.k:]
	if t.kern.pairs {
		packBBF16(t.kern, dst, true, n, t.k, src, t.k)
	} else {
		packB(t.kern, dst, true, n, t.k, src, t.k)
	}
}

// BF16 reports whether w computes with BF16 weights and activations.
func (w *Weight) BF16() bool { return w.bf16 }

// PackedFor names the micro-kernel w is packed for: a name of Versions,
// or of BF16Versions for a BF16 weight, or of Int8Versions for an INT8 one.
func (w *Weight) PackedFor() string {
	if w.i8 != nil {
		return w.i8.kern.name
	}
	return w.kern.name
}

// Linear computes out = act(x * w^T + bias) for x of m x w.K; out is m x w.N
// and bias (w.N values) may be nil. With the native SGEMM, bias and act
// are applied to each tile as it is finished, while it is in cache. A
// weight packed for another micro-kernel than e's is repacked first, so
// engines of different versions must not share a Weight concurrently.
func (e *Engine) Linear(out, x []float32, m int, w *Weight, bias []float32, a Act) {
	if m == 0 || w.N == 0 {
		return
	}
	var kern *microKernel
	switch {
	case w.i8 != nil && w.K > 0:
		e.linearInt8(out, x, m, w, bias, a)
		return
	case w.bf16 && w.K > 0:
		e.linearBF16(out, x, m, w, bias, a)
		return
	case e.gonum || w.K == 0:
		if e.gonum {
			gonum.Implementation{}.Sgemm(blas.NoTrans, blas.Trans, m, w.N, w.K, 1, x, w.K, w.Data, w.K, 0, out, w.N)
		} else {
			e.sgemm(false, true, m, w.N, w.K, 1, x, w.K, w.Data, w.K, 0, out, w.N)
		}
		if bias != nil || a != ActNone {
			e.BiasAct(out, m, w.N, bias, a)
		}
		return
	default:
		kern = e.gemm
	}
	if w.kern != kern {
		w.pack(kern, e.Threads())
	}
	gemmPacked(kern, e.vec, e.Threads(), false, m, w.N, w.K, 1, x, w.K, w.packed, 0, out, w.N, bias, a)
}
