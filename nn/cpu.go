package nn

import (
	"fmt"
	"os"

	"github.com/bertstream/bertstream/kernels"
)

func init() {
	Register("cpu", func(opts Options) (Backend, error) {
		c, err := NewCPU(opts)
		if err != nil {
			return nil, err
		}
		return c, nil
	})
}

// CPU is the pure-Go backend: host memory, F32 compute, the kernels
// package's versions of its configuration. The zero value runs the
// fastest versions on all cores (kernels.Default).
type CPU struct {
	// BF16Weights makes the linear layers compute with weights and
	// activations rounded to bfloat16 and float32 sums (AVX512_BF16 where
	// the CPU has it), and the attention products of sequences of
	// the kernels' BF16AttentionMin tokens or more likewise; everything else
	// stays F32.
	BF16Weights bool
	// Int8Weights makes the linear layers compute in INT8: weights
	// quantized per output channel at load, activations per token at run
	// time, int32 sums (AVX512-VNNI where the CPU has it), dequantized with
	// bias and activation; everything else stays F32.
	Int8Weights bool
	k           *kernels.Engine
}

// NewCPU opens a CPU backend configured by opts: Compute (F32, or BF16
// for BF16 weights), Int8, Threads, Kernels, BF16Kernels, Int8Kernels,
// BLAS and Tuning.
func NewCPU(opts Options) (CPU, error) {
	c := CPU{Int8Weights: opts.Int8}
	switch opts.Compute {
	case 0, F32:
	case BF16:
		if opts.Int8 {
			return CPU{}, fmt.Errorf("INT8 linear layers compute in F32 around them, not %s", opts.Compute)
		}
		c.BF16Weights = true
	default:
		return CPU{}, fmt.Errorf("the CPU backend computes in F32 (or with BF16 weights), not %s", opts.Compute)
	}
	blas := opts.BLAS
	if blas == "" {
		blas = os.Getenv("BERTSTREAM_BLAS")
	}
	k, err := kernels.New(kernels.Config{Version: opts.Kernels, BF16Version: opts.BF16Kernels, Int8Version: opts.Int8Kernels, Threads: opts.Threads, BLAS: blas, Measured: opts.Tuning})
	if err != nil {
		return CPU{}, fmt.Errorf("cpu kernels: %w", err)
	}
	c.k = k
	return c, nil
}

// Kernels is the kernels engine c runs.
func (c CPU) Kernels() *kernels.Engine {
	if c.k == nil {
		return kernels.Default()
	}
	return c.k
}

func (CPU) Name() string   { return "cpu" }
func (CPU) Device() string { return "cpu" }
func (CPU) Compute() DType { return F32 }
func (CPU) Sync() error    { return nil }

func (CPU) New(s *Scope, dt DType, shape ...int) *Tensor { return newHostUninit(s, dt, shape...) }

// Upload copies src, except a read-only view (HostView: a mapped
// checkpoint's weights) of the same dtype, which it shares: loading F32
// weights then copies nothing, and the weights that the model keeps in
// their row-major layout (embeddings) stay pages of the file.
func (c CPU) Upload(s *Scope, src *Tensor, dt DType) (*Tensor, error) {
	if h, ok := src.st.(*HostStorage); ok && src.dtype == dt {
		if sh := h.share(); sh != nil {
			return NewTensor(s, sh, dt, src.shape...), nil
		}
	}
	return convertHost(s, src, dt)
}

