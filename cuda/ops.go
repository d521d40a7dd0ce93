//go:build cuda

package cuda

import (
	"errors"
	"fmt"
	"math"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/bertstream/bertstream/kernels/gpu"
	"github.com/bertstream/bertstream/nn"
)

// tensor returns t's storage after checking that t is a live tensor of
// this backend of dtype dt.
func (b *Backend) tensor(name string, t *nn.Tensor, dt nn.DType) (*storage, error) {
	if t == nil {
		return nil, fmt.Errorf("%s is nil", name)
	}
	st, ok := t.Storage().(*storage)
	if !ok || st.pool != b.pool {
		return nil, fmt.Errorf("%s %v is not on %s", name, t, b.info.Device)
	}
	if st.err != nil {
		return nil, fmt.Errorf("%s %v: %w", name, t, st.err)
	}
	if st.isFreed() {
		return nil, fmt.Errorf("%s %v used after its scope closed", name, t)
	}
	if t.DType() != dt {
		return nil, fmt.Errorf("%s %v: want %s", name, t, dt)
	}
	return st, nil
}

// newArgs is the backend's part of the argument checks every backend
// runs (nn.Args): float operands are live tensors of this backend in its
// compute dtype; index operands are I32 tensors that Upload made, whose
// host copy the checks read, so that they need not wait for the device.
func (b *Backend) newArgs() nn.Args {
	return nn.Args{
		Float: func(name string, t *nn.Tensor) error {
			_, err := b.tensor(name, t, b.dt)
			return err
		},
		Index: func(name string, t *nn.Tensor) ([]int32, error) {
			st, err := b.tensor(name, t, nn.I32)
			if err != nil {
				return nil, err
			}
			if st.ints == nil && t.Len() > 0 {
				return nil, fmt.Errorf("%s %v was not made by Upload: index tensors are checked on the host before a kernel reads them", name, t)
			}
			return st.ints[:t.Len()], nil
		},
	}
}

// storageOf is the device memory of a tensor that the checks have passed;
// nil for an absent optional operand.
func storageOf(t *nn.Tensor) *storage {
	if t == nil {
		return nil
	}
	return t.Storage().(*storage)
}

// Kernel arguments travel as 8-byte slots (what gorgonia's Launch copies
// for each); a kernel reads the low bytes of a 4-byte parameter.
func ptr(st *storage) uint64 {
	if st == nil {
		return 0
	}
	return uint64(st.ptr)
}
func i32(v int) uint64     { return uint64(uint32(int32(v))) }
func i64(v int64) uint64   { return uint64(v) }
func f32(v float32) uint64 { return uint64(math.Float32bits(v)) }

// launch queues a kernel on the stream as l says.
func (b *Backend) launch(l gpu.Launch, args ...uint64) error {
	fn, ok := b.fns[l.Kernel]
	if !ok {
		return fmt.Errorf("no kernel %s in the embedded PTX", l.Kernel)
	}
	params := make([]unsafe.Pointer, len(args))
	for i := range args {
		params[i] = unsafe.Pointer(&args[i])
	}
	if err := fn.Launch(l.Grid[0], l.Grid[1], l.Grid[2], l.Block, 1, 1, l.Shared, b.stream, params); err != nil {
		return fmt.Errorf("launch %s (grid %dx%dx%d, block %d): %w", l.Kernel, l.Grid[0], l.Grid[1], l.Grid[2], l.Block, err)
	}
	return nil
}

func (b *Backend) PrepareWeight(w *nn.Tensor) error {
	// cuBLAS reads PyTorch's [n, k] layout as the transposed operand of
	// its fastest (TN) GEMM: there is nothing to pack.
	return b.args.Weight(w)
}

