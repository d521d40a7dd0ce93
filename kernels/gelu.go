package kernels

import (
	"fmt"
	"math"
	"sync"
)

// Act names an element-wise activation.
type Act uint8

const (
	ActNone     Act = iota
	ActGELU         // exact: x/2 * (1 + erf(x/sqrt 2)), HF "gelu"
	ActGELUTanh     // tanh approximation, HF "gelu_new" / "gelu_pytorch_tanh"
	ActReLU
	ActTanh
)

func (a Act) String() string {
	switch a {
	case ActNone:
		return "none"
	case ActGELU:
		return "gelu"
	case ActGELUTanh:
		return "gelu_tanh"
	case ActReLU:
		return "relu"
	case ActTanh:
		return "tanh"
	}
	return fmt.Sprintf("Act(%d)", uint8(a))
}

// The references compute in float64, so that they are as exact as the
// formula.

// GELURef is x/2 * (1 + erf(x/sqrt 2)).
func GELURef(x float32) float32 {
	v := float64(x)
	return float32(0.5 * v * (1 + math.Erf(v/math.Sqrt2)))
}

// GELUTanhRef is GELU's tanh approximation.
func GELUTanhRef(x float32) float32 {
	v := float64(x)
	return float32(0.5 * v * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(v+0.044715*v*v*v))))
}

// actRef applies a to one value.
func actRef(a Act, x float32) float32 {
	switch a {
	case ActGELU:
		return GELURef(x)
	case ActGELUTanh:
		return GELUTanhRef(x)
	case ActReLU:
		if x < 0 {
			return 0
		}
		return x
	case ActTanh:
		return float32(math.Tanh(float64(x)))
	}
	return x
}

// BiasActRef adds bias (length cols, may be nil) to every row of x and
// applies a, in place.
func BiasActRef(x []float32, rows, cols int, bias []float32, a Act) {
	for r := 0; r < rows; r++ {
		row := x[r*cols : (r+1)*cols]
		for j := range row {
			v := row[j]
			if bias != nil {
				v += bias[j]
			}
			row[j] = actRef(a, v)
		}
	}
}

// Fast activations: float32 polynomial approximations instead of the
// float64 math package calls of the references, accurate to a few ulps of
// float32 in the range BERT's activations take.

// expf is e^x in float32: x = n*ln2 + r with |r| <= ln2/2 (Cody-Waite
// split of ln2 so that r is exact), e^r by its Taylor polynomial to degree
// 7, 2^n by building the exponent bits. Relative error below 2e-7; it
// saturates to 0 and +Inf outside the float32 range.
func expf(x float32) float32 {
	if x < -87.3 {
		return 0
	}
	if x > 88.7 {
		return float32(math.Inf(1))
	}
	n := float32(math.Floor(float64(x*1.44269504088896341 + 0.5)))
	r := x - n*0.693359375
	r -= n * -2.12194440e-4
	p := float32(1.0 / 5040)
	p = p*r + 1.0/720
	p = p*r + 1.0/120
	p = p*r + 1.0/24
	p = p*r + 1.0/6
	p = p*r + 0.5
	p = p*r + 1
	p = p*r + 1
	return p * math.Float32frombits(uint32(int32(n)+127)<<23)
}

// erfcPos is erfc(z) for z >= 0 by Abramowitz and Stegun 7.1.26 (absolute
// error below 1.5e-7).
func erfcPos(z float32) float32 {
	t := 1 / (1 + 0.3275911*z)
	p := float32(1.061405429)
	p = p*t - 1.453152027
	p = p*t + 1.421413741
	p = p*t - 0.284496736
	p = p*t + 0.254829592
	return p * t * expf(-z*z)
}

