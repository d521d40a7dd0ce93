package kernels

import (
	"fmt"
	"sync"
	"sync/atomic"

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
	// Data is the row-major n x k weight, as loaded; nil for a weight
	// prepared by PrepareWeightRows.
	Data []float32
	// rows, when not nil, gives the row-major weight in blocks of rows,
	// one after another, and what to call when they are no longer needed
	// (PrepareWeightRows, DeferWeight); it is called again only to repack,
	// for gonum's SGEMM, or for a deferred weight's products. Without it
	// the rows are Data.
	rows func() ([][]float32, func())
	// packed is the weight transposed in panels of kern.nr columns (see
	// packB), or BF16 pairs when bf16 (see packBBF16).
	packed []float32
	kern   *microKernel
	bf16   bool
	i8     *int8Weight // not nil for INT8 weights (see PrepareWeightInt8)
	// deferred marks a weight of DeferWeight: packed by packOnce, after
	// which onPack runs; until then fresh says that no product has used
	// it yet.
	deferred bool
	fresh    atomic.Bool
	packOnce sync.Once
	onPack   func()
}

// PrepareWeight packs w (n x k, row-major) for e.Linear. w is kept, not
// copied: the caller must not change it afterwards.
func (e *Engine) PrepareWeight(w []float32, n, k int) *Weight {
	return e.prepare(w, n, k, false)
}

// PrepareWeightBF16 packs w (n x k, row-major) for e.Linear as BF16: the
// products of the layer then use weights and activations rounded to
// bfloat16, accumulated in float32.
func (e *Engine) PrepareWeightBF16(w []float32, n, k int) *Weight {
	return e.prepare(w, n, k, true)
}

func (e *Engine) prepare(w []float32, n, k int, bf16 bool) *Weight {
	pw := &Weight{N: n, K: k, Data: w, bf16: bf16}
	parts, done := pw.parts()
	pw.pack(e.kernFor(bf16), e.Threads(), parts)
	done()
	return pw
}

func (e *Engine) kernFor(bf16 bool) *microKernel {
	if bf16 {
		return e.bf16.microKernel
	}
	return e.gemm
}

// PrepareWeightRows is PrepareWeight, or PrepareWeightBF16 when bf16, of
// the n x k weight whose row-major rows are parts, blocks of rows one after
// another, as rows returns them again. It packs straight from parts:
// attention's query, key and value
// projections go into the fused layout from the checkpoint's three
// tensors, never concatenated, and a weight stored as F16 can be
// converted into a buffer that is dropped once packed. The weight keeps
// rows, not parts, and calls it only if it must (to repack for another
// micro-kernel, or for gonum's SGEMM).
func (e *Engine) PrepareWeightRows(parts [][]float32, rows func() ([][]float32, func()), n, k int, bf16 bool) *Weight {
	pw := &Weight{N: n, K: k, rows: func() ([][]float32, func()) { return parts, func() {} }, bf16: bf16}
	parts, _ = pw.parts()
	pw.pack(e.kernFor(bf16), e.Threads(), parts)
	pw.rows = rows
	return pw
}

// DeferWeight prepares for e.Linear the n x k weight whose row-major rows
// rows returns in blocks, one after another, packing it only when that
// pays: its first product, if of at most one panel of rows (a request of a
// few tokens), reads the rows in place, and any other packs it first and
// then calls packed (when not nil), where a loader drops the mapped rows.
// A process that answers one request reads each weight once instead of
// copying all of them into a new layout; a server packs on its second.
func (e *Engine) DeferWeight(rows func() ([][]float32, func()), n, k int, packed func()) *Weight {
	w := &Weight{N: n, K: k, rows: rows, deferred: true, onPack: packed}
	w.fresh.Store(true)
	return w
}

// Pack packs a weight of DeferWeight now, unless a product has already
// (a server packs its weights in the background once loaded, rather than
// on a request); any other weight is packed already. It is safe to call
// while products use w.
func (e *Engine) Pack(w *Weight) {
	if !w.deferred {
		return
	}
	w.packOnce.Do(func() {
		w.fresh.Store(false)
		parts, done := w.parts()
		w.pack(e.gemm, e.Threads(), parts)
		done()
		if w.onPack != nil {
			w.onPack()
		}
	})
}

// parts returns the weight's row-major blocks of rows, checking that
// they hold it, and what to call when they are no longer needed.
func (w *Weight) parts() ([][]float32, func()) {
	parts, done := [][]float32{w.Data}, func() {}
	if w.rows != nil {
		parts, done = w.rows()
	}
	size := 0
	for _, p := range parts {
		size += len(p)
		if w.K == 0 && len(p) > 0 || w.K > 0 && len(p)%w.K != 0 {
			size = -1
			break
		}
	}
	if size != w.N*w.K {
		panic(fmt.Sprintf("kernels: the rows of a %d x %d weight come in blocks that do not tile it", w.N, w.K))
	}
	return parts, done
}

func (w *Weight) pack(kern *microKernel, threads int, parts [][]float32) {
	w.packed = make([]float32, packedLen(kern, w.N, w.K))
	adviseHuge(w.packed)
	// Panels are independent: blocks of them go to all cores. A load
	// packs every weight of the model once, and with the checkpoint
	// mapped in place packing is most of what loading costs.
	t := &packTask{kern: kern, dst: w.packed, n: w.N, k: w.K, parts: parts}
	t.per = kern.nr * max(1, (1<<18)/max(kern.nr*w.K, 1))
	parallel(threads, (w.N+t.per-1)/t.per, t)
	w.kern = kern
}

// packTask packs blocks of per columns of op(B) (per a multiple of the
// micro-kernel's nr, so each block is whole panels).
type packTask struct {
	kern      *microKernel
	dst       []float32
	parts     [][]float32 // the weight's rows, in blocks (Weight.parts)
	n, k, per int
}

