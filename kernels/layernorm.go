package kernels

import "math"

// LayerNormRef computes out = LayerNorm(x + res) * gamma + beta row by
// row (res may be nil). out may alias x or res.
func LayerNormRef(out, x, res []float32, rows, cols int, gamma, beta []float32, eps float32) {
	tmp := make([]float64, cols)
	for r := 0; r < rows; r++ {
		var mean float64
		for j := 0; j < cols; j++ {
			v := float64(x[r*cols+j])
			if res != nil {
				v += float64(res[r*cols+j])
			}
			tmp[j] = v
			mean += v
		}
		mean /= float64(cols)
		var variance float64
		for j := 0; j < cols; j++ {
			d := tmp[j] - mean
			variance += d * d
		}
		variance /= float64(cols)
		inv := 1 / math.Sqrt(variance+float64(eps))
		for j := 0; j < cols; j++ {
			out[r*cols+j] = float32((tmp[j]-mean)*inv*float64(gamma[j]) + float64(beta[j]))
		}
	}
}

// LayerNorm is the fast LayerNormRef: out = LayerNorm(x + res)*gamma +
// beta per row, with the vector primitives across cores; res may be nil
// and out may alias x or res.
func (e *Engine) LayerNorm(out, x, res []float32, rows, cols int, gamma, beta []float32, eps float32) {
	if rows*cols == 0 {
		return
	}
	t := rowTasks.Get().(*rowTask)
	*t = rowTask{fn: layerNormRows, rows: rows, cols: cols, vec: e.vec, out: out, x: x, res: res, gamma: gamma, beta: beta, eps: eps}
	runRows(e.Threads(), t)
}

func layerNormRows(t *rowTask, lo, hi int) {
	c := t.cols
	for r := lo; r < hi; r++ {
		o := t.out[r*c : (r+1)*c]
		x := t.x[r*c : (r+1)*c]
		if t.res != nil {
			res := t.res[r*c : (r+1)*c]
			if &o[0] != &res[0] {
				copy(o, x)
				x = res
			}
			t.vec.add(o, x)
		} else if &o[0] != &x[0] {
			copy(o, x)
		}
		layerNorm(t.vec, o, t.gamma, t.beta, t.eps)
	}
}

// layerNorm normalises x in place with the vector primitives: two
// passes (the mean, then the variance around it) so that a large mean
// does not cost the variance its precision, then the affine map.
func layerNorm(v *vecOps, x, gamma, beta []float32, eps float32) {
	n := float32(len(x))
	mean := v.sum(x) / n
	inv := float32(1 / math.Sqrt(float64(v.sqDev(x, mean)/n)+float64(eps)))
	v.norm(x, gamma[:len(x)], beta[:len(x)], mean, inv)
}
