//go:build amd64 && !noasm

package bench

import "golang.org/x/sys/cpu"

//go:noescape
func fmaAVX2(n int)

//go:noescape
func fmaAVX512(n int)

// fmaProbe returns the widest FMA loop this CPU runs and the float32
// operations one iteration performs.
func fmaProbe() (name string, loop func(n int), flopsPerIter float64) {
	switch {
	case cpu.X86.HasAVX512F:
		return "avx512", fmaAVX512, 24 * 16 * 2
	case cpu.X86.HasAVX2 && cpu.X86.HasFMA:
		return "avx2", fmaAVX2, 12 * 8 * 2
	}
	return "", nil, 0
}

//go:noescape
func vnniAVX512(n int)

//go:noescape
func vnniAVX(n int)

//go:noescape
func maddAVX2(n int)

//go:noescape
func ubswAVX2(n int)

//go:noescape
func pmaddwdAVX2(n int)

// vnniProbe returns the widest INT8 dot-product loop of this CPU (on AVX2
// without VNNI, the 16-bit one of the AVX2 INT8 kernel) and the operations
// (two per multiply-add) one iteration performs.
func vnniProbe() (name string, loop func(n int), opsPerIter float64) {
	switch {
	case cpu.X86.HasAVX512F && cpu.X86.HasAVX512VNNI:
		return "avx512vnni", vnniAVX512, 24 * 64 * 2
	case cpu.X86.HasAVX2 && cpu.X86.HasAVXVNNI:
		return "avxvnni", vnniAVX, 14 * 32 * 2
	case cpu.X86.HasAVX2:
		return "avx2", maddAVX2, 12 * 16 * 2
	}
	return "", nil, 0
}

//go:noescape
func dpbf16AVX512(n int)

// bf16Probe returns the BF16 dot-product loop of this CPU and the float32
// operations (two multiply-adds per lane, four flops) one iteration
// performs.
func bf16Probe() (name string, loop func(n int), flopsPerIter float64) {
	if cpu.X86.HasAVX512F && cpu.X86.HasAVX512BF16 {
		return "avx512bf16", dpbf16AVX512, 24 * 16 * 4
	}
	return "", nil, 0
}
