package nn

import (
	"fmt"

	"github.com/bertstream/bertstream/kernels"
)

// Args checks the arguments of the Backend operations the same way for
// every backend, so that each refuses the same calls with the same words;
// a backend supplies only what differs: how a float operand is checked
// (its compute dtype, its device) and where the host copy of an index
// tensor is. Each method returns the sizes the operation runs with.
type Args struct {
	// Float reports why t cannot be a float operand named name, or nil.
	Float func(name string, t *Tensor) error
	// Index returns the values of the I32 tensor t (host memory, read
	// before any kernel uses them) or why it cannot be an index operand.
	Index func(name string, t *Tensor) ([]int32, error)
}

func (a Args) floats(names []string, ts ...*Tensor) error {
	for i, t := range ts {
		if t == nil {
			return fmt.Errorf("%s is nil", names[i])
		}
		if err := a.Float(names[i], t); err != nil {
			return err
		}
	}
	return nil
}

func (a Args) index(name string, t *Tensor) ([]int32, error) {
	if t == nil {
		return nil, fmt.Errorf("%s is nil", name)
	}
	if t.DType() != I32 {
		return nil, fmt.Errorf("%s %v: want I32", name, t)
	}
	return a.Index(name, t)
}

// Weight checks a linear layer's weight [n, k].
func (a Args) Weight(w *Tensor) error {
	if err := a.floats([]string{"weight"}, w); err != nil {
		return err
	}
	if w.Rank() != 2 {
		return fmt.Errorf("weight %v: want 2-D", w)
	}
	return nil
}

// Linear checks out [m, n] = x [m, k] * w [n, k]^T + bias [n].
func (a Args) Linear(out, x, w, bias *Tensor) (m, n, k int, err error) {
	if err := a.floats([]string{"out", "x"}, out, x); err != nil {
		return 0, 0, 0, err
	}
	if err := a.Weight(w); err != nil {
		return 0, 0, 0, err
	}
	n, k, m = w.Dim(0), w.Dim(1), x.Rows()
	if x.Cols() != k {
		return 0, 0, 0, fmt.Errorf("linear: x %v does not match weight %v", x, w)
	}
	if out.Rows() != m || out.Cols() != n {
		return 0, 0, 0, fmt.Errorf("linear: out %v, want %d x %d", out, m, n)
	}
	if bias != nil {
		if err := a.floats([]string{"bias"}, bias); err != nil {
			return 0, 0, 0, err
		}
		if bias.Len() != n {
			return 0, 0, 0, fmt.Errorf("linear: bias %v, want %d values", bias, n)
		}
	}
	return m, n, k, nil
}

// LayerNorm checks out = LayerNorm(x + res)*gamma + beta over rows of
// cols values; res may be nil.
func (a Args) LayerNorm(out, x, res, gamma, beta *Tensor) (rows, cols int, err error) {
	if err := a.floats([]string{"out", "x", "gamma", "beta"}, out, x, gamma, beta); err != nil {
		return 0, 0, err
	}
	cols = x.Cols()
	if out.Len() != x.Len() || out.Cols() != cols {
		return 0, 0, fmt.Errorf("layernorm: out %v does not match x %v", out, x)
	}
	if gamma.Len() != cols || beta.Len() != cols {
		return 0, 0, fmt.Errorf("layernorm: gamma %v / beta %v, want %d values", gamma, beta, cols)
	}
	if res != nil {
		if err := a.floats([]string{"residual"}, res); err != nil {
			return 0, 0, err
		}
		if res.Len() != x.Len() {
			return 0, 0, fmt.Errorf("layernorm: residual %v does not match x %v", res, x)
		}
	}
	return x.Rows(), cols, nil
}

// seqs checks packed-sequence offsets over n rows and returns them with
// the longest sequence; maxLen < 0 sets no bound.
func (a Args) seqs(seqs *Tensor, n, maxLen int) ([]int32, int, error) {
	s, err := a.index("sequence offsets", seqs)
	if err != nil {
		return nil, 0, err
	}
	if len(s) == 0 || s[0] != 0 || int(s[len(s)-1]) != n {
		return nil, 0, fmt.Errorf("sequence offsets %v: want 0 first and %d (the rows) last", seqs, n)
	}
	longest := 0
	for b := 1; b < len(s); b++ {
		l := int(s[b]) - int(s[b-1])
		if l < 0 {
			return nil, 0, fmt.Errorf("sequence offsets decrease at %d: %d then %d", b, s[b-1], s[b])
		}
		if maxLen >= 0 && l > maxLen {
			return nil, 0, fmt.Errorf("sequence %d has %d tokens, over the %d given as the longest", b-1, l, maxLen)
		}
		longest = max(longest, l)
	}
	return s, longest, nil
}

// Attention checks fused attention over packed sequences: qkv [n, 3H],
// out [n, H], offsets seqs [B+1]. It returns the offsets, H and the
// longest sequence.
func (a Args) Attention(out, qkv, seqs *Tensor, maxLen, heads int) (s []int32, hidden, longest int, err error) {
	if err := a.floats([]string{"out", "qkv"}, out, qkv); err != nil {
		return nil, 0, 0, err
	}
	if qkv.Cols()%3 != 0 {
		return nil, 0, 0, fmt.Errorf("attention: qkv %v: want [n, 3H]", qkv)
	}
	n, h := qkv.Rows(), qkv.Cols()/3
	if heads <= 0 || h%heads != 0 {
		return nil, 0, 0, fmt.Errorf("attention: hidden %d not divisible by %d heads", h, heads)
	}
	if out.Len() != n*h {
		return nil, 0, 0, fmt.Errorf("attention: out %v, want [%d, %d]", out, n, h)
	}
	s, longest, err = a.seqs(seqs, n, maxLen)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("attention: %w", err)
	}
	return s, h, longest, nil
}

