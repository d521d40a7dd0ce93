package kernels

import (
	"math/rand"
	"testing"
)

func TestLayerNormVersions(t *testing.T) {
	forVersions(t, func(t *testing.T, e *Engine) {
		rng := rand.New(rand.NewSource(6))
		for _, cols := range append(oddSizes, 768) {
			const rows = 37
			x := randSlice(rng, rows*cols)
			for i := range x {
				x[i] = 3*x[i] + 20 // a mean far from 0, as BERT's outlier dimensions have
			}
			res := randSlice(rng, rows*cols)
			gamma, beta := randSlice(rng, cols), randSlice(rng, cols)
			for _, alias := range []string{"none", "x", "res", "no residual"} {
				want := make([]float32, rows*cols)
				r := res
				if alias == "no residual" {
					r = nil
				}
				LayerNormRef(want, x, r, rows, cols, gamma, beta, 1e-12)
				xs, rs := append([]float32(nil), x...), append([]float32(nil), res...)
				out := make([]float32, rows*cols)
				switch alias {
				case "x":
					out = xs
				case "res":
					out = rs
				case "no residual":
					rs = nil
				}
				e.LayerNorm(out, xs, rs, rows, cols, gamma, beta, 1e-12)
				if err := closeTo(out, want, 2e-5, 1e-5); err != nil {
					t.Errorf("cols=%d out aliases %s: %v", cols, alias, err)
				}
			}
		}
	})
}

// BenchmarkLayerNorm is the residual add and LayerNorm of BERT-base on a
// batch of 8 x 128 tokens.
func BenchmarkLayerNorm(b *testing.B) {
	const rows, cols = 8 * 128, 768
	rng := rand.New(rand.NewSource(1))
	x, res, out := randSlice(rng, rows*cols), randSlice(rng, rows*cols), make([]float32, rows*cols)
	gamma, beta := randSlice(rng, cols), randSlice(rng, cols)
	for _, v := range Versions() {
		e := engine(b, Config{Version: v})
		b.Run(v, func(b *testing.B) {
			b.SetBytes(3 * 4 * rows * cols)
			for b.Loop() {
				e.LayerNorm(out, x, res, rows, cols, gamma, beta, 1e-12)
			}
		})
	}
}
