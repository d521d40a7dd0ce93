package kernels

import (
	"fmt"
	"math"
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

// ActivationRef applies a to one value, in float64 so that the reference
// is as exact as the formula.
func ActivationRef(a Act, x float32) float32 {
	v := float64(x)
	switch a {
	case ActGELU:
		return float32(0.5 * v * (1 + math.Erf(v/math.Sqrt2)))
	case ActGELUTanh:
		return float32(0.5 * v * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(v+0.044715*v*v*v))))
	case ActReLU:
		if v < 0 {
			return 0
		}
		return x
	case ActTanh:
		return float32(math.Tanh(v))
	}
	return x
}

// GemmRef computes C = alpha*op(A)*op(B) + beta*C for row-major matrices,
// where op(X) is X or its transpose. op(A) is m x k, op(B) is k x n.
func GemmRef(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var sum float64
			for p := 0; p < k; p++ {
				var av, bv float32
				if transA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if transB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				sum += float64(av) * float64(bv)
			}
			prev := float32(0)
			if beta != 0 {
				prev = beta * c[i*ldc+j]
			}
			c[i*ldc+j] = alpha*float32(sum) + prev
		}
	}
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
			row[j] = ActivationRef(a, v)
		}
	}
}

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

// SoftmaxRef computes, for each row of x (rows x cols), the softmax of
// scale*x over the columns whose key mask is non-zero, in place; masked
// columns become 0. keyMask has cols entries per group of rowsPerMask rows
// (attention: one mask row per batch item covers heads*Tq score rows); a
// nil mask attends everywhere. A row with no unmasked column gets the
// softmax over all columns, which is what BERT's additive -10000 mask
// gives.
func SoftmaxRef(x []float32, rows, cols int, scale float32, keyMask []int32, rowsPerMask int) {
	for r := 0; r < rows; r++ {
		row := x[r*cols : (r+1)*cols]
		var m []int32
		if keyMask != nil {
			g := r / rowsPerMask
			m = keyMask[g*cols : (g+1)*cols]
			any := false
			for _, v := range m {
				if v != 0 {
					any = true
					break
				}
			}
			if !any {
				m = nil
			}
		}
		maxv := math.Inf(-1)
		for j, v := range row {
			if m != nil && m[j] == 0 {
				continue
			}
			maxv = math.Max(maxv, float64(scale*v))
		}
		var sum float64
		for j, v := range row {
			if m != nil && m[j] == 0 {
				continue
			}
			sum += math.Exp(float64(scale*v) - maxv)
		}
		for j, v := range row {
			if m != nil && m[j] == 0 {
				row[j] = 0
				continue
			}
			row[j] = float32(math.Exp(float64(scale*v)-maxv) / sum)
		}
	}
}

// EmbedLayerNormRef computes the embeddings of n tokens: for token i, row
// ids[i] of word, row positions[i] of pos and row types[i] of typ (types
// may be nil: all 0) summed, then LayerNorm. out is n x hidden. It returns
// an error naming the first index out of range instead of reading outside
// a table.
func EmbedLayerNormRef(out []float32, ids, types, positions []int32, hidden int, word, pos, typ []float32, gamma, beta []float32, eps float32) error {
	if err := CheckEmbedIndexes(ids, types, positions, len(word)/hidden, len(pos)/hidden, len(typ)/hidden); err != nil {
		return err
	}
	for i, id := range ids {
		ty := int32(0)
		if types != nil {
			ty = types[i]
		}
		o := out[i*hidden : (i+1)*hidden]
		w := word[int(id)*hidden:]
		p := pos[int(positions[i])*hidden:]
		t := typ[int(ty)*hidden:]
		for j := range o {
			o[j] = w[j] + p[j] + t[j]
		}
	}
	LayerNormRef(out, out, nil, len(ids), hidden, gamma, beta, eps)
	return nil
}

// CheckEmbedIndexes reports the first id, position or type (types may be
// nil) outside a table of vocab, npos or ntypes rows, and lengths that
// differ; every backend's embedding checks its indexes with it.
func CheckEmbedIndexes(ids, types, positions []int32, vocab, npos, ntypes int) error {
	if len(positions) != len(ids) || (types != nil && len(types) != len(ids)) {
		return fmt.Errorf("%d ids, %d positions and %d token types differ", len(ids), len(positions), len(types))
	}
	for i, id := range ids {
		if id < 0 || int(id) >= vocab {
			return fmt.Errorf("token id %d at %d outside the vocabulary of %d", id, i, vocab)
		}
		if p := positions[i]; p < 0 || int(p) >= npos {
			return fmt.Errorf("position %d at %d outside the %d position embeddings", p, i, npos)
		}
		if types != nil {
			if ty := types[i]; ty < 0 || int(ty) >= ntypes {
				return fmt.Errorf("token type %d at %d outside the %d token types", ty, i, ntypes)
			}
		}
	}
	return nil
}

// Pooling names how a sequence of token vectors becomes one vector.
type Pooling uint8

const (
	PoolCLS  Pooling = iota // the first token
	PoolMean                // mean over tokens whose mask is non-zero
	PoolMax                 // element-wise max over tokens whose mask is non-zero
)

func (p Pooling) String() string {
	switch p {
	case PoolCLS:
		return "cls"
	case PoolMean:
		return "mean"
	case PoolMax:
		return "max"
	}
	return fmt.Sprintf("Pooling(%d)", uint8(p))
}

// PoolRef pools the rows of x (n x hidden) of each sequence into out
// (len(seqs)-1 x hidden): sequence b is rows seqs[b] to seqs[b+1] of x, all
// of them real tokens. An empty sequence pools to zeros.
func PoolRef(out, x []float32, seqs []int32, hidden int, p Pooling) {
	for b := 0; b+1 < len(seqs); b++ {
		o := out[b*hidden : (b+1)*hidden]
		lo, hi := int(seqs[b]), int(seqs[b+1])
		if lo == hi {
			clear(o)
			continue
		}
		copy(o, x[lo*hidden:(lo+1)*hidden])
		if p == PoolCLS {
			continue
		}
		for t := lo + 1; t < hi; t++ {
			row := x[t*hidden : (t+1)*hidden]
			for j, v := range row {
				if p == PoolMax {
					o[j] = max(o[j], v)
				} else {
					o[j] += v
				}
			}
		}
		if p == PoolMean {
			for j := range o {
				o[j] /= float32(hi - lo)
			}
		}
	}
}
