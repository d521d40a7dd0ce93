//go:build amd64 && !noasm

package kernels

import "golang.org/x/sys/cpu"

// The INT8 kernels of gemm_int8_amd64.s.

//go:noescape
func gemmInt8VNNI(kq int, a *byte, b *byte, c *int32, ldc int, add bool, ep *int8Epilogue)

//go:noescape
func maxAbsAVX512(n int, x *float32) float32

//go:noescape
func quantAVX512(n int, q *byte, stride int, x *float32, inv float32) int32

//go:noescape
func dequantAVX512(n int, c *float32, corr int32, rowScale float32, colScale, bias *float32)

//go:noescape
func gemmInt8AVXVNNI(kq int, a *byte, b *byte, c *int32, ldc int, add bool, ep *int8Epilogue)

//go:noescape
func gemmInt8AVX2(kq int, a *byte, b *byte, c *int32, ldc int, add bool, ep *int8Epilogue)

//go:noescape
func quant16AVX2(n int, q *byte, stride int, x *float32, inv float32) int32

//go:noescape
func maxAbsAVX2(n int, x *float32) float32

//go:noescape
func quantAVX2(n int, q *byte, stride int, x *float32, inv float32) int32

//go:noescape
func dequantAVX2(n int, c *float32, corr int32, rowScale float32, colScale, bias *float32)

// 12 x 32 with VPDPBUSD: the FP32 kernel's register blocking, each lane
// of an accumulator summing four products per instruction, the
// activations broadcast from memory by the instruction itself. A k block of
// 256 quads keeps a panel's slice of B (32 KB) in L1. Unlike the FP32
// kernel, it reads A packed: quantization writes it so at no extra cost,
// and one stream instead of twelve rows took the kernel alone from 605-615
// to 710-720 GOPS a core with its panels in L2 (BenchmarkInt8KernelL2's
// loop, quiet Zen 5), though whole layers on two cores timed alike within
// the noise.
var avx512VNNIKernel = &int8Kernel{name: "avx512vnni", mr: 12, nr: 32, kc: 256, mc: 144, aw: 1,
	run: func(kq int, a []byte, b []byte, c []int32, ldc int, add bool, ep *int8Epilogue) {
		_, _, _ = a[48*kq-1], b[128*kq-1], c[11*ldc+31]
		gemmInt8VNNI(kq, &a[0], &b[0], &c[0], ldc, add, ep)
	},
	maxAbs:  vecMaxAbs(16, maxAbsAVX512),
	quant:   vecQuant(16, 1, quantAVX512),
	dequant: vecDequant(16, dequantAVX512)}

// 6 x 16 with AVX-VNNI's VEX VPDPBUSD, for CPUs that have it without
// AVX512-VNNI: 16 Y registers hold 12 accumulators, two of B and two
// broadcast rows. A k block of 512 quads keeps a panel's slice of B (32
// KB) in L1, as the AVX-512 kernel's does.
var avxVNNIKernel = &int8Kernel{name: "avxvnni", mr: 6, nr: 16, kc: 512, mc: 144, aw: 1,
	run: func(kq int, a []byte, b []byte, c []int32, ldc int, add bool, ep *int8Epilogue) {
		_, _, _ = a[24*kq-1], b[64*kq-1], c[5*ldc+15]
		gemmInt8AVXVNNI(kq, &a[0], &b[0], &c[0], ldc, add, ep)
	},
	maxAbs:  vecMaxAbs(8, maxAbsAVX2),
	quant:   vecQuant(8, 1, quantAVX2),
	dequant: vecDequant(8, dequantAVX2)}

