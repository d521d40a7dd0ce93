package kernels

import (
	"fmt"
	"math"
	"math/rand"
	"testing"
)

// TestGELUVec checks the vector GELU (with and without bias) against the
// float64 reference over BERT's range and beyond, where erfc underflows.
func TestGELUVec(t *testing.T) {
	withVec(t, func(t *testing.T, v *vecOps) {
		rng := rand.New(rand.NewSource(3))
		for _, n := range vecSizes {
			x := make([]float32, n)
			bias := make([]float32, n)
			for i := range x {
				x[i] = 16 * (rng.Float32() - 0.5)
				bias[i] = rng.Float32() - 0.5
			}
			// ±12.86 and ±12.88 are either side of the saturation (geluSat).
			for i, s := range []float32{0, -0.0, 1e-30, -12, 12, -12.86, 12.86, -12.88, 12.88, -40, 40, -1e4, 1e4} {
				if i < n {
					x[i], bias[i] = s, 0
				}
			}
			for _, withBias := range []bool{false, true} {
				got := append([]float32(nil), x...)
				var b []float32
				if withBias {
					b = bias
				}
				v.gelu(got, b)
				worst := 0.0
				for i := range x {
					in := x[i]
					if withBias {
						in += bias[i]
					}
					want := float64(GELURef(in))
					d := math.Abs(float64(got[i]) - want)
					if lim := 3e-7 * math.Max(1, math.Abs(float64(in))); !(d <= lim) {
						t.Fatalf("gelu n=%d bias=%v: gelu(%g) = %g, want %g", n, withBias, in, got[i], want)
					}
					worst = max(worst, d)
				}
			}
		}
	})
}

// TestGELUBiasAct checks BiasAct, the bias and activation kernel (GELU and
// the other activations), of every kernel version against BiasActRef.
func TestGELUBiasAct(t *testing.T) {
	forVersions(t, func(t *testing.T, e *Engine) {
		rng := rand.New(rand.NewSource(10))
		for _, a := range allActs {
			for _, rows := range []int{1, 3, 37} {
				for _, cols := range append(oddSizes, 3072) {
					x, bias := randSlice(rng, rows*cols), randSlice(rng, cols)
					for i := range x {
						x[i] *= 8
					}
					for _, b := range [][]float32{nil, bias} {
						want := append([]float32(nil), x...)
						BiasActRef(want, rows, cols, b, a)
						got := append([]float32(nil), x...)
						e.BiasAct(got, rows, cols, b, a)
						if err := closeTo(got, want, 1e-6, 1e-5); err != nil {
							t.Fatalf("act=%s rows=%d cols=%d bias=%v: %v", a, rows, cols, b != nil, err)
						}
					}
				}
			}
		}
	})
}

// geluLimits are inputs where GELU and its tanh form have reached their
// limits in float32 (x above, x*0 below, as the references compute them:
// -0, NaN for -Inf), and NaN.
var geluLimits = []float32{13, -13, 13.2, -13.2, 14, -14, 20, -20, 30, -30, 50, -50, 100, -100,
	1e4, -1e4, 1e30, -1e30, math.MaxFloat32, -math.MaxFloat32,
	float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN())}

// sameFloat is bit equality, but any NaN for a NaN.
func sameFloat(got, want float32) bool {
	if want != want {
		return got != got
	}
	return math.Float32bits(got) == math.Float32bits(want)
}

// TestGELULimits checks that every kernel version returns the references'
// values bit for bit at geluLimits, in the vector body and in the tail,
// through BiasAct and through Linear's fused epilogue (whose pre-activation
// is the bias: x is 0).
func TestGELULimits(t *testing.T) {
	forVersions(t, func(t *testing.T, e *Engine) {
		const n = 51 // the limits at every offset of the 16- and 8-lane bodies and the tails
		zeros := make([]float32, n)
		for _, a := range []Act{ActGELU, ActGELUTanh} {
			for shift := range geluLimits {
				x := make([]float32, n)
				for i := range x {
					x[i] = geluLimits[(i+shift)%len(geluLimits)]
				}
				for _, b := range [][]float32{nil, zeros} {
					got := append([]float32(nil), x...)
					e.BiasAct(got, 1, n, b, a)
					for i, v := range x {
						if want := actRef(a, v); !sameFloat(got[i], want) {
							t.Fatalf("act=%s bias=%v: %s(%g) = %g, want %g", a, b != nil, a, v, got[i], want)
						}
					}
				}
			}
			const m, k = 3, 5
			rng := rand.New(rand.NewSource(4))
			wd := randSlice(rng, n*k)
			bias := make([]float32, n)
			for j := range bias {
				bias[j] = geluLimits[j%len(geluLimits)]
			}
			for _, w := range []*Weight{e.PrepareWeight(wd, n, k), e.PrepareWeightBF16(wd, n, k), e.PrepareWeightInt8(wd, n, k)} {
				out := make([]float32, m*n)
				e.Linear(out, make([]float32, m*k), m, w, bias, a)
				for i, got := range out {
					if want := actRef(a, bias[i%n]); !sameFloat(got, want) {
						t.Fatalf("linear %s act=%s: %s(%g) = %g, want %g", w.PackedFor(), a, a, bias[i%n], got, want)
					}
				}
			}
		}
	})
}

// TestGELUSatNormal checks what geluSat stands on: at it, the smallest of
// erfcPos's intermediates, its result, is still a normal float32, with
// room for the few ulps by which the vector versions differ.
func TestGELUSatNormal(t *testing.T) {
	const minNormal = 0x1p-126
	if e := erfcPos(geluSat); !(e >= 4*minNormal) {
		t.Errorf("erfc(%g) = %g: too near float32's smallest normal, %g", geluSat, e, minNormal)
	}
}

// BenchmarkGELUVec is the vector GELU on one row of BERT's intermediate
// layer: "bert" over the range BERT's activations take, "large" over 12 <=
// |x| <= 30, where e^(-x²/2) is below float32's normal range and, unless
// the kernels saturate first, the arithmetic goes subnormal and slow.
func BenchmarkGELUVec(b *testing.B) {
	inputs := []struct {
		name string
		at   func(i int) float32
	}{
		{"bert", func(i int) float32 { return float32(i%200)/25 - 4 }},
		{"large", func(i int) float32 {
			v := 12 + float32(i%181)/10
			if i%2 == 1 {
				v = -v
			}
			return v
		}},
	}
	for _, v := range Versions() {
		e := engine(b, Config{Version: v})
		for _, in := range inputs {
			x := make([]float32, 3072)
			for i := range x {
				x[i] = in.at(i)
			}
			y := append([]float32(nil), x...)
			b.Run(v+"/"+in.name, func(b *testing.B) {
				b.SetBytes(int64(4 * len(x)))
				for b.Loop() {
					copy(y, x)
					e.vec.gelu(y, nil)
				}
			})
		}
	}
}

// BenchmarkGELUBiasAct is bias and GELU over BERT-base's intermediate
// activations of 8 x 128 tokens, across cores.
func BenchmarkGELUBiasAct(b *testing.B) {
	const rows, cols = 8 * 128, 3072
	rng := rand.New(rand.NewSource(1))
	x, bias := randSlice(rng, rows*cols), randSlice(rng, cols)
	for _, v := range Versions() {
		e := engine(b, Config{Version: v})
		b.Run(fmt.Sprintf("%s/%dx%d", v, rows, cols), func(b *testing.B) {
			b.SetBytes(2 * 4 * rows * cols)
			for b.Loop() {
				e.BiasAct(x, rows, cols, bias, ActGELU)
			}
		})
	}
}
