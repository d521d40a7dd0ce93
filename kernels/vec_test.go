package kernels

import (
	"math"
	"math/rand"
	"testing"
)

// withVec runs f once per kernel version this CPU supports, with that
// version's vector primitives.
func withVec(t *testing.T, f func(t *testing.T, v *vecOps)) {
	forVersions(t, func(t *testing.T, e *Engine) { f(t, e.vec) })
}

var vecSizes = []int{0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 65, 129, 1000}

func TestVecPrimitives(t *testing.T) {
	withVec(t, func(t *testing.T, v *vecOps) {
		rng := rand.New(rand.NewSource(2))
		for _, n := range vecSizes {
			x := make([]float32, n)
			for i := range x {
				x[i] = 40 * (rng.Float32() - 0.5)
			}
			if n > 2 {
				x[n-1] = 25 // the maximum in the tail
			}
			want := negInf
			for _, e := range x {
				want = max(want, e)
			}
			if got := v.max(x); got != want {
				t.Errorf("max n=%d: %g, want %g", n, got, want)
			}

			const scale, shift = 0.3, 4
			e := append([]float32(nil), x...)
			sum := v.expSum(e, scale, shift)
			var wantSum float64
			for i := range x {
				w := math.Exp(float64(x[i]*scale - shift))
				wantSum += w
				// The vector versions fuse x*scale - shift: allow for the
				// rounding of the argument the reference sees.
				arg := float64(x[i]*scale - shift)
				if d := math.Abs(float64(e[i])-w) / w; d > 3e-7+1.2e-7*math.Abs(arg) {
					t.Fatalf("expSum n=%d: e^%g = %g, want %g (rel %g)", n, x[i]*scale-shift, e[i], w, d)
				}
			}
			if n > 0 && math.Abs(float64(sum)-wantSum)/wantSum > 1e-6 {
				t.Errorf("expSum n=%d: sum %g, want %g", n, sum, wantSum)
			}

			var tot, sq float64
			for _, e := range x {
				tot += float64(e)
			}
			mean := float32(tot / float64(max(n, 1)))
			for _, e := range x {
				sq += float64(e-mean) * float64(e-mean)
			}
			if got := v.sum(x); math.Abs(float64(got)-tot) > 1e-5*float64(n+1)*20 {
				t.Errorf("sum n=%d: %g, want %g", n, got, tot)
			}
			if got := v.sqDev(x, mean); math.Abs(float64(got)-sq) > 1e-5*sq+1e-6 {
				t.Errorf("sqDev n=%d: %g, want %g", n, got, sq)
			}
			gamma, beta := make([]float32, n), make([]float32, n)
			for i := range gamma {
				gamma[i], beta[i] = 0.5+float32(i%7)/7, float32(i%5)/5-0.5
			}
			nrm := append([]float32(nil), x...)
			v.norm(nrm, gamma, beta, mean, 0.3)
			for i := range x {
				if want := (x[i]-mean)*0.3*gamma[i] + beta[i]; math.Abs(float64(nrm[i]-want)) > 1e-6*math.Max(1, math.Abs(float64(want))) {
					t.Fatalf("norm n=%d at %d: %g, want %g", n, i, nrm[i], want)
				}
			}

			y := append([]float32(nil), x...)
			v.scale(y, 0.25)
			z := append([]float32(nil), x...)
			v.add(z, x)
			for i := range x {
				if y[i] != x[i]*0.25 || z[i] != x[i]+x[i] {
					t.Fatalf("scale/add n=%d at %d: %g, %g from %g", n, i, y[i], z[i], x[i])
				}
			}
		}
	})
}

// TestVecSoftmaxSaturates checks e^x at the ends of float32's range: below
// -87.3 exactly 0 (not the smallest normal, which the softmax's scaling
// would make subnormal), in the vector body and in the tail.
func TestVecSoftmaxSaturates(t *testing.T) {
	withVec(t, func(t *testing.T, v *vecOps) {
		x := []float32{-1e4, 0, 100, -200, 88, 1e4, -1e30, 3, -87.2, -87.4, -88, -100, -math.MaxFloat32, float32(math.Inf(-1)), -90, -87}
		x = append(x, x[:11]...) // 27: a 16-lane body and tail, three 8-lane bodies and a tail
		e := append([]float32(nil), x...)
		v.expSum(e, 1, 0)
		for i, got := range e {
			w := math.Exp(float64(x[i]))
			if x[i] < -87.3 {
				if got != 0 {
					t.Errorf("e^%g = %g, want 0", x[i], got)
				}
				continue
			}
			if x[i] > 88 {
				// Softmax never gets here (its arguments are <= 0): only
				// ask for a huge value, not NaN.
				if !(got > 1e38) {
					t.Errorf("e^%g = %g", x[i], got)
				}
				continue
			}
			if math.IsNaN(float64(got)) || math.Abs(float64(got)-w) > 1e-6*w+1e-37 {
				t.Errorf("e^%g = %g, want %g", x[i], got, w)
			}
		}
	})
}