func (t *packTask) run(i int, _ *scratch) {
	j0 := i * t.per
	end := min(j0+t.per, t.n)
	kw, nr := kWords(t.kern, t.k), t.kern.nr
	// j stays at a panel boundary: whole panels are packed from the part
	// that holds their rows, and a panel whose rows lie in two parts
	// (parts of a number of rows that is not a multiple of nr) is
	// gathered first.
	for j := j0; j < end; {
		src, left := t.rows(j)
		n := min(left, end-j)
		switch {
		case n >= nr:
			n -= n % nr
		case n < end-j:
			n = min(nr, end-j)
			buf := make([]float32, n*t.k)
			for r := 0; r < n; r++ {
				row, _ := t.rows(j + r)
				copy(buf[r*t.k:(r+1)*t.k], row[:t.k])
			}
			src = buf
		}
		if t.kern.pairs {
			packBBF16(t.kern, t.dst[j*kw:], true, n, t.k, src, t.k)
		} else {
			packB(t.kern, t.dst[j*kw:], true, n, t.k, src, t.k)
		}
		j += n
	}
}

// rows returns the weight's rows from row j to the end of the part that
// holds row j, and how many they are.
func (t *packTask) rows(j int) ([]float32, int) {
	for _, p := range t.parts {
		n := len(p) / max(t.k, 1)
		if j < n {
			return p[j*t.k:], n - j
		}
		j -= n
	}
	return nil, 0
}

// linearInPlace is Linear of a weight that is not packed, for few rows of
// x: the product is taken the other way round, out^T = w * x^T, so that the
// micro-kernels read the weight's rows in place (as they read activations)
// against x packed as one panel, and w is read once.
func (e *Engine) linearInPlace(out, x []float32, m int, w *Weight, bias []float32, a Act) {
	kern := e.gemm
	nb := packedLen(kern, m, w.K)
	bufp := bufPool.Get().(*[]float32)
	buf := grow(bufp, nb+w.N*m)
	bp, ct := buf[:nb], buf[nb:nb+w.N*m]
	packB(kern, bp, true, m, w.K, x, w.K)
	r := 0
	parts, done := w.parts()
	for _, p := range parts {
		n := len(p) / w.K
		gemmPacked(kern, e.vec, e.Threads(), false, n, m, w.K, 1, p, w.K, bp, 0, ct[r*m:], m, nil, ActNone)
		r += n
	}
	done()
	for i := 0; i < m; i++ {
		row := out[i*w.N : (i+1)*w.N]
		for j := range row {
			row[j] = ct[j*m+i]
		}
	}
	bufPool.Put(bufp)
	if bias != nil || a != ActNone {
		e.BiasAct(out, m, w.N, bias, a)
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
	case w.deferred && !e.gonum && w.K > 0:
		if m <= e.gemm.nr && w.fresh.CompareAndSwap(true, false) {
			e.linearInPlace(out, x, m, w, bias, a)
			return
		}
		e.Pack(w)
		kern = e.gemm
	case e.gonum || w.K == 0:
		// Each part's columns of out, in place (row stride w.N); with k = 0
		// the product is zeros.
		j := 0
		parts, done := w.parts()
		defer done()
		for _, p := range parts {
			n := w.N
			if w.K > 0 {
				n = len(p) / w.K
			}
			if e.gonum {
				gonum.Implementation{}.Sgemm(blas.NoTrans, blas.Trans, m, n, w.K, 1, x, w.K, p, w.K, 0, out[j:], w.N)
			} else {
				e.sgemm(false, true, m, n, w.K, 1, x, w.K, p, w.K, 0, out[j:], w.N)
			}
			j += n
		}
		if bias != nil || a != ActNone {
			e.BiasAct(out, m, w.N, bias, a)
		}
		return
	default:
		kern = e.gemm
	}
	// Kernels of one name share the panel layout whatever their blocking.
	if w.kern == nil || w.kern.name != kern.name {
		parts, done := w.parts()
		w.pack(kern, e.Threads(), parts)
		done()
	}
	gemmPacked(kern, e.vec, e.Threads(), false, m, w.N, w.K, 1, x, w.K, w.packed, 0, out, w.N, bias, a)
}

// packParallel is packB (packBBF16 for a kernel of pairs) of op(B) with
// blocks of panels on up to threads goroutines, for SGEMM, whose B is packed
// at every call.
func packParallel(kern *microKernel, threads int, dst []float32, transB bool, n, k int, b []float32, ldb int) {
	t := packBTasks.Get().(*packBTask)
	*t = packBTask{kern: kern, dst: dst, trans: transB, n: n, k: k, src: b, ld: ldb}
	t.per = kern.nr * max(1, (1<<18)/max(kern.nr*k, 1))
	parallel(threads, (n+t.per-1)/t.per, t)
	*t = packBTask{}
	packBTasks.Put(t)
}

var packBTasks = sync.Pool{New: func() any { return new(packBTask) }}

// packBTask packs blocks of per columns of op(B) (per a multiple of the
// micro-kernel's nr, so each block is whole panels).
type packBTask struct {
	kern          *microKernel
	dst, src      []float32
	trans         bool
	n, k, ld, per int
}

func (t *packBTask) run(i int, _ *scratch) {
	j0 := i * t.per
	n := min(t.per, t.n-j0)
	dst, src := t.dst[j0*kWords(t.kern, t.k):], t.src[j0:]
	if t.trans {
		src = t.src[j0*t.ld:]
	}
	if t.kern.pairs {
		packBBF16(t.kern, dst, t.trans, n, t.k, src, t.ld)
	} else {
		packB(t.kern, dst, t.trans, n, t.k, src, t.ld)
	}
}