// EmbedIndexes are the host copies of Embed's index operands; Types is
// nil when the call has no token types.
type EmbedIndexes struct {
	IDs, Types, Positions []int32
}

// Embed checks the embedding of n = ids.Len() tokens into out [n, H] and
// every index against its table; types may be nil.
func (a Args) Embed(out, ids, types, positions, word, pos, typ, gamma, beta *Tensor) (ix EmbedIndexes, hidden int, err error) {
	if err := a.floats([]string{"out"}, out); err != nil {
		return ix, 0, err
	}
	if ix.IDs, err = a.index("ids", ids); err != nil {
		return ix, 0, err
	}
	if ix.Positions, err = a.index("positions", positions); err != nil {
		return ix, 0, err
	}
	if err := a.floats([]string{"word embeddings", "position embeddings", "token type embeddings", "gamma", "beta"},
		word, pos, typ, gamma, beta); err != nil {
		return ix, 0, err
	}
	n, h := ids.Len(), word.Cols()
	if out.Len() != n*h {
		return ix, 0, fmt.Errorf("embed: out %v, want [%d, %d]", out, n, h)
	}
	if positions.Len() != n {
		return ix, 0, fmt.Errorf("embed: positions %v do not match ids %v", positions, ids)
	}
	if pos.Cols() != h || typ.Cols() != h || gamma.Len() != h || beta.Len() != h {
		return ix, 0, fmt.Errorf("embed: tables of hidden size %d, %d, %d do not match %d", pos.Cols(), typ.Cols(), gamma.Len(), h)
	}
	if types != nil {
		if ix.Types, err = a.index("token types", types); err != nil {
			return ix, 0, err
		}
		if types.Len() != n {
			return ix, 0, fmt.Errorf("embed: token types %v do not match ids %v", types, ids)
		}
	}
	if err := kernels.CheckEmbedIndexes(ix.IDs, ix.Types, ix.Positions, word.Rows(), pos.Rows(), typ.Rows()); err != nil {
		return ix, 0, fmt.Errorf("embed: %w", err)
	}
	return ix, h, nil
}

// rows checks that every index names one of n rows.
func rows(op string, idx []int32, n int) error {
	for i, r := range idx {
		if r < 0 || int(r) >= n {
			return fmt.Errorf("%s: index %d at %d outside %d rows", op, r, i, n)
		}
	}
	return nil
}

// rowOperands checks the operands Gather and Scatter share: two float
// tensors and an index.
func (a Args) rowOperands(out, x, idx *Tensor) ([]int32, error) {
	if err := a.floats([]string{"out", "x"}, out, x); err != nil {
		return nil, err
	}
	return a.index("index", idx)
}

// Gather checks out [len(idx), H] = rows idx of x [n, H].
func (a Args) Gather(out, x, idx *Tensor) ([]int32, error) {
	iv, err := a.rowOperands(out, x, idx)
	if err != nil {
		return nil, err
	}
	h := x.Cols()
	if out.Cols() != h || out.Rows() != idx.Len() {
		return nil, fmt.Errorf("gather: out %v, want [%d, %d]", out, idx.Len(), h)
	}
	return iv, rows("gather", iv, x.Rows())
}

// Scatter checks row i of x [m, H] into row idx[i] of out [n, H]: the
// indices must be distinct, since a row named twice would get whichever
// write came last, which a parallel device does not define.
func (a Args) Scatter(out, x, idx *Tensor) ([]int32, error) {
	iv, err := a.rowOperands(out, x, idx)
	if err != nil {
		return nil, err
	}
	h := x.Cols()
	if out.Cols() != h || x.Rows() != idx.Len() {
		return nil, fmt.Errorf("scatter: out %v, x %v and index %v do not fit", out, x, idx)
	}
	n := out.Rows()
	if err := rows("scatter", iv, n); err != nil {
		return nil, err
	}
	// Unpadding gives increasing rows, distinct by construction; other
	// orders are checked the slow way.
	increasing := true
	for i := 1; i < len(iv) && increasing; i++ {
		increasing = iv[i] > iv[i-1]
	}
	if !increasing {
		first := make([]int32, n)
		for i, r := range iv {
			if first[r] != 0 {
				return nil, fmt.Errorf("scatter: row %d named at %d and %d", r, first[r]-1, i)
			}
			first[r] = int32(i + 1)
		}
	}
	return iv, nil
}

// Pool checks the pooling of x [n, H] into out [B, H] over offsets seqs
// [B+1].
func (a Args) Pool(out, x, seqs *Tensor) ([]int32, error) {
	if err := a.floats([]string{"out", "x"}, out, x); err != nil {
		return nil, err
	}
	s, _, err := a.seqs(seqs, x.Rows(), -1)
	if err != nil {
		return nil, fmt.Errorf("pool: %w", err)
	}
	h := x.Cols()
	if out.Len() != (len(s)-1)*h {
		return nil, fmt.Errorf("pool: out %v, want [%d, %d]", out, len(s)-1, h)
	}
	return s, nil
}
