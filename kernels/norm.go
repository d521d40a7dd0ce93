package kernels

import (
	"math"
	"sync"
)

// rowTask runs a row kernel over blocks of rows on all cores.
type rowTask struct {
	fn        func(t *rowTask, lo, hi int, v *vecOps)
	rows, per int
	vec       *vecOps

	out, x, res, gamma, beta []float32
	cols                     int
	eps, scale               float32
	ids, types, positions    []int32
	word, pos, typ           []float32
	mask                     []int32
	rowsPerMask              int
}

var rowTasks = sync.Pool{New: func() any { return new(rowTask) }}

func (t *rowTask) run(i int, _ *scratch) {
	lo := i * t.per
	t.fn(t, lo, min(lo+t.per, t.rows), t.vec)
}

// runRows runs t.fn over t.rows rows of t.cols values, in blocks of about
// 16K values: enough to pay for handing a block to another core.
func runRows(t *rowTask) {
	t.vec = activeVec.Load()
	t.per = max(1, (1<<14)/max(t.cols, 1))
	parallel((t.rows+t.per-1)/t.per, t)
	*t = rowTask{}
	rowTasks.Put(t)
}

// LayerNorm computes out = LayerNorm(x + res)*gamma + beta per row; res
// may be nil and out may alias x or res.
func LayerNorm(out, x, res []float32, rows, cols int, gamma, beta []float32, eps float32) {
	if rows*cols == 0 {
		return
	}
	t := rowTasks.Get().(*rowTask)
	*t = rowTask{fn: layerNormRows, rows: rows, cols: cols, out: out, x: x, res: res, gamma: gamma, beta: beta, eps: eps}
	runRows(t)
}

func layerNormRows(t *rowTask, lo, hi int, v *vecOps) {
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
			v.add(o, x)
		} else if &o[0] != &x[0] {
			copy(o, x)
		}
		layerNorm(v, o, t.gamma, t.beta, t.eps)
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

// EmbedLayerNorm is the fast version of EmbedLayerNormRef, across cores.
func EmbedLayerNorm(out []float32, ids, types, positions []int32, hidden int, word, pos, typ []float32, gamma, beta []float32, eps float32) error {
	if err := CheckEmbedIndexes(ids, types, positions, len(word)/hidden, len(pos)/hidden, len(typ)/hidden); err != nil {
		return err
	}
	if len(ids) == 0 {
		return nil
	}
	t := rowTasks.Get().(*rowTask)
	*t = rowTask{fn: embedRows, rows: len(ids), cols: hidden, out: out, gamma: gamma, beta: beta, eps: eps,
		ids: ids, types: types, positions: positions, word: word, pos: pos, typ: typ}
	runRows(t)
	return nil
}

func embedRows(t *rowTask, lo, hi int, v *vecOps) {
	c := t.cols
	for i := lo; i < hi; i++ {
		o := t.out[i*c : (i+1)*c]
		copy(o, t.word[int(t.ids[i])*c:])
		v.add(o, t.pos[int(t.positions[i])*c:])
		ty := 0
		if t.types != nil {
			ty = int(t.types[i])
		}
		v.add(o, t.typ[ty*c:])
		layerNorm(v, o, t.gamma, t.beta, t.eps)
	}
}

// Softmax computes, for each row of x (rows x cols), the softmax of
// scale*x over the columns whose key mask is non-zero, as SoftmaxRef does
// (same mask layout, masked columns become 0, a row with no unmasked
// column attends everywhere), with the vector primitives across cores.
func Softmax(x []float32, rows, cols int, scale float32, keyMask []int32, rowsPerMask int) {
	if rows*cols == 0 {
		return
	}
	t := rowTasks.Get().(*rowTask)
	*t = rowTask{fn: softmaxRows, rows: rows, cols: cols, x: x, scale: scale, mask: keyMask, rowsPerMask: rowsPerMask}
	runRows(t)
}

func softmaxRows(t *rowTask, lo, hi int, v *vecOps) {
	c := t.cols
	for r := lo; r < hi; r++ {
		row := t.x[r*c : (r+1)*c]
		var m []int32
		if t.mask != nil {
			g := r / t.rowsPerMask
			m = t.mask[g*c : (g+1)*c]
			any := false
			for _, k := range m {
				if k != 0 {
					any = true
					break
				}
			}
			if !any {
				m = nil
			}
		}
		if m == nil {
			softmaxRow(v, row, t.scale)
			continue
		}
		// Masked columns drop out of the maximum and the sum: -Inf
		// before, exact zeros after.
		for j, k := range m {
			if k == 0 {
				row[j] = negInf
			}
		}
		softmaxRow(v, row, t.scale)
		for j, k := range m {
			if k == 0 {
				row[j] = 0
			}
		}
	}
}
