package kernels

import (
	"fmt"
	"math"
	"math/rand"
	"testing"
)

// Helpers shared by the tests of every op.

var oddSizes = []int{1, 3, 17, 65, 129}

func randSlice(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = 2*rng.Float32() - 1
	}
	return v
}

// closeTo reports the first element of got farther than abs + rel*|want|
// from want.
func closeTo(got, want []float32, abs, rel float64) error {
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if !(d <= abs+rel*math.Abs(float64(want[i]))) {
			return fmt.Errorf("element %d: got %g, want %g", i, got[i], want[i])
		}
	}
	return nil
}

// engine is New(c) for a configuration the test knows this CPU has.
func engine(tb testing.TB, c Config) *Engine {
	tb.Helper()
	e, err := New(c)
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

// forVersions runs f once per kernel version this CPU runs (avx512, avx2,
// go) and entry of the blocking table that blocks that version otherwise
// (every CPU's entry is checked on any CPU), with an Engine of each.
func forVersions(t *testing.T, f func(t *testing.T, e *Engine)) {
	for _, v := range Versions() {
		seen := map[[3]int]bool{}
		for _, tn := range Tunings() {
			e := engine(t, Config{Version: v, Tuning: tn})
			key := [3]int{e.gemm.kc, e.gemm.mc, e.tune.attnRows}
			if seen[key] {
				continue
			}
			seen[key] = true
			t.Run(v+"/"+tn, func(t *testing.T) { f(t, e) })
		}
	}
}