func (b *Backend) Linear(out, x, w, bias *nn.Tensor, act nn.Act) error {
	m, n, k, err := b.args.Linear(out, x, w, bias)
	if err != nil {
		return err
	}
	if m == 0 || n == 0 {
		return nil
	}
	if k == 0 {
		return fmt.Errorf("linear: weight %v has no columns: %w", w, nn.ErrUnsupported)
	}
	if err := b.enter(); err != nil {
		return err
	}
	defer b.leave()
	so, sx, sw, sb := storageOf(out), storageOf(x), storageOf(w), storageOf(bias)
	err = b.linearLt(so, sx, sw, sb, m, n, k, act)
	if errors.Is(err, errNoAlgorithm) {
		err = b.linearGemm(so, sx, sw, sb, m, n, k, act)
	}
	if err != nil {
		return fmt.Errorf("linear: x %v by weight %v: %w", x, w, err)
	}
	return nil
}

// linearLt is Linear through cuBLASLt, with the bias in its epilogue, and
// then the activation; it returns errNoAlgorithm for the shapes cuBLASLt
// has no kernel for.
func (b *Backend) linearLt(out, x, w, bias *storage, m, n, k int, act nn.Act) error {
	if err := b.blas.linear(cudaType(b.dt), m, n, k, x.ptr, w.ptr, cu.DevicePtr(ptr(bias)), out.ptr); err != nil {
		return err
	}
	return b.runGELU(out, int64(m)*int64(n), act)
}

// linearGemm is Linear through cuBLAS's GEMM, then one pass for the bias
// and the activation.
func (b *Backend) linearGemm(out, x, w, bias *storage, m, n, k int, act nn.Act) error {
	// out^T = w x^T in cuBLAS's column-major terms.
	if err := b.blas.gemm(cudaType(b.dt), true, false, n, m, k, 1, w.ptr, k, x.ptr, k, 0, out.ptr, n); err != nil {
		return err
	}
	if bias == nil && act == nn.ActNone {
		return nil
	}
	return b.launch(gpu.BiasGELU(b.kt, m, n), ptr(out), ptr(bias), i64(int64(m)), i32(n), i32(int(act)))
}

// runGELU applies the activation in place to n values.
func (b *Backend) runGELU(x *storage, n int64, act nn.Act) error {
	if n == 0 || act == nn.ActNone {
		return nil
	}
	return b.launch(gpu.GELU(b.kt, n), ptr(x), i64(n), i32(int(act)))
}

func (b *Backend) LayerNorm(out, x, res, gamma, beta *nn.Tensor, eps float32) error {
	rows, cols, err := b.args.LayerNorm(out, x, res, gamma, beta)
	if err != nil {
		return err
	}
	if err := b.enter(); err != nil {
		return err
	}
	defer b.leave()
	return b.runLayerNorm(gpu.LayerNormVersions, storageOf(out), storageOf(x), storageOf(res), storageOf(gamma), storageOf(beta), rows, cols, eps)
}

// runLayerNorm launches version v of the residual + LayerNorm kernel.
func (b *Backend) runLayerNorm(v int, out, x, res, gamma, beta *storage, rows, cols int, eps float32) error {
	if rows == 0 || cols == 0 {
		return nil
	}
	return b.launch(gpu.LayerNorm(v, b.kt, rows),
		ptr(out), ptr(x), ptr(res), ptr(gamma), ptr(beta), i32(rows), i32(cols), f32(eps))
}

func (b *Backend) Attention(out, qkv, seqs *nn.Tensor, maxLen, heads int, scale float32) error {
	s, h, longest, err := b.args.Attention(out, qkv, seqs, maxLen, heads)
	if err != nil {
		return err
	}
	if err := b.enter(); err != nil {
		return err
	}
	defer b.leave()
	return b.runAttention(gpu.AttentionVersion(b.kt, h/heads, heads), storageOf(out), storageOf(qkv), storageOf(seqs),
		len(s)-1, qkv.Rows(), h, heads, longest, scale)
}

