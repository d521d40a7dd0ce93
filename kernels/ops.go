package kernels

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

// The functions in this file are the entry points the CPU backend calls.
// Each one runs the fastest version this machine supports; the *Ref
// functions stay the ground truth they are tested against.

// Weight is a linear layer's weight (PyTorch layout: n outputs x k inputs)
// prepared once, at load, for the GEMM that multiplies activations by its
// transpose: packed into the column panels the active micro-kernel reads.
type Weight struct {
	N, K int
	Data []float32 // row-major n x k, as loaded
	// packed is Data^T in panels of kern.nr columns (see packB), or BF16
	// pairs when bf16 (see packBBF16).
	packed []float32
	kern   *microKernel
	bf16   bool
}

// PrepareWeight packs w (n x k, row-major) for Linear. w is kept, not
// copied: the caller must not change it afterwards.
func PrepareWeight(w []float32, n, k int) *Weight {
	pw := &Weight{N: n, K: k, Data: w}
	pw.pack(active.Load())
	return pw
}

func (w *Weight) pack(kern *microKernel) {
	w.packed = make([]float32, packedLen(kern, w.N, w.K))
	adviseHuge(w.packed)
	if kern.pairs {
		packBBF16(kern, w.packed, true, w.N, w.K, w.Data, w.K)
	} else {
		packB(kern, w.packed, true, w.N, w.K, w.Data, w.K)
	}
	w.kern = kern
}

// BF16 reports whether w computes with BF16 weights and activations.
func (w *Weight) BF16() bool { return w.bf16 }

// Linear computes out = act(x * w^T + bias) for x of m x w.K; out is m x w.N
// and bias (w.N values) may be nil. With the native SGEMM, bias and act
// are applied to each tile as it is finished, while it is in cache.
func Linear(out, x []float32, m int, w *Weight, bias []float32, a Act) {
	if m == 0 || w.N == 0 {
		return
	}
	if w.bf16 && w.K > 0 {
		if w.kern != bf16Kernel {
			w.pack(bf16Kernel)
		}
		gemmPacked(bf16Kernel, false, m, w.N, w.K, 1, x, w.K, w.packed, 0, out, w.N, bias, a)
		return
	}
	if !native.Load() || w.K == 0 {
		Sgemm(false, true, m, w.N, w.K, 1, x, w.K, w.Data, w.K, 0, out, w.N)
		if bias != nil || a != ActNone {
			BiasAct(out, m, w.N, bias, a)
		}
		return
	}
	kern := active.Load()
	if w.kern != kern {
		// The micro-kernel was switched (tests, benchmarks) after load.
		w.pack(kern)
	}
	gemmPacked(kern, false, m, w.N, w.K, 1, x, w.K, w.packed, 0, out, w.N, bias, a)
}

// Sgemm computes C = alpha*op(A)*op(B) + beta*C (row-major) through the
// blas32 implementation in use, so that blas32.Use swaps the GEMM of the
// whole engine.
func Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	ta, tb := blas.NoTrans, blas.NoTrans
	if transA {
		ta = blas.Trans
	}
	if transB {
		tb = blas.Trans
	}
	blas32.Implementation().Sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// Activation applies a to x in place.
func Activation(x []float32, a Act) {
	BiasAct(x, 1, len(x), nil, a)
}

// Pool is PoolRef's entry point: one pass over the rows, memory-bound, so
// the reference is already as fast as the memory allows.
func Pool(out, x []float32, seqs []int32, hidden int, p Pooling) {
	PoolRef(out, x, seqs, hidden, p)
}