// 6 x 8 with VPMADDWD, for AVX2 CPUs without VNNI (Zen 2 and 3, Intel
// before Alder Lake): 16-bit products, half VNNI's per instruction, which
// still doubles an FMA's multiply-adds per instruction. The activations are
// packed as int16, so that a row's quad is one 64-bit broadcast load; the
// weights stay bytes (the same packing as the VNNI kernels', half the
// memory of words) and are widened in the kernel, twice a step against
// twelve products. A k block of 256 quads keeps a tile's slices of A and
// B (12 and 8 KB) in L1, a block of 72 rows of A (144 KB) in L2: on Zen 3
// blocks of 256 to 768 quads and of 48 to 144 rows timed alike (276-278
// GOP/s over BERT-base's four layers at 1024 rows, six rounds interleaved),
// so the smallest footprint won.
var avx2Int8Kernel = &int8Kernel{name: "avx2-int8", mr: 6, nr: 8, kc: 256, mc: 72, aw: 2,
	run: func(kq int, a []byte, b []byte, c []int32, ldc int, add bool, ep *int8Epilogue) {
		_, _, _ = a[48*kq-1], b[32*kq-1], c[5*ldc+7]
		gemmInt8AVX2(kq, &a[0], &b[0], &c[0], ldc, add, ep)
	},
	maxAbs:  vecMaxAbs(8, maxAbsAVX2),
	quant:   vecQuant(8, 2, quant16AVX2),
	dequant: vecDequant(8, dequantAVX2)}

// vecMaxAbs, vecQuant and vecDequant wrap vector code that takes multiples
// of w values: the rest goes to the Go versions (vecQuant: the one for
// activations of aw bytes).
func vecMaxAbs(w int, f func(n int, x *float32) float32) func([]float32) float32 {
	return func(x []float32) float32 {
		n := len(x) / w * w
		var m float32
		if n > 0 {
			m = f(n, &x[0])
		}
		return max(m, maxAbsGo(x[n:]))
	}
}

func vecQuant(w, aw int, f func(n int, q *byte, stride int, x *float32, inv float32) int32) func([]byte, int, []float32, float32) int32 {
	tail := quantGo
	if aw == 2 {
		tail = quant16Go
	}
	return func(q []byte, stride int, x []float32, inv float32) int32 {
		n := len(x) / w * w
		var sum int32
		if n > 0 {
			_ = q[(n/4-1)*stride+4*aw-1]
			sum = f(n, &q[0], stride, &x[0], inv)
		}
		if n == len(x) {
			return sum
		}
		return sum + tail(q[n/4*stride:], stride, x[n:], inv)
	}
}

func vecDequant(w int, f func(n int, c *float32, corr int32, rowScale float32, colScale, bias *float32)) func([]float32, int32, float32, []float32, []float32) {
	return func(c []float32, corr int32, rowScale float32, colScale, bias []float32) {
		n := len(c) / w * w
		if n > 0 {
			_ = colScale[n-1]
			var bp *float32
			if bias != nil {
				_ = bias[n-1]
				bp = &bias[0]
			}
			f(n, &c[0], corr, rowScale, &colScale[0], bp)
		}
		var tb []float32
		if bias != nil {
			tb = bias[n:]
		}
		dequantGo(c[n:], corr, rowScale, colScale[n:], tb)
	}
}

// asmInt8Kernels lists the vector kernels this CPU runs, fastest first: a
// CPU with several (Zen 4 and 5, Sapphire Rapids) can be made to run a
// slower one through Config.Int8Version.
func asmInt8Kernels() []*int8Kernel {
	var ks []*int8Kernel
	if cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VNNI {
		ks = append(ks, avx512VNNIKernel)
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasAVXVNNI {
		ks = append(ks, avxVNNIKernel)
	}
	if cpu.X86.HasAVX2 {
		ks = append(ks, avx2Int8Kernel)
	}
	return ks
}

// quant16Go is quantGo for panels of int16 activations.
func quant16Go(q []byte, stride int, x []float32, inv float32) int32 {
	var sum int32
	for j, v := range x {
		v := quantize(v, inv)
		o := j/4*stride + j%4*2
		q[o], q[o+1] = byte(v), byte(v>>8)
		sum += v
	}
	return sum
}
