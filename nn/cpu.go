package nn

import (
	"fmt"

	"github.com/bertstream/bertstream/kernels"
)

func init() {
	Register("cpu", func(opts Options) (Backend, error) {
		var c CPU
		switch opts.Compute {
		case 0, F32:
		case BF16:
			c.BF16Weights = true
		default:
			return nil, fmt.Errorf("the CPU backend computes in F32 (or with BF16 weights), not %s", opts.Compute)
		}
		// The kernels' thread count is process-wide: the last backend
		// opened with a limit sets it.
		if opts.Threads > 0 {
			kernels.SetThreads(opts.Threads)
		}
		return c, nil
	})
}

// CPU is the pure-Go backend: host memory, F32 compute, the kernels
// package's fastest versions for this processor.
type CPU struct {
	// BF16Weights makes the linear layers compute with weights and
	// activations rounded to bfloat16 and float32 sums (AVX512_BF16 where
	// the CPU has it); everything else stays F32.
	BF16Weights bool
}

func (CPU) Name() string   { return "cpu" }
func (CPU) Device() string { return "cpu" }
func (CPU) Compute() DType { return F32 }
func (CPU) Sync() error    { return nil }

func (CPU) New(s *Scope, dt DType, shape ...int) *Tensor { return newHostUninit(s, dt, shape...) }

func (c CPU) Upload(s *Scope, src *Tensor, dt DType) (*Tensor, error) {
	return convertHost(s, src, dt)
}

func (c CPU) Download(s *Scope, t *Tensor, dt DType) (*Tensor, error) {
	return convertHost(s, t, dt)
}

// convertHost copies a host tensor into a new one of dtype dt.
func convertHost(s *Scope, src *Tensor, dt DType) (*Tensor, error) {
	if _, ok := src.st.(*HostStorage); !ok {
		return nil, fmt.Errorf("tensor %v is not in host memory", src)
	}
	out := newHostUninit(s, dt, src.shape...)
	switch {
	case src.dtype == dt:
		copy(out.HostBytes(), src.HostBytes())
	case dt == F32 && src.dtype == F16:
		kernels.F16ToF32(out.F32(), src.U16())
	case dt == F32 && src.dtype == BF16:
		kernels.BF16ToF32(out.F32(), src.U16())
	case dt == F16 && src.dtype == F32:
		kernels.F32ToF16(out.U16(), src.F32())
	case dt == BF16 && src.dtype == F32:
		kernels.F32ToBF16(out.U16(), src.F32())
	case dt == I32 && src.dtype == I64:
		o := out.I32()
		for i, v := range src.I64() {
			if v != int64(int32(v)) {
				out.Release()
				return nil, fmt.Errorf("value %d at index %d does not fit I32", v, i)
			}
			o[i] = int32(v)
		}
	case dt == I64 && src.dtype == I32:
		o := out.I64()
		for i, v := range src.I32() {
			o[i] = int64(v)
		}
	default:
		out.Release()
		return nil, fmt.Errorf("no conversion from %s to %s", src.dtype, dt)
	}
	return out, nil
}

func check(cond bool, format string, args ...any) error {
	if cond {
		return nil
	}
	return fmt.Errorf(format, args...)
}

