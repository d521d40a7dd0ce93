package bench

import (
	"testing"
	"time"
)

func TestMeasurePeak(t *testing.T) {
	p, err := MeasurePeak(1, 100*time.Millisecond)
	if err != nil {
		t.Skip(err)
	}
	// A core does at least one 4-wide FMA per ns on anything with AVX2.
	if p.GFLOPS < 4 || p.GFLOPS > 1e4 {
		t.Errorf("peak %.1f GFLOP/s on %s is not plausible", p.GFLOPS, p.ISA)
	}
	t.Logf("FMA peak, 1 thread: %.1f GFLOP/s (%s)", p.GFLOPS, p.ISA)
}

func TestMeasurePeakInt8(t *testing.T) {
	p, err := MeasurePeakInt8(1, 100*time.Millisecond)
	if err != nil {
		t.Skip(err)
	}
	// At least 16 multiply-adds per instruction (VPMADDWD; VPDPBUSD does
	// 64): well over the FMA floor above.
	if p.GFLOPS < 16 || p.GFLOPS > 1e5 {
		t.Errorf("INT8 peak %.1f GOP/s on %s is not plausible", p.GFLOPS, p.ISA)
	}
	t.Logf("INT8 dot-product peak, 1 thread: %.1f GOP/s (%s)", p.GFLOPS, p.ISA)
}

func TestMeasurePeakBF16(t *testing.T) {
	p, err := MeasurePeakBF16(1, 100*time.Millisecond)
	if err != nil {
		t.Skip(err)
	}
	// 32 multiply-adds per instruction: well over the FMA floor above.
	if p.GFLOPS < 16 || p.GFLOPS > 1e5 {
		t.Errorf("BF16 peak %.1f GFLOP/s on %s is not plausible", p.GFLOPS, p.ISA)
	}
	t.Logf("BF16 dot-product peak, 1 thread: %.1f GFLOP/s (%s)", p.GFLOPS, p.ISA)
}
