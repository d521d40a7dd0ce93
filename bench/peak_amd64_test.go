//go:build amd64 && !noasm

package bench

import (
	"testing"
	"time"

	"golang.org/x/sys/cpu"
)

// TestVNNIProbes runs every INT8 probe this CPU has, not only the widest
// MeasurePeakInt8 picks, so that the AVX-VNNI loop (hand-encoded) and the
// AVX2 one run on CPUs that have AVX512-VNNI too, and, to compare the
// exact AVX2 step with, the saturating byte chain no bertstream kernel
// uses and VPMADDWD without its sums.
func TestVNNIProbes(t *testing.T) {
	probes := []struct {
		name    string
		has     bool
		loop    func(n int)
		perIter float64
	}{
		{"avx512vnni", cpu.X86.HasAVX512F && cpu.X86.HasAVX512VNNI, vnniAVX512, 24 * 64 * 2},
		{"avxvnni", cpu.X86.HasAVX2 && cpu.X86.HasAVXVNNI, vnniAVX, 14 * 32 * 2},
		{"avx2", cpu.X86.HasAVX2, maddAVX2, 12 * 16 * 2},
		{"avx2-ubsw", cpu.X86.HasAVX2, ubswAVX2, 6 * 32 * 2},
		{"avx2-pmaddwd-alone", cpu.X86.HasAVX2, pmaddwdAVX2, 12 * 16 * 2},
	}
	for _, p := range probes {
		if !p.has {
			t.Logf("%s: not on this CPU", p.name)
			continue
		}
		r := measure(p.name, p.loop, p.perIter, 1, 100*time.Millisecond)
		// 16 multiply-adds per instruction at one instruction per ns at
		// the least; no core does 1e5 GOP/s.
		if r.GFLOPS < 16 || r.GFLOPS > 1e5 {
			t.Errorf("%s: %.1f GOP/s is not plausible", p.name, r.GFLOPS)
		}
		t.Logf("%s, 1 thread: %.1f GOP/s", p.name, r.GFLOPS)
	}
}
