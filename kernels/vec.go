package kernels

import "math"

// Vector primitives of the element-wise kernels (attention's softmax, GELU,
// bias, LayerNorm), shared by several ops. Each has a portable Go version
// and, on amd64, AVX2 and AVX-512 versions in vec_amd64.s; a kernel
// version (see version.go) pairs one set with its SGEMM micro-kernel. The
// Go GELU, geluBiasGo, is in gelu.go.

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
	// sum returns the sum of x; sqDev the sum of (x[i]-mean)^2.
	sum   func(x []float32) float32
	sqDev func(x []float32, mean float32) float32
	// norm sets x = (x-mean)*inv*gamma + beta.
	norm func(x, gamma, beta []float32, mean, inv float32)
}

var goVec = &vecOps{max: maxGo, expSum: expSumGo, scale: scaleGo, add: addGo, gelu: geluBiasGo,
	sum: sumGo, sqDev: sqDevGo, norm: normGo}

// sumGo and sqDevGo keep four partial sums, which breaks the chain of
// dependent additions.
func sumGo(x []float32) float32 {
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(x); i += 4 {
		s0 += x[i]
		s1 += x[i+1]
		s2 += x[i+2]
		s3 += x[i+3]
	}
	for ; i < len(x); i++ {
		s0 += x[i]
	}
	return s0 + s1 + s2 + s3
}

func sqDevGo(x []float32, mean float32) float32 {
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(x); i += 4 {
		d0, d1, d2, d3 := x[i]-mean, x[i+1]-mean, x[i+2]-mean, x[i+3]-mean
		s0 += d0 * d0
		s1 += d1 * d1
		s2 += d2 * d2
		s3 += d3 * d3
	}
	for ; i < len(x); i++ {
		d := x[i] - mean
		s0 += d * d
	}
	return s0 + s1 + s2 + s3
}

func normGo(x, gamma, beta []float32, mean, inv float32) {
	gamma, beta = gamma[:len(x)], beta[:len(x)]
	for j, e := range x {
		x[j] = (e-mean)*inv*gamma[j] + beta[j]
	}
}

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

var negInf = float32(math.Inf(-1))