func checkAll(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

func isF32(name string, t *Tensor) error {
	if t == nil {
		return fmt.Errorf("%s is nil", name)
	}
	return check(t.dtype == F32, "%s %v: want F32", name, t)
}

func isI32(name string, t *Tensor) error {
	if t == nil {
		return fmt.Errorf("%s is nil", name)
	}
	return check(t.dtype == I32, "%s %v: want I32", name, t)
}

func (c CPU) PrepareWeight(w *Tensor) error {
	if err := checkAll(isF32("weight", w), check(w.Rank() == 2, "weight %v: want 2-D", w)); err != nil {
		return err
	}
	h := w.st.(*HostStorage)
	if c.BF16Weights {
		h.Prepared = kernels.PrepareWeightBF16(w.F32(), w.shape[0], w.shape[1])
	} else {
		h.Prepared = kernels.PrepareWeight(w.F32(), w.shape[0], w.shape[1])
	}
	return nil
}

func (c CPU) Linear(out, x, w, bias *Tensor, act Act) error {
	if err := checkAll(isF32("out", out), isF32("x", x), isF32("weight", w)); err != nil {
		return err
	}
	n, k := w.Dim(0), w.Dim(1)
	m := x.Rows()
	if err := checkAll(
		check(w.Rank() == 2, "weight %v: want 2-D", w),
		check(x.Cols() == k, "linear: x %v does not match weight %v", x, w),
		check(out.Rows() == m && out.Cols() == n, "linear: out %v, want %d x %d", out, m, n),
	); err != nil {
		return err
	}
	var b []float32
	if bias != nil {
		if err := checkAll(isF32("bias", bias), check(bias.Len() == n, "linear: bias %v, want %d values", bias, n)); err != nil {
			return err
		}
		b = bias.F32()
	}
	pw, _ := w.st.(*HostStorage).Prepared.(*kernels.Weight)
	if pw == nil || pw.BF16() != c.BF16Weights {
		if err := c.PrepareWeight(w); err != nil {
			return err
		}
		pw = w.st.(*HostStorage).Prepared.(*kernels.Weight)
	}
	kernels.Linear(out.F32(), x.F32(), m, pw, b, act)
	return nil
}

func (CPU) Gemm(transA, transB bool, alpha float32, a, b *Tensor, beta float32, c *Tensor) error {
	if err := checkAll(isF32("a", a), isF32("b", b), isF32("c", c)); err != nil {
		return err
	}
	batch, m, n, k, err := GemmDims(transA, transB, a, b, c)
	if err != nil {
		return err
	}
	ar, ac := a.Dim(-2), a.Dim(-1)
	br, bc := b.Dim(-2), b.Dim(-1)
	A, B, C := a.F32(), b.F32(), c.F32()
	for i := 0; i < batch; i++ {
		kernels.Sgemm(transA, transB, m, n, k, alpha,
			A[i*ar*ac:(i+1)*ar*ac], ac, B[i*br*bc:(i+1)*br*bc], bc, beta, C[i*m*n:(i+1)*m*n], n)
	}
	return nil
}

func (CPU) Activation(x *Tensor, act Act) error {
	if err := isF32("x", x); err != nil {
		return err
	}
	kernels.Activation(x.F32(), act)
	return nil
}

func (CPU) AddLayerNorm(out, x, res, gamma, beta *Tensor, eps float32) error {
	if err := checkAll(isF32("out", out), isF32("x", x), isF32("gamma", gamma), isF32("beta", beta)); err != nil {
		return err
	}
	cols := x.Cols()
	if err := checkAll(
		check(out.Len() == x.Len() && out.Cols() == cols, "layernorm: out %v does not match x %v", out, x),
		check(gamma.Len() == cols && beta.Len() == cols, "layernorm: gamma %v / beta %v, want %d values", gamma, beta, cols),
	); err != nil {
		return err
	}
	var r []float32
	if res != nil {
		if err := checkAll(isF32("residual", res), check(res.Len() == x.Len(), "layernorm: residual %v does not match x %v", res, x)); err != nil {
			return err
		}
		r = res.F32()
	}
	kernels.AddLayerNorm(out.F32(), x.F32(), r, x.Rows(), cols, gamma.F32(), beta.F32(), eps)
	return nil
}

func (CPU) Softmax(x, mask *Tensor, scale float32) error {
	if err := checkAll(isF32("x", x), check(x.Rank() == 3, "softmax: x %v: want [B, rows, cols]", x)); err != nil {
		return err
	}
	var m []int32
	if mask != nil {
		if err := checkAll(isI32("mask", mask),
			check(mask.Rank() == 2 && mask.Dim(0) == x.Dim(0) && mask.Dim(1) == x.Dim(2), "softmax: mask %v does not match x %v", mask, x)); err != nil {
			return err
		}
		m = mask.I32()
	}
	kernels.Softmax(x.F32(), x.Dim(0)*x.Dim(1), x.Dim(2), scale, m, x.Dim(1))
	return nil
}

// checkSeqs validates packed-sequence offsets over n rows.
func checkSeqs(seqs *Tensor, n, maxLen int) ([]int32, error) {
	if err := isI32("sequence offsets", seqs); err != nil {
		return nil, err
	}
	s := seqs.I32()
	if len(s) == 0 || s[0] != 0 || int(s[len(s)-1]) != n {
		return nil, fmt.Errorf("sequence offsets %v: want 0 first and %d (the rows) last", seqs, n)
	}
	for b := 1; b < len(s); b++ {
		l := int(s[b]) - int(s[b-1])
		if l < 0 {
			return nil, fmt.Errorf("sequence offsets decrease at %d: %d then %d", b, s[b-1], s[b])
		}
		if maxLen >= 0 && l > maxLen {
			return nil, fmt.Errorf("sequence %d has %d tokens, over the %d given as the longest", b-1, l, maxLen)
		}
	}
	return s, nil
}

func (CPU) Attention(out, qkv, seqs *Tensor, maxLen, heads int, scale float32) error {
	if err := checkAll(isF32("out", out), isF32("qkv", qkv)); err != nil {
		return err
	}
	if qkv.Cols()%3 != 0 {
		return fmt.Errorf("attention: qkv %v: want [n, 3H]", qkv)
	}
	n, h := qkv.Rows(), qkv.Cols()/3
	if err := checkAll(
		check(heads > 0 && h%heads == 0, "attention: hidden %d not divisible by %d heads", h, heads),
		check(out.Len() == n*h, "attention: out %v, want [%d, %d]", out, n, h),
	); err != nil {
		return err
	}
	s, err := checkSeqs(seqs, n, maxLen)
	if err != nil {
		return fmt.Errorf("attention: %w", err)
	}
	kernels.Attention(out.F32(), qkv.F32(), s, h, heads, scale)
	return nil
}

func (CPU) Embed(out, ids, types, positions, word, pos, typ, gamma, beta *Tensor, eps float32) error {
	if err := checkAll(isF32("out", out), isI32("ids", ids), isI32("positions", positions), isF32("word embeddings", word),
		isF32("position embeddings", pos), isF32("token type embeddings", typ), isF32("gamma", gamma), isF32("beta", beta)); err != nil {
		return err
	}
	n, h := ids.Len(), word.Cols()
	if err := checkAll(
		check(out.Len() == n*h, "embed: out %v, want [%d, %d]", out, n, h),
		check(positions.Len() == n, "embed: positions %v do not match ids %v", positions, ids),
		check(pos.Cols() == h && typ.Cols() == h && gamma.Len() == h && beta.Len() == h, "embed: tables of hidden size %d, %d, %d do not match %d", pos.Cols(), typ.Cols(), gamma.Len(), h),
	); err != nil {
		return err
	}
	var ty []int32
	if types != nil {
		if err := checkAll(isI32("token types", types), check(types.Len() == n, "embed: token types %v do not match ids %v", types, ids)); err != nil {
			return err
		}
		ty = types.I32()
	}
	if err := kernels.EmbedLayerNorm(out.F32(), ids.I32(), ty, positions.I32(), h, word.F32(), pos.F32(), typ.F32(), gamma.F32(), beta.F32(), eps); err != nil {
		return fmt.Errorf("embed: %w", err)
	}
	return nil
}

func (CPU) Gather(out, x, idx *Tensor) error {
	if err := checkAll(isF32("out", out), isF32("x", x), isI32("index", idx)); err != nil {
		return err
	}
	h := x.Cols()
	if err := check(out.Cols() == h && out.Rows() == idx.Len(), "gather: out %v, want [%d, %d]", out, idx.Len(), h); err != nil {
		return err
	}
	X, O := x.F32(), out.F32()
	rows := x.Rows()
	for i, r := range idx.I32() {
		if r < 0 || int(r) >= rows {
			return fmt.Errorf("gather: index %d at %d outside %d rows", r, i, rows)
		}
		copy(O[i*h:(i+1)*h], X[int(r)*h:int(r+1)*h])
	}
	return nil
}

func (CPU) Scatter(out, x, idx *Tensor) error {
	if err := checkAll(isF32("out", out), isF32("x", x), isI32("index", idx)); err != nil {
		return err
	}
	h := x.Cols()
	if err := check(out.Cols() == h && x.Rows() == idx.Len(), "scatter: out %v, x %v and index %v do not fit", out, x, idx); err != nil {
		return err
	}
	X, O := x.F32(), out.F32()
	rows := out.Rows()
	ix := idx.I32()
	increasing := true
	for i, r := range ix {
		if r < 0 || int(r) >= rows {
			return fmt.Errorf("scatter: index %d at %d outside %d rows", r, i, rows)
		}
		increasing = increasing && (i == 0 || r > ix[i-1])
	}
	// Unpadding gives increasing rows, distinct by construction; other
	// orders are checked the slow way.
	if !increasing {
		seen := make([]bool, rows)
		for i, r := range ix {
			if seen[r] {
				return fmt.Errorf("scatter: row %d named twice (again at %d)", r, i)
			}
			seen[r] = true
		}
	}
	clear(O)
	for i, r := range idx.I32() {
		copy(O[int(r)*h:int(r+1)*h], X[i*h:(i+1)*h])
	}
	return nil
}

func (CPU) Pool(out, x, seqs *Tensor, p Pooling) error {
	if err := checkAll(isF32("out", out), isF32("x", x)); err != nil {
		return err
	}
	s, err := checkSeqs(seqs, x.Rows(), -1)
	if err != nil {
		return fmt.Errorf("pool: %w", err)
	}
	h := x.Cols()
	if err := check(out.Len() == (len(s)-1)*h, "pool: out %v, want [%d, %d]", out, len(s)-1, h); err != nil {
		return err
	}
	kernels.Pool(out.F32(), x.F32(), s, h, p)
	return nil
}
