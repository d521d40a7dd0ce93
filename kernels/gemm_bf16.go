package kernels

import (
	"math"
	"sync"
	"unsafe"
)

//go:generate go run ./internal/genbf16 -o gemm_bf16_amd64.s

// The BF16 path: weights rounded to bfloat16 once, at load, and packed in
// panels of BF16 pairs; activations rounded once per Linear call, by
// vector code, into rows of BF16 pairs that the micro-kernel reads in
// place, as the FP32 kernel reads rows of float32 (no packing of A);
// products accumulated in float32. Rounding is to nearest even
// (f32ToBF16) everywhere, subnormals kept, so the inputs of the products
// are the same bits on every version. On CPUs with AVX512_BF16 each
// VDPBF16PS does two multiply-adds per lane, and the packed weights take
// half the memory traffic; elsewhere a portable Go kernel computes the
// same rounded products, so results do not depend on the machine beyond
// float32 summation order.

// bf16Kernel is one BF16 micro-kernel and the conversion of activations
// that feeds it.
type bf16Kernel struct {
	// microKernel has pairs set, and direct and tails down to one row:
	// A is always read in place.
	*microKernel
	// toBF16 is F32ToBF16 for this version.
	toBF16 func(dst []uint16, src []float32)
	// convert is a rowTask function that writes rows [lo, hi) of t.x
	// (t.cols values each) as BF16 rows of (t.cols+1)/2 words into t.out,
	// padding an odd row with a zero.
	convert func(t *rowTask, lo, hi int)
	// pair sets dst[j] to the BF16 pair (lo[j], hi[j]), lo[j] in the low
	// half, as f32ToBF16 rounds them; hi nil pairs with zeros.
	pair func(dst []uint32, lo, hi []float32)
	// toBF16Scaled is toBF16 of src[j]*s, the float32 product.
	toBF16Scaled func(dst []uint16, src []float32, s float32)
}

// toBF16ScaledGo is the portable toBF16Scaled.
func toBF16ScaledGo(dst []uint16, src []float32, s float32) {
	for j, v := range src {
		dst[j] = f32ToBF16(v * s)
	}
}

// pairGo is the portable pair.
func pairGo(dst []uint32, lo, hi []float32) {
	for j, v := range lo {
		var h uint32
		if hi != nil {
			h = uint32(f32ToBF16(hi[j]))
		}
		dst[j] = uint32(f32ToBF16(v)) | h<<16
	}
}

func newBF16Kernel(mk *microKernel, toBF16 func(dst []uint16, src []float32), pair func(dst []uint32, lo, hi []float32), toBF16Scaled func(dst []uint16, src []float32, s float32)) *bf16Kernel {
	return &bf16Kernel{microKernel: mk, toBF16: toBF16, pair: pair, toBF16Scaled: toBF16Scaled, convert: func(t *rowTask, lo, hi int) {
		k := t.cols
		kw := (k + 1) / 2
		if k%2 == 0 {
			// The rows are contiguous on both sides: one call.
			toBF16(halves(t.out[lo*kw:hi*kw]), t.x[lo*k:hi*k])
			return
		}
		for r := lo; r < hi; r++ {
			h := halves(t.out[r*kw : r*kw+kw])
			toBF16(h[:k], t.x[r*k:r*k+k])
			h[k] = 0
		}
	}}
}

// words views packed panels as the 32-bit words they are: pairs of BF16
// values, not float32s.
func words(f []float32) []uint32 {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*uint32)(unsafe.Pointer(&f[0])), len(f))
}

// halves views BF16 rows stored in float32 words as their BF16 values,
// the lower half of each word first (little-endian: value 2p, then 2p+1).
func halves(f []float32) []uint16 {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(&f[0])), 2*len(f))
}

// bf16Rows holds the activations of one Linear call as BF16 rows.
var bf16Rows = sync.Pool{New: func() any { return new([]float32) }}

// linearBF16 is Linear for a BF16 weight: x rounded to BF16 rows on all
// cores, then gemmPacked reading them in place (lda in words, k in
// values), bias and act fused as for FP32.
func (e *Engine) linearBF16(out, x []float32, m int, w *Weight, bias []float32, a Act) {
	kern := e.bf16
	threads := e.Threads()
	// Kernels of one name share the panel layout whatever their blocking.
	if w.kern == nil || w.kern.name != kern.name {
		parts, done := w.parts()
		w.pack(kern.microKernel, threads, parts)
		done()
	}
	kw := (w.K + 1) / 2
	bufp := bf16Rows.Get().(*[]float32)
	xb := grow(bufp, m*kw)
	t := rowTasks.Get().(*rowTask)
	*t = rowTask{fn: kern.convert, rows: m, out: xb, x: x, cols: w.K}
	runRows(threads, t)
	gemmPacked(kern.microKernel, e.vec, threads, false, m, w.N, w.K, 1, xb, kw, w.packed, 0, out, w.N, bias, a)
	bf16Rows.Put(bufp)
}

