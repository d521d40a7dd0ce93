//go:build amd64 && !noasm

package kernels

import "golang.org/x/sys/cpu"

// Micro-kernels in gemm_amd64.s. Each computes an mr x nr tile of C from
// packed panels; add selects C += A*B over C = A*B. k >= 1.

//go:noescape
func sgemmAVX2(k int, a, b, c *float32, ldc int, add bool)

//go:noescape
func sgemmAVX512(k int, a, b, c *float32, ldc int, add bool)

//go:noescape
func sgemmAVX2Direct(k int, a *float32, lda int, b, c *float32, ldc int, add bool, pf *float32)

//go:noescape
func packTransAVX2(dst, src *float32, ldb, k int)

//go:noescape
func packRowsAVX2(dst, src *float32, ldb, k int)

// 6 x 16: twelve YMM accumulators, two for B, two broadcasts of A.
var avx2Kernel = &microKernel{name: "avx2", mr: 6, nr: 16, kc: 256, mc: 144,
	// In-register 8 x 8 transposes, the last k mod 8 steps in Go: a
	// transposed panel otherwise costs a scalar store per value
	// (attention's keys: 19 % of its time on Zen 3).
	packTrans: func(dst, b []float32, ldb, k int) bool {
		_, _ = dst[16*k-1], b[15*ldb+k-1]
		k8 := k &^ 7
		if k8 > 0 {
			packTransAVX2(&dst[0], &b[0], ldb, k8)
		}
		for p := k8; p < k; p++ {
			for j := 0; j < 16; j++ {
				dst[p*16+j] = b[j*ldb+p]
			}
		}
		return true
	},
	// A copy per row costs a call to memmove for 16 values.
	packRows: func(dst, b []float32, ldb, k int) {
		_, _ = dst[16*k-1], b[(k-1)*ldb+15]
		packRowsAVX2(&dst[0], &b[0], ldb, k)
	},
	run: func(k int, a, b, c []float32, ldc int, add bool) {
		_, _, _ = a[6*k-1], b[16*k-1], c[5*ldc+15]
		sgemmAVX2(k, &a[0], &b[0], &c[0], ldc, add)
	},
	direct: func(k int, a []float32, lda int, b, c []float32, ldc int, add bool, pf []float32) {
		_, _, _ = a[5*lda+k-1], b[16*k-1], c[5*ldc+15]
		sgemmAVX2Direct(k, &a[0], lda, &b[0], &c[0], ldc, add, &pf[0])
	}}

//go:noescape
func sgemmAVX512Direct8(k int, a *float32, lda int, b, c *float32, ldc int, add bool, pf *float32)

//go:noescape
func sgemmAVX512Direct4(k int, a *float32, lda int, b, c *float32, ldc int, add bool, pf *float32)

//go:noescape
func packTransAVX512(dst, src *float32, ldb, k int, idx *int32)

//go:noescape
func packRowsAVX512(dst, src *float32, ldb, k int)

//go:noescape
func sgemmAVX512Direct(k int, a *float32, lda int, b, c *float32, ldc int, add bool, pf *float32)

// 12 x 32: twenty-four ZMM accumulators.
var avx512Kernel = &microKernel{name: "avx512", mr: 12, nr: 32, kc: 256, mc: 72,
	// In-register 16 x 16 transposes (gathers for the last k mod 16): a
	// transposed panel otherwise costs a scalar store per value.
	packTrans: func(dst, b []float32, ldb, k int) bool {
		// The gather's indices are 32-bit element offsets of 16 rows.
		if 15*ldb >= 1<<31/4 {
			return false
		}
		_, _ = dst[32*k-1], b[31*ldb+k-1]
		var idx [16]int32
		for i := range idx {
			idx[i] = int32(i * ldb)
		}
		packTransAVX512(&dst[0], &b[0], ldb, k, &idx[0])
		return true
	},
	// A copy per row costs a call to memmove for 32 values.
	packRows: func(dst, b []float32, ldb, k int) {
		_, _ = dst[32*k-1], b[(k-1)*ldb+31]
		packRowsAVX512(&dst[0], &b[0], ldb, k)
	},
	run: func(k int, a, b, c []float32, ldc int, add bool) {
		_, _, _ = a[12*k-1], b[32*k-1], c[11*ldc+31]
		sgemmAVX512(k, &a[0], &b[0], &c[0], ldc, add)
	},
	direct: func(k int, a []float32, lda int, b, c []float32, ldc int, add bool, pf []float32) {
		_, _, _ = a[11*lda+k-1], b[32*k-1], c[11*ldc+31]
		sgemmAVX512Direct(k, &a[0], lda, &b[0], &c[0], ldc, add, &pf[0])
	},
	tails: []tailKernel{
		{8, func(k int, a []float32, lda int, b, c []float32, ldc int, add bool, pf []float32) {
			_, _, _ = a[7*lda+k-1], b[32*k-1], c[7*ldc+31]
			sgemmAVX512Direct8(k, &a[0], lda, &b[0], &c[0], ldc, add, &pf[0])
		}},
		{4, func(k int, a []float32, lda int, b, c []float32, ldc int, add bool, pf []float32) {
			_, _, _ = a[3*lda+k-1], b[32*k-1], c[3*ldc+31]
			sgemmAVX512Direct4(k, &a[0], lda, &b[0], &c[0], ldc, add, &pf[0])
		}},
	}}

func asmVersions() []version {
	var vs []version
	if cpu.X86.HasAVX512F {
		vs = append(vs, version{"avx512", avx512Kernel, avx512Vec})
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		vs = append(vs, version{"avx2", avx2Kernel, avx2Vec})
	}
	return vs
}