// runAttention launches version v of the attention kernel over nseq
// sequences of at most longest tokens.
func (b *Backend) runAttention(v int, out, qkv, seqs *storage, nseq, n, hidden, heads, longest int, scale float32) error {
	if n == 0 {
		return nil
	}
	if v == 1 {
		return b.launch(gpu.Attention(v, b.kt, n, hidden, heads, longest, nseq),
			ptr(out), ptr(qkv), ptr(seqs), i32(nseq), i32(n), i32(hidden), i32(heads), f32(scale))
	}
	for first := 0; first < nseq; first += gpu.MaxGridYZ {
		count := min(gpu.MaxGridYZ, nseq-first)
		err := b.launch(gpu.Attention(v, b.kt, n, hidden, heads, longest, count),
			ptr(out), ptr(qkv), ptr(seqs)+uint64(4*first), i32(hidden), i32(heads), f32(scale))
		if err != nil {
			return err
		}
	}
	return nil
}

func (b *Backend) Embed(out, ids, types, positions, word, pos, typ, gamma, beta *nn.Tensor, eps float32) error {
	_, h, err := b.args.Embed(out, ids, types, positions, word, pos, typ, gamma, beta)
	if err != nil {
		return err
	}
	if err := b.enter(); err != nil {
		return err
	}
	defer b.leave()
	tables := []*storage{storageOf(word), storageOf(pos), storageOf(typ), storageOf(gamma), storageOf(beta)}
	return b.runEmbed(gpu.EmbedVersions, storageOf(out), storageOf(ids), storageOf(types), storageOf(positions), tables, ids.Len(), h, eps)
}

// runEmbed launches version v of the embedding kernel; tables holds word,
// pos, typ, gamma and beta.
func (b *Backend) runEmbed(v int, out, ids, types, positions *storage, tables []*storage, n, hidden int, eps float32) error {
	if n == 0 || hidden == 0 {
		return nil
	}
	return b.launch(gpu.Embed(v, b.kt, n), ptr(out), ptr(ids), ptr(types), ptr(positions), i32(n), i32(hidden),
		ptr(tables[0]), ptr(tables[1]), ptr(tables[2]), ptr(tables[3]), ptr(tables[4]), f32(eps))
}

func (b *Backend) Gather(out, x, idx *nn.Tensor) error {
	iv, err := b.args.Gather(out, x, idx)
	if err != nil {
		return err
	}
	if err := b.enter(); err != nil {
		return err
	}
	defer b.leave()
	return b.runRows(gpu.Gather, storageOf(out), storageOf(x), storageOf(idx), len(iv), x.Cols()*b.dt.Size())
}

func (b *Backend) Scatter(out, x, idx *nn.Tensor) error {
	iv, err := b.args.Scatter(out, x, idx)
	if err != nil {
		return err
	}
	if err := b.enter(); err != nil {
		return err
	}
	defer b.leave()
	so := storageOf(out)
	if bytes := int64(out.Len() * b.dt.Size()); bytes > 0 {
		if err := cu.MemsetD8Async(so.ptr, 0, bytes, b.stream); err != nil {
			return fmt.Errorf("scatter: zero out %v: %w", out, err)
		}
	}
	return b.runRows(gpu.Scatter, so, storageOf(x), storageOf(idx), len(iv), x.Cols()*b.dt.Size())
}

// runRows launches the gather or scatter kernel (rows is gpu.Gather or
// gpu.Scatter) over n rows of rowBytes.
func (b *Backend) runRows(rows func(n, rowBytes int) (gpu.Launch, int), out, x, idx *storage, n, rowBytes int) error {
	if n == 0 || rowBytes == 0 {
		return nil
	}
	l, words := rows(n, rowBytes)
	return b.launch(l, ptr(out), ptr(x), ptr(idx), i32(n), i32(words))
}

func (b *Backend) Pool(out, x, seqs *nn.Tensor, p nn.Pooling) error {
	s, err := b.args.Pool(out, x, seqs)
	if err != nil {
		return err
	}
	nseq, h := len(s)-1, x.Cols()
	if nseq == 0 || h == 0 {
		return nil
	}
	if err := b.enter(); err != nil {
		return err
	}
	defer b.leave()
	return b.launch(gpu.Pool(b.kt, h, nseq), ptr(storageOf(out)), ptr(storageOf(x)), ptr(storageOf(seqs)), i32(nseq), i32(h), i32(int(p)))
}
