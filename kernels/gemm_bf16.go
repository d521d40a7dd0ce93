package kernels

import (
	"math"
	"unsafe"
)

//go:generate go run ./internal/genbf16 -o gemm_bf16_amd64.s

// The BF16 path: weights rounded to bfloat16 once, at load, activations
// rounded as they are packed, products accumulated in float32. On CPUs
// with AVX512_BF16 each VDPBF16PS does two multiply-adds per lane, and the
// packed weights take half the memory traffic; elsewhere a portable Go
// kernel computes the same rounded products, so results do not depend on
// the machine beyond float32 summation order.

// words views packed panels as the 32-bit words they are: pairs of BF16
// values, not float32s.
func words(f []float32) []uint32 {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*uint32)(unsafe.Pointer(&f[0])), len(f))
}

// packABF16 writes rows [i0, i0+rows) and values [p0, p0+kc) of alpha*op(A)
// as panels of mr rows of BF16 pairs: for each pair p, mr words holding
// values p0+2p (low half) and p0+2p+1 (high half; zero past kc).
func packABF16(mr int, dst []float32, transA bool, a []float32, lda, i0, rows, p0, kc int, alpha float32) {
	kw := (kc + 1) / 2
	w := words(dst)
	at := func(i, p int) float32 {
		if transA {
			return alpha * a[(p0+p)*lda+i]
		}
		return alpha * a[i*lda+p0+p]
	}
	for r0 := 0; r0 < rows; r0 += mr {
		panel := w[r0*kw : r0*kw+mr*kw]
		rr := min(mr, rows-r0)
		if rr < mr {
			clear(panel)
		}
		for ii := 0; ii < rr; ii++ {
			i := i0 + r0 + ii
			for p := 0; p < kw; p++ {
				lo := uint32(f32ToBF16(at(i, 2*p)))
				var hi uint32
				if 2*p+1 < kc {
					hi = uint32(f32ToBF16(at(i, 2*p+1)))
				}
				panel[p*mr+ii] = lo | hi<<16
			}
		}
	}
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
var goBF16Kernel = &microKernel{name: "go-bf16", mr: 4, nr: 4, kc: 128, mc: 128, pairs: true, run: kernelGoBF16}

func kernelGoBF16(k int, a, b, c []float32, ldc int, add bool) {
	aw, bw := words(a[:4*k]), words(b[:4*k])
	var acc [4][4]float32
	for p := 0; p < k; p++ {
		for i := 0; i < 4; i++ {
			x := aw[p*4+i]
			x0, x1 := math.Float32frombits(x<<16), math.Float32frombits(x&0xffff0000)
			for j := 0; j < 4; j++ {
				y := bw[p*4+j]
				acc[i][j] += x0*math.Float32frombits(y<<16) + x1*math.Float32frombits(y&0xffff0000)
			}
		}
	}
	for i := 0; i < 4; i++ {
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