// FuseRows makes the F32 weight [n1+n2+..., k], owned by s, whose rows are
// those of parts (host F32 [ni, k]) one after another, without
// concatenating them: PrepareWeight packs it straight from the parts,
// which it shares as Upload does, and its row-major bytes are built only
// if something reads them.
func (c CPU) FuseRows(s *Scope, parts ...*Tensor) (*Tensor, error) {
	if len(parts) == 0 {
		return nil, fmt.Errorf("FuseRows of no tensors")
	}
	n, k := 0, 0
	kept := make([]*HostStorage, 0, len(parts))
	release := func() error {
		for _, h := range kept {
			h.Free()
		}
		return nil
	}
	for i, p := range parts {
		if err := cpuArgs.Weight(p); err != nil {
			release()
			return nil, fmt.Errorf("FuseRows part %d: %w", i, err)
		}
		if i == 0 {
			k = p.shape[1]
		} else if p.shape[1] != k {
			release()
			return nil, fmt.Errorf("FuseRows part %d %v: want %d columns", i, p, k)
		}
		n += p.shape[0]
		h := p.st.(*HostStorage).share()
		if h == nil {
			// A buffer its owner may still write: copied, once.
			h = newSharedStorage(4 * p.Len())
			copy(h.buf, hostBytes(p))
		}
		kept = append(kept, h)
	}
	l := &lazyF32{size: 4 * n * k, backing: NewBacking(release, nil)}
	l.rows = func() ([][]float32, func()) {
		var out [][]float32
		var dones []func()
		for _, h := range kept {
			r, done := h.f32Rows()
			out = append(out, r...)
			dones = append(dones, done)
		}
		return out, func() {
			for _, d := range dones {
				d()
			}
		}
	}
	l.evict = func() {
		for _, h := range kept {
			h.evictSource()
		}
	}
	return NewTensor(s, &HostStorage{lazy: l, backing: l.backing}, F32, n, k), nil
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

// cpuArgs checks operands as host tensors of F32 (floats) and I32
// (indexes).
var cpuArgs = Args{
	Float: func(name string, t *Tensor) error {
		if _, ok := t.st.(*HostStorage); !ok {
			return fmt.Errorf("%s %v is not in host memory", name, t)
		}
		if t.dtype != F32 {
			return fmt.Errorf("%s %v: want F32", name, t)
		}
		return nil
	},
	Index: func(name string, t *Tensor) ([]int32, error) {
		if _, ok := t.st.(*HostStorage); !ok {
			return nil, fmt.Errorf("%s %v is not in host memory", name, t)
		}
		return t.I32(), nil
	},
}

func (c CPU) PrepareWeight(w *Tensor) error {
	if err := cpuArgs.Weight(w); err != nil {
		return err
	}
	h := w.st.(*HostStorage)
	n, k := w.shape[0], w.shape[1]
	switch {
	case c.Int8Weights:
		h.Prepared = c.Kernels().PrepareWeightInt8(w.F32(), n, k)
	case !c.BF16Weights:
		// Packed when first used by more than a few tokens, or by a
		// second product; a one-shot prediction reads the rows in place
		// (converted into a buffer it drops, for an F16/BF16 source).
		h.Prepared = c.Kernels().DeferWeight(h.f32Rows, n, k, h.evictSource)
		return nil
	case h.lazy != nil:
		// BF16: packed from the source (the fused parts, a converted copy
		// that is dropped after), not from bytes built for the purpose.
		parts, done := h.f32Rows()
		h.Prepared = c.Kernels().PrepareWeightRows(parts, h.f32Rows, n, k, true)
		done()
	default:
		h.Prepared = c.Kernels().PrepareWeightBF16(w.F32(), n, k)
	}
	// Linear reads the packed copy; the row-major bytes of a mapped
	// weight leave memory and are read back from the file only if asked
	// for (gonum's SGEMM, a repack for another kernel, an embedding).
	h.evictSource()
	return nil
}

// Pack packs w now if PrepareWeight deferred it (nn.Packer).
func (c CPU) Pack(w *Tensor) error {
	if err := cpuArgs.Weight(w); err != nil {
		return err
	}
	if pw, ok := w.st.(*HostStorage).Prepared.(*kernels.Weight); ok {
		c.Kernels().Pack(pw)
	}
	return nil
}

func (c CPU) Linear(out, x, w, bias *Tensor, act Act) error {
	m, _, _, err := cpuArgs.Linear(out, x, w, bias)
	if err != nil {
		return err
	}
	var b []float32
	if bias != nil {
		b = bias.F32()
	}
	pw, _ := w.st.(*HostStorage).Prepared.(*kernels.Weight)
	if pw == nil || pw.BF16() != c.BF16Weights || pw.Int8() != c.Int8Weights {
		if err := c.PrepareWeight(w); err != nil {
			return err
		}
		pw = w.st.(*HostStorage).Prepared.(*kernels.Weight)
	}
	c.Kernels().Linear(out.F32(), x.F32(), m, pw, b, act)
	return nil
}

func (c CPU) LayerNorm(out, x, res, gamma, beta *Tensor, eps float32) error {
	rows, cols, err := cpuArgs.LayerNorm(out, x, res, gamma, beta)
	if err != nil {
		return err
	}
	var r []float32
	if res != nil {
		r = res.F32()
	}
	c.Kernels().LayerNorm(out.F32(), x.F32(), r, rows, cols, gamma.F32(), beta.F32(), eps)
	return nil
}

func (c CPU) Attention(out, qkv, seqs *Tensor, maxLen, heads int, scale float32) error {
	s, h, _, err := cpuArgs.Attention(out, qkv, seqs, maxLen, heads)
	if err != nil {
		return err
	}
	if c.BF16Weights {
		c.Kernels().AttentionBF16(out.F32(), qkv.F32(), s, h, heads, scale)
		return nil
	}
	c.Kernels().Attention(out.F32(), qkv.F32(), s, h, heads, scale)
	return nil
}

func (c CPU) Embed(out, ids, types, positions, word, pos, typ, gamma, beta *Tensor, eps float32) error {
	ix, h, err := cpuArgs.Embed(out, ids, types, positions, word, pos, typ, gamma, beta)
	if err != nil {
		return err
	}
	if err := c.Kernels().EmbedLayerNorm(out.F32(), ix.IDs, ix.Types, ix.Positions, h, word.F32(), pos.F32(), typ.F32(), gamma.F32(), beta.F32(), eps); err != nil {
		return fmt.Errorf("embed: %w", err)
	}
	return nil
}

func (CPU) Gather(out, x, idx *Tensor) error {
	iv, err := cpuArgs.Gather(out, x, idx)
	if err != nil {
		return err
	}
	h := x.Cols()
	X, O := x.F32(), out.F32()
	for i, r := range iv {
		copy(O[i*h:(i+1)*h], X[int(r)*h:int(r+1)*h])
	}
	return nil
}

func (CPU) Scatter(out, x, idx *Tensor) error {
	iv, err := cpuArgs.Scatter(out, x, idx)
	if err != nil {
		return err
	}
	h := x.Cols()
	X, O := x.F32(), out.F32()
	clear(O)
	for i, r := range iv {
		copy(O[int(r)*h:int(r+1)*h], X[i*h:(i+1)*h])
	}
	return nil
}

func (c CPU) Pool(out, x, seqs *Tensor, p Pooling) error {
	s, err := cpuArgs.Pool(out, x, seqs)
	if err != nil {
		return err
	}
	c.Kernels().Pool(out.F32(), x.F32(), s, x.Cols(), p)
	return nil
}
