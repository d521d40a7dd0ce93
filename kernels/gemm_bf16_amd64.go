//go:build amd64 && !noasm

package kernels

import "golang.org/x/sys/cpu"

// The BF16 kernels of gemm_bf16_amd64.s (written by internal/genbf16).

//go:noescape
func sgemmBF16Direct12(k int, a *float32, lda int, b, c *float32, ldc int, add bool, pf *float32)

//go:noescape
func sgemmBF16Direct8(k int, a *float32, lda int, b, c *float32, ldc int, add bool, pf *float32)

//go:noescape
func sgemmBF16Direct4(k int, a *float32, lda int, b, c *float32, ldc int, add bool, pf *float32)

//go:noescape
func sgemmBF16Direct2(k int, a *float32, lda int, b, c *float32, ldc int, add bool, pf *float32)

//go:noescape
func sgemmBF16Direct1(k int, a *float32, lda int, b, c *float32, ldc int, add bool, pf *float32)

//go:noescape
func toBF16AVX512(dst *uint16, src *float32, n int)

//go:noescape
func pairBF16AVX512(dst *uint32, lo, hi *float32, n int)

//go:noescape
func toBF16ScaledAVX512(dst *uint16, src *float32, n int, s float32)

// bf16Direct wraps the kernel of rows rows with the bounds checks that
// keep it inside its slices.
func bf16Direct(rows int, f func(k int, a *float32, lda int, b, c *float32, ldc int, add bool, pf *float32)) directFunc {
	return func(k int, a []float32, lda int, b, c []float32, ldc int, add bool, pf []float32) {
		_, _, _ = a[(rows-1)*lda+k-1], b[32*k-1], c[(rows-1)*ldc+31]
		f(k, &a[0], lda, &b[0], &c[0], ldc, add, &pf[0])
	}
}

// 12 x 32 with VDPBF16PS: the FP32 kernel's register blocking, k in pairs,
// so that a k block of 256 pairs (512 values) keeps a panel's slice of B
// (32 KB) in L1, as 256 float32 steps do for FP32.
var avx512BF16Kernel = newBF16Kernel(&microKernel{name: "avx512bf16", mr: 12, nr: 32, kc: 256, mc: 144, pairs: true,
	direct: bf16Direct(12, sgemmBF16Direct12),
	tails: []tailKernel{
		{8, bf16Direct(8, sgemmBF16Direct8)},
		{4, bf16Direct(4, sgemmBF16Direct4)},
		{2, bf16Direct(2, sgemmBF16Direct2)},
		{1, bf16Direct(1, sgemmBF16Direct1)},
	}},
	func(dst []uint16, src []float32) {
		n := len(src) &^ 15
		if n > 0 {
			_ = dst[n-1]
			toBF16AVX512(&dst[0], &src[0], n)
		}
		F32ToBF16(dst[n:len(src)], src[n:])
	},
	// A missing high row (the last pair of an odd count) is rare: the
	// portable code pairs it with zeros.
	func(dst []uint32, lo, hi []float32) {
		n := 0
		if hi != nil {
			n = len(lo) &^ 15
		}
		if n > 0 {
			_, _ = dst[n-1], hi[n-1]
			pairBF16AVX512(&dst[0], &lo[0], &hi[0], n)
			hi = hi[n:]
		}
		pairGo(dst[n:len(lo)], lo[n:], hi)
	},
	func(dst []uint16, src []float32, s float32) {
		n := len(src) &^ 15
		if n > 0 {
			_ = dst[n-1]
			toBF16ScaledAVX512(&dst[0], &src[0], n, s)
		}
		toBF16ScaledGo(dst[n:len(src)], src[n:], s)
	})

func asmBF16Kernels() []*bf16Kernel {
	if cpu.X86.HasAVX512BF16 {
		return []*bf16Kernel{avx512BF16Kernel}
	}
	return nil
}
