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
