package kernels

import "math"

// Vector primitives of the element-wise kernels (softmax, GELU, bias). Each
// has a portable Go version and, on amd64, AVX2 and AVX-512 versions in
// vec_amd64.s; the active set follows the version chosen with SetVersion,
// like the SGEMM micro-kernel.

// vecOps is one implementation of the primitives.
type vecOps struct {
	// max returns the largest element of x (-Inf for an empty x).
	max func(x []float32) float32
	// expSum sets x[i] = e^(x[i]*scale - shift) and returns their sum.
	expSum func(x []float32, scale, shift float32) float32
	// scale multiplies x by s.
	scale func(x []float32, s float32)
	// add adds y to x element-wise.
	add func(x, y []float32)
	// gelu sets x = gelu(x + bias) (exact, erf form); bias may be nil.
	gelu func(x, bias []float32)
}

var goVec = &vecOps{max: maxGo, expSum: expSumGo, scale: scaleGo, add: addGo, gelu: geluBiasGo}

func maxGo(x []float32) float32 {
	m := negInf
	for _, v := range x {
		if v > m {
			m = v
		}
	}
	return m
}

func expSumGo(x []float32, scale, shift float32) float32 {
	var s float32
	for i, v := range x {
		e := expf(v*scale - shift)
		x[i] = e
		s += e
	}
	return s
}

func scaleGo(x []float32, s float32) {
	for i := range x {
		x[i] *= s
	}
}

func addGo(x, y []float32) {
	y = y[:len(x)]
	for i := range x {
		x[i] += y[i]
	}
}

func geluBiasGo(x, bias []float32) {
	if bias != nil {
		addGo(x, bias)
	}
	for i, v := range x {
		x[i] = gelu(v)
	}
}

// softmaxRow sets x = softmax(scale*x) with the active primitives.
func softmaxRow(v *vecOps, x []float32, scale float32) {
	if len(x) == 0 {
		return
	}
	m := v.max(x)
	s := v.expSum(x, scale, scale*m)
	v.scale(x, 1/s)
}

var negInf = float32(math.Inf(-1))
