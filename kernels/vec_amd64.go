//go:build amd64 && !noasm

package kernels

// Vector primitives in vec_amd64.s. The AVX-512 ones take any n (the tail
// is masked); the AVX2 ones take n a multiple of 8, their wrappers finish
// the tail in Go.

//go:noescape
func maxAVX512(x *float32, n int) float32

//go:noescape
func expSumAVX512(x *float32, n int, scale, shift float32) float32

//go:noescape
func scaleAVX512(x *float32, n int, s float32)

//go:noescape
func addAVX512(x, y *float32, n int)

//go:noescape
func geluAVX512(x, bias *float32, n int)

//go:noescape
func sumAVX512(x *float32, n int) float32

//go:noescape
func sqDevAVX512(x *float32, n int, mean float32) float32

//go:noescape
func normAVX512(x, gamma, beta *float32, n int, mean, inv float32)

//go:noescape
func sumAVX2(x *float32, n int) float32

//go:noescape
func sqDevAVX2(x *float32, n int, mean float32) float32

//go:noescape
func normAVX2(x, gamma, beta *float32, n int, mean, inv float32)

//go:noescape
func maxAVX2(x *float32, n int) float32

//go:noescape
func expSumAVX2(x *float32, n int, scale, shift float32) float32

//go:noescape
func scaleAVX2(x *float32, n int, s float32)

//go:noescape
func addAVX2(x, y *float32, n int)

//go:noescape
func geluAVX2(x, bias *float32, n int)

var avx512Vec = &vecOps{
	max: func(x []float32) float32 {
		if len(x) == 0 {
			return negInf
		}
		return maxAVX512(&x[0], len(x))
	},
	expSum: func(x []float32, scale, shift float32) float32 {
		if len(x) == 0 {
			return 0
		}
		return expSumAVX512(&x[0], len(x), scale, shift)
	},
	scale: func(x []float32, s float32) {
		if len(x) > 0 {
			scaleAVX512(&x[0], len(x), s)
		}
	},
	add: func(x, y []float32) {
		if len(x) > 0 {
			y = y[:len(x)]
			addAVX512(&x[0], &y[0], len(x))
		}
	},
	gelu: func(x, bias []float32) {
		if len(x) == 0 {
			return
		}
		var b *float32
		if bias != nil {
			b = &bias[:len(x)][0]
		}
		geluAVX512(&x[0], b, len(x))
	},
	sum: func(x []float32) float32 {
		if len(x) == 0 {
			return 0
		}
		return sumAVX512(&x[0], len(x))
	},
	sqDev: func(x []float32, mean float32) float32 {
		if len(x) == 0 {
			return 0
		}
		return sqDevAVX512(&x[0], len(x), mean)
	},
	norm: func(x, gamma, beta []float32, mean, inv float32) {
		if len(x) > 0 {
			gamma, beta = gamma[:len(x)], beta[:len(x)]
			normAVX512(&x[0], &gamma[0], &beta[0], len(x), mean, inv)
		}
	},
}

var avx2Vec = &vecOps{
	max: func(x []float32) float32 {
		n := len(x) &^ 7
		m := float32(negInf)
		if n > 0 {
			m = maxAVX2(&x[0], n)
		}
		return max(m, maxGo(x[n:]))
	},
	expSum: func(x []float32, scale, shift float32) float32 {
		n := len(x) &^ 7
		var s float32
		if n > 0 {
			s = expSumAVX2(&x[0], n, scale, shift)
		}
		return s + expSumGo(x[n:], scale, shift)
	},
	scale: func(x []float32, s float32) {
		n := len(x) &^ 7
		if n > 0 {
			scaleAVX2(&x[0], n, s)
		}
		scaleGo(x[n:], s)
	},
	add: func(x, y []float32) {
		y = y[:len(x)]
		n := len(x) &^ 7
		if n > 0 {
			addAVX2(&x[0], &y[0], n)
		}
		addGo(x[n:], y[n:])
	},
	gelu: func(x, bias []float32) {
		n := len(x) &^ 7
		if n > 0 {
			var b *float32
			if bias != nil {
				b = &bias[:len(x)][0]
			}
			geluAVX2(&x[0], b, n)
		}
		var bt []float32
		if bias != nil {
			bt = bias[n:len(x)]
		}
		geluBiasGo(x[n:], bt)
	},
	sum: func(x []float32) float32 {
		n := len(x) &^ 7
		var s float32
		if n > 0 {
			s = sumAVX2(&x[0], n)
		}
		return s + sumGo(x[n:])
	},
	sqDev: func(x []float32, mean float32) float32 {
		n := len(x) &^ 7
		var s float32
		if n > 0 {
			s = sqDevAVX2(&x[0], n, mean)
		}
		return s + sqDevGo(x[n:], mean)
	},
	norm: func(x, gamma, beta []float32, mean, inv float32) {
		gamma, beta = gamma[:len(x)], beta[:len(x)]
		n := len(x) &^ 7
		if n > 0 {
			normAVX2(&x[0], &gamma[0], &beta[0], n, mean, inv)
		}
		normGo(x[n:], gamma[n:], beta[n:], mean, inv)
	},
}