// geluSat is the |x/sqrt 2| beyond which gelu returns its limit, x for
// x > 0 and x*0 for x < 0 (-0, and NaN for -Inf, as GELURef). Up to it
// erfcPos's intermediates stay normal floats; a little further (9.19)
// t*p*e^(-z²) falls below 2^-126, and subnormal arithmetic, without
// flush-to-zero (Go leaves MXCSR at its default), runs about 3x slower
// in the vector code. At 9.1 the product is still 6x the smallest normal,
// room for the few ulps the vector versions differ by, and x - x/2*erfc
// has long since rounded to x, so that only results below 1e-36 change.
// vec_amd64.s has the same constant (GELUSAT).
const geluSat = 9.1

// gelu is x/2 * (1 + erf(x/sqrt 2)), written with erfc so that negative x,
// where the result is a small difference, keeps its accuracy.
func gelu(x float32) float32 {
	z := x * 0.7071067811865476
	if z > geluSat {
		return x
	}
	if z < -geluSat {
		return x * 0
	}
	if z >= 0 {
		return x - 0.5*x*erfcPos(z)
	}
	return 0.5 * x * erfcPos(-z)
}

// tanhf is tanh by e^(2x), exact to float32 rounding away from 0 and by
// its odd Taylor series near 0 where 1 - 2/(e^2x + 1) would cancel.
func tanhf(x float32) float32 {
	ax := x
	if ax < 0 {
		ax = -ax
	}
	if ax < 0.04 {
		x2 := x * x
		return x * (1 - x2*(1.0/3-x2*(2.0/15)))
	}
	if ax > 9 {
		return float32(math.Copysign(1, float64(x)))
	}
	t := 1 - 2/(expf(2*ax)+1)
	if x < 0 {
		return -t
	}
	return t
}

func geluTanh(x float32) float32 {
	return 0.5 * x * (1 + tanhf(0.7978845608028654*(x+0.044715*x*x*x)))
}

// geluBiasGo is the portable vector GELU (vecOps.gelu): x = gelu(x +
// bias), bias may be nil.
func geluBiasGo(x, bias []float32) {
	if bias != nil {
		addGo(x, bias)
	}
	for i, v := range x {
		x[i] = gelu(v)
	}
}

// biasAct adds bias (len(row) values, may be nil) to row and applies a
// with the primitives v.
func biasAct(v *vecOps, row, bias []float32, a Act) {
	if a == ActGELU {
		v.gelu(row, bias)
		return
	}
	if bias != nil {
		v.add(row, bias)
	}
	switch a {
	case ActGELUTanh:
		for j, x := range row {
			row[j] = geluTanh(x)
		}
	case ActReLU:
		for j, x := range row {
			row[j] = max(x, 0)
		}
	case ActTanh:
		for j, x := range row {
			row[j] = tanhf(x)
		}
	}
}

// BiasAct adds bias (cols values, may be nil) to every row of x (rows x
// cols) and applies a, in place, across cores: the fast BiasActRef.
func (e *Engine) BiasAct(x []float32, rows, cols int, bias []float32, a Act) {
	if (bias == nil && a == ActNone) || rows*cols == 0 {
		return
	}
	t := biasActTasks.Get().(*biasActTask)
	*t = biasActTask{x: x[:rows*cols], cols: cols, bias: bias, act: a, vec: e.vec}
	if bias == nil {
		// Without a bias the rows are one vector: cut it anywhere.
		t.cols = min(rows*cols, 1<<14)
		rows = (rows*cols + t.cols - 1) / t.cols
	}
	// Tasks of about 16K values: enough to pay for the hand-over, small
	// enough to balance the cores.
	t.per = max(1, (1<<14)/t.cols)
	parallel(e.Threads(), (rows+t.per-1)/t.per, t)
	*t = biasActTask{}
	biasActTasks.Put(t)
}

type biasActTask struct {
	x         []float32
	cols, per int
	bias      []float32
	act       Act
	vec       *vecOps
}

var biasActTasks = sync.Pool{New: func() any { return new(biasActTask) }}

func (t *biasActTask) run(i int, _ *scratch) {
	lo := i * t.per * t.cols
	hi := min(lo+t.per*t.cols, len(t.x))
	for r := lo; r < hi; r += t.cols {
		biasAct(t.vec, t.x[r:min(r+t.cols, hi)], t.bias, t.act)
	}
}
