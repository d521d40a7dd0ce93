//go:build amd64 && !noasm

package kernels

import "golang.org/x/sys/cpu"

// The INT8 kernels of gemm_int8_amd64.s.

//go:noescape
func gemmInt8VNNI(kq int, a *byte, lda int, b *byte, c *int32, ldc int, add bool)

//go:noescape
func maxAbsAVX512(n int, x *float32) float32

//go:noescape
func quantAVX512(n int, q *byte, x *float32, inv float32) int32

//go:noescape
func dequantAVX512(n int, c *float32, corr int32, rowScale float32, colScale, bias *float32)

// 12 x 32 with VPDPBUSD: the FP32 kernel's register blocking, each lane
// of an accumulator summing four products per instruction, the
// activations broadcast from memory by the instruction itself. A k block of
// 256 quads keeps a panel's slice of B (32 KB) in L1.
var avx512VNNIKernel = &int8Kernel{name: "avx512vnni", mr: 12, nr: 32, kc: 256, mc: 144,
	run: func(kq int, a []byte, lda int, b []byte, c []int32, ldc int, add bool) {
		_, _, _ = a[11*lda+4*kq-1], b[128*kq-1], c[11*ldc+31]
		gemmInt8VNNI(kq, &a[0], lda, &b[0], &c[0], ldc, add)
	},
	maxAbs: func(x []float32) float32 {
		n := len(x) &^ 15
		var m float32
		if n > 0 {
			m = maxAbsAVX512(n, &x[0])
		}
		return max(m, maxAbsGo(x[n:]))
	},
	quant: func(q []byte, x []float32, inv float32) int32 {
		n := len(x) &^ 15
		var sum int32
		if n > 0 {
			_ = q[n-1]
			sum = quantAVX512(n, &q[0], &x[0], inv)
		}
		return sum + quantGo(q[n:len(x)], x[n:], inv)
	},
	dequant: func(c []float32, corr int32, rowScale float32, colScale, bias []float32) {
		n := len(c) &^ 15
		if n > 0 {
			_ = colScale[n-1]
			var bp *float32
			if bias != nil {
				_ = bias[n-1]
				bp = &bias[0]
			}
			dequantAVX512(n, &c[0], corr, rowScale, &colScale[0], bp)
		}
		var tb []float32
		if bias != nil {
			tb = bias[n:]
		}
		dequantGo(c[n:], corr, rowScale, colScale[n:], tb)
	}}

func asmInt8Kernels() []*int8Kernel {
	if cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VNNI {
		return []*int8Kernel{avx512VNNIKernel}
	}
	return nil
}
