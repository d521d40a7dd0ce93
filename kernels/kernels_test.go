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
// go), with an Engine of that version.
func forVersions(t *testing.T, f func(t *testing.T, e *Engine)) {
	for _, v := range Versions() {
		t.Run(v, func(t *testing.T) { f(t, engine(t, Config{Version: v})) })
	}
}