// packBBF16 writes op(B) (k x n) as panels of nr columns of BF16 pairs:
// panel jp holds, for each pair p, the words (b[2p][j], b[2p+1][j]) of
// its columns.
func packBBF16(kern *microKernel, dst []float32, transB bool, n, k int, b []float32, ldb int) {
	nr, kw := kern.nr, (k+1)/2
	w := words(dst)
	at := func(p, j int) float32 {
		if transB {
			return b[j*ldb+p]
		}
		return b[p*ldb+j]
	}
	for j0 := 0; j0 < n; j0 += nr {
		panel := w[j0*kw : j0*kw+nr*kw]
		cols := min(nr, n-j0)
		if cols < nr {
			clear(panel)
		}
		for jj := 0; jj < cols; jj++ {
			for p := 0; p < kw; p++ {
				lo := uint32(f32ToBF16(at(2*p, j0+jj)))
				var hi uint32
				if 2*p+1 < k {
					hi = uint32(f32ToBF16(at(2*p+1, j0+jj)))
				}
				panel[p*nr+jj] = lo | hi<<16
			}
		}
	}
}

// goBF16Kernel computes what VDPBF16PS does, 4 x 4 at a time, for CPUs
// without AVX512_BF16. Each lane adds both products of a pair at once,
// as the instruction does.
var goBF16Kernel = newBF16Kernel(&microKernel{name: "go-bf16", mr: 4, nr: 4, kc: 128, mc: 128, pairs: true,
	direct: kernelGoBF16x4, tails: []tailKernel{{2, goBF16Direct(2)}, {1, goBF16Direct(1)}}}, F32ToBF16, pairGo, toBF16ScaledGo)

// lo and hi are the two BF16 values of a pair word as float32.
func lo(w uint32) float32 { return math.Float32frombits(w << 16) }
func hi(w uint32) float32 { return math.Float32frombits(w & 0xffff0000) }

// kernelGoBF16x4 is the portable kernel's full tile: sixteen accumulators
// the Go compiler keeps in registers, each pair of B split once per step.
func kernelGoBF16x4(k int, a []float32, lda int, b, c []float32, ldc int, add bool, _ []float32) {
	var c00, c01, c02, c03, c10, c11, c12, c13 float32
	var c20, c21, c22, c23, c30, c31, c32, c33 float32
	a0, a1, a2, a3 := words(a[:k]), words(a[lda:lda+k]), words(a[2*lda:2*lda+k]), words(a[3*lda:3*lda+k])
	bw := words(b[:4*k])
	for p := range a0 {
		bp := bw[4*p : 4*p+4 : 4*p+4]
		b0l, b0h, b1l, b1h := lo(bp[0]), hi(bp[0]), lo(bp[1]), hi(bp[1])
		b2l, b2h, b3l, b3h := lo(bp[2]), hi(bp[2]), lo(bp[3]), hi(bp[3])
		xl, xh := lo(a0[p]), hi(a0[p])
		c00 += xl*b0l + xh*b0h
		c01 += xl*b1l + xh*b1h
		c02 += xl*b2l + xh*b2h
		c03 += xl*b3l + xh*b3h
		xl, xh = lo(a1[p]), hi(a1[p])
		c10 += xl*b0l + xh*b0h
		c11 += xl*b1l + xh*b1h
		c12 += xl*b2l + xh*b2h
		c13 += xl*b3l + xh*b3h
		xl, xh = lo(a2[p]), hi(a2[p])
		c20 += xl*b0l + xh*b0h
		c21 += xl*b1l + xh*b1h
		c22 += xl*b2l + xh*b2h
		c23 += xl*b3l + xh*b3h
		xl, xh = lo(a3[p]), hi(a3[p])
		c30 += xl*b0l + xh*b0h
		c31 += xl*b1l + xh*b1h
		c32 += xl*b2l + xh*b2h
		c33 += xl*b3l + xh*b3h
	}
	acc := [4][4]float32{{c00, c01, c02, c03}, {c10, c11, c12, c13}, {c20, c21, c22, c23}, {c30, c31, c32, c33}}
	storeGoBF16(acc[:], c, ldc, add)
}

// goBF16Direct returns the portable kernel of rows (fewer than 4) rows of A.
func goBF16Direct(rows int) directFunc {
	return func(k int, a []float32, lda int, b, c []float32, ldc int, add bool, _ []float32) {
		bw := words(b[:4*k])
		var acc [4][4]float32
		for i := 0; i < rows; i++ {
			for p, x := range words(a[i*lda : i*lda+k]) {
				xl, xh := lo(x), hi(x)
				for j := 0; j < 4; j++ {
					y := bw[p*4+j]
					acc[i][j] += xl*lo(y) + xh*hi(y)
				}
			}
		}
		storeGoBF16(acc[:rows], c, ldc, add)
	}
}

func storeGoBF16(acc [][4]float32, c []float32, ldc int, add bool) {
	for i := range acc {
		row := c[i*ldc : i*ldc+4]
		for j := range row {
			if add {
				row[j] += acc[i][j]
			} else {
				row[j] = acc[i][j]
			}
		}
	}
}
