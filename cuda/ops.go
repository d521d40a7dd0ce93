//go:build cuda

package cuda

import (
	"errors"
	"fmt"
	"math"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/bertstream/bertstream/kernels"
	"github.com/bertstream/bertstream/nn"
)

// Argument checks follow the CPU backend's, with the compute dtype in
// place of F32, so that both reject the same calls with the same words.

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

// float checks a tensor of the compute dtype.
func (b *Backend) float(name string, t *nn.Tensor) (*storage, error) { return b.tensor(name, t, b.dt) }

// index checks an I32 tensor and returns its host copy.
func (b *Backend) index(name string, t *nn.Tensor) (*storage, []int32, error) {
	st, err := b.tensor(name, t, nn.I32)
	if err != nil {
		return nil, nil, err
	}
	if st.ints == nil && t.Len() > 0 {
		return nil, nil, fmt.Errorf("%s %v was not made by Upload: index tensors are checked on the host before a kernel reads them", name, t)
	}
	return st, st.ints[:t.Len()], nil
}

// floats checks several tensors of the compute dtype, in order.
func (b *Backend) floats(names []string, ts ...*nn.Tensor) ([]*storage, error) {
	out := make([]*storage, len(ts))
	for i, t := range ts {
		st, err := b.float(names[i], t)
		if err != nil {
			return nil, err
		}
		out[i] = st
	}
	return out, nil
}

// checkSeqs validates packed-sequence offsets over n rows and returns the
// longest sequence.
func checkSeqs(s []int32, seqs *nn.Tensor, n, maxLen int) (int, error) {
	if len(s) == 0 || s[0] != 0 || int(s[len(s)-1]) != n {
		return 0, fmt.Errorf("sequence offsets %v: want 0 first and %d (the rows) last", seqs, n)
	}
	longest := 0
	for b := 1; b < len(s); b++ {
		l := int(s[b]) - int(s[b-1])
		if l < 0 {
			return 0, fmt.Errorf("sequence offsets decrease at %d: %d then %d", b, s[b-1], s[b])
		}
		if maxLen >= 0 && l > maxLen {
			return 0, fmt.Errorf("sequence %d has %d tokens, over the %d given as the longest", b-1, l, maxLen)
		}
		longest = max(longest, l)
	}
	return longest, nil
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

func (b *Backend) launch(name string, gx, gy, gz, block, shared int, args ...uint64) error {
	fn, ok := b.fns[name]
	if !ok {
		return fmt.Errorf("no kernel %s in the embedded PTX", name)
	}
	params := make([]unsafe.Pointer, len(args))
	for i := range args {
		params[i] = unsafe.Pointer(&args[i])
	}
	if err := fn.Launch(gx, gy, gz, block, 1, 1, shared, b.stream, params); err != nil {
		return fmt.Errorf("launch %s (grid %dx%dx%d, block %d): %w", name, gx, gy, gz, block, err)
	}
	return nil
}

func blocks(n, per int) int { return (n + per - 1) / per }

// strided is the grid of a grid-stride kernel over n items: enough blocks
// to fill any GPU, few enough that each thread does several items.
func strided(n int64, block int) int {
	return int(max(1, min((n+int64(block)-1)/int64(block), 8192)))
}

func (b *Backend) PrepareWeight(w *nn.Tensor) error {
	if _, err := b.float("weight", w); err != nil {
		return err
	}
	if w.Rank() != 2 {
		return fmt.Errorf("weight %v: want 2-D", w)
	}
	// cuBLAS reads PyTorch's [n, k] layout as the transposed operand of
	// its fastest (TN) GEMM: there is nothing to pack.
	return nil
}

func (b *Backend) Linear(out, x, w, bias *nn.Tensor, act nn.Act) error {
	st, err := b.floats([]string{"out", "x", "weight"}, out, x, w)
	if err != nil {
		return err
	}
	if w.Rank() != 2 {
		return fmt.Errorf("weight %v: want 2-D", w)
	}
	n, k := w.Dim(0), w.Dim(1)
	m := x.Rows()
	if x.Cols() != k {
		return fmt.Errorf("linear: x %v does not match weight %v", x, w)
	}
	if out.Rows() != m || out.Cols() != n {
		return fmt.Errorf("linear: out %v, want %d x %d", out, m, n)
	}
	var sb *storage
	if bias != nil {
		if sb, err = b.float("bias", bias); err != nil {
			return err
		}
		if bias.Len() != n {
			return fmt.Errorf("linear: bias %v, want %d values", bias, n)
		}
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
	dt := cudaType(b.dt)
	err = b.blas.linear(dt, m, n, k, st[1].ptr, st[2].ptr, cu.DevicePtr(ptr(sb)), st[0].ptr)
	if errors.Is(err, errNoAlgorithm) {
		// out^T = w x^T in cuBLAS's column-major terms, then the bias.
		if err = b.blas.gemm(dt, true, false, n, m, k, 1, st[2].ptr, k, 0, st[1].ptr, k, 0, 0, st[0].ptr, n, 0, 1); err == nil {
			if sb == nil && act == nn.ActNone {
				return nil
			}
			return b.launch("bias_act_"+suffix(b.dt), strided(int64(m)*int64(n), 256), 1, 1, 256, 0,
				ptr(st[0]), ptr(sb), i64(int64(m)), i32(n), i32(int(act)))
		}
	}
	if err != nil {
		return fmt.Errorf("linear: x %v by weight %v: %w", x, w, err)
	}
	return b.runAct(st[0], int64(m)*int64(n), act)
}

func (b *Backend) runAct(st *storage, n int64, act nn.Act) error {
	if n == 0 || act == nn.ActNone {
		return nil
	}
	vec := int64(16 / b.dt.Size())
	return b.launch("act_"+suffix(b.dt), strided((n+vec-1)/vec, 256), 1, 1, 256, 0, ptr(st), i64(n), i32(int(act)))
}

func (b *Backend) LayerNorm(out, x, res, gamma, beta *nn.Tensor, eps float32) error {
	st, err := b.floats([]string{"out", "x", "gamma", "beta"}, out, x, gamma, beta)
	if err != nil {
		return err
	}
	cols := x.Cols()
	if out.Len() != x.Len() || out.Cols() != cols {
		return fmt.Errorf("layernorm: out %v does not match x %v", out, x)
	}
	if gamma.Len() != cols || beta.Len() != cols {
		return fmt.Errorf("layernorm: gamma %v / beta %v, want %d values", gamma, beta, cols)
	}
	var sr *storage
	if res != nil {
		if sr, err = b.float("residual", res); err != nil {
			return err
		}
		if res.Len() != x.Len() {
			return fmt.Errorf("layernorm: residual %v does not match x %v", res, x)
		}
	}
	if err := b.enter(); err != nil {
		return err
	}
	defer b.leave()
	return b.runLayerNorm(2, st[0], st[1], sr, st[2], st[3], x.Rows(), cols, eps)
}

// runLayerNorm launches version v of the residual + LayerNorm kernel.
func (b *Backend) runLayerNorm(v int, out, x, res, gamma, beta *storage, rows, cols int, eps float32) error {
	if rows == 0 || cols == 0 {
		return nil
	}
	name := fmt.Sprintf("add_layernorm%d_%s", v, suffix(b.dt))
	args := []uint64{ptr(out), ptr(x), ptr(res), ptr(gamma), ptr(beta), i32(rows), i32(cols), f32(eps)}
	if v == 1 {
		return b.launch(name, blocks(rows, 128), 1, 1, 128, 0, args...)
	}
	return b.launch(name, blocks(rows, 8), 1, 1, 256, 0, args...)
}

func (b *Backend) runSoftmax(v int, x, mask *storage, nrows, cols, rowsPerMask int, scale float32) error {
	if nrows == 0 || cols == 0 {
		return nil
	}
	name := fmt.Sprintf("softmax%d_%s", v, suffix(b.dt))
	args := []uint64{ptr(x), ptr(mask), i32(nrows), i32(cols), i32(rowsPerMask), f32(scale)}
	if v == 1 {
		return b.launch(name, blocks(nrows, 128), 1, 1, 128, 0, args...)
	}
	return b.launch(name, blocks(nrows, 8), 1, 1, 256, 0, args...)
}

func (b *Backend) Attention(out, qkv, seqs *nn.Tensor, maxLen, heads int, scale float32) error {
	st, err := b.floats([]string{"out", "qkv"}, out, qkv)
	if err != nil {
		return err
	}
	if qkv.Cols()%3 != 0 {
		return fmt.Errorf("attention: qkv %v: want [n, 3H]", qkv)
	}
	n, h := qkv.Rows(), qkv.Cols()/3
	if heads <= 0 || h%heads != 0 {
		return fmt.Errorf("attention: hidden %d not divisible by %d heads", h, heads)
	}
	if out.Len() != n*h {
		return fmt.Errorf("attention: out %v, want [%d, %d]", out, n, h)
	}
	ss, s, err := b.index("sequence offsets", seqs)
	if err != nil {
		return fmt.Errorf("attention: %w", err)
	}
	longest, err := checkSeqs(s, seqs, n, maxLen)
	if err != nil {
		return fmt.Errorf("attention: %w", err)
	}
	if err := b.enter(); err != nil {
		return err
	}
	defer b.leave()
	return b.runAttention(b.attentionVersion(h/heads, heads), st[0], st[1], ss, len(s)-1, n, h, heads, longest, scale)
}

// attentionVersion picks the fastest kernel that handles a head size: the
// tensor-core one for F16/BF16 BERT heads, the SIMT one up to 128, the
// plain one beyond (and beyond the grid's 65535 heads).
func (b *Backend) attentionVersion(dh, heads int) int {
	switch {
	case heads > 65535 || dh > v2MaxHead:
		return 1
	case b.dt != nn.F32 && (dh == 32 || dh == 64):
		return 3
	}
	return 2
}

// Tiles of the attention kernels (attention.cu's V2_ROWS, V2_MAXD,
// V3_ROWS).
const (
	v2Rows    = 16
	v2MaxHead = 128
	v3Rows    = 64
)

// runAttention launches version v of the attention kernel over nseq
// sequences of at most longest tokens.
func (b *Backend) runAttention(v int, out, qkv, seqs *storage, nseq, n, hidden, heads, longest int, scale float32) error {
	if n == 0 {
		return nil
	}
	sfx := suffix(b.dt)
	dh := hidden / heads
	if v == 1 {
		return b.launch("attention1_"+sfx, blocks(n*hidden, 128), 1, 1, 128, 0,
			ptr(out), ptr(qkv), ptr(seqs), i32(nseq), i32(n), i32(hidden), i32(heads), f32(scale))
	}
	name, rows, block, shared := "attention2_"+sfx, v2Rows, v2Rows*32, (32*(dh|1)+32*dh+v2Rows*dh)*4
	if v == 3 {
		name, rows, block, shared = fmt.Sprintf("attention3_d%d_%s", dh, sfx), v3Rows, 128, 0
	}
	// A grid's z extent is at most 65535: longer batches go in slices,
	// each with its own view of the offsets.
	for first := 0; first < nseq; first += 65535 {
		count := min(65535, nseq-first)
		err := b.launch(name, blocks(longest, rows), heads, count, block, shared,
			ptr(out), ptr(qkv), ptr(seqs)+uint64(4*first), i32(hidden), i32(heads), f32(scale))
		if err != nil {
			return err
		}
	}
	return nil
}

func (b *Backend) Embed(out, ids, types, positions, word, pos, typ, gamma, beta *nn.Tensor, eps float32) error {
	so, err := b.float("out", out)
	if err != nil {
		return err
	}
	si, idv, err := b.index("ids", ids)
	if err != nil {
		return err
	}
	sp, posv, err := b.index("positions", positions)
	if err != nil {
		return err
	}
	st, err := b.floats([]string{"word embeddings", "position embeddings", "token type embeddings", "gamma", "beta"},
		word, pos, typ, gamma, beta)
	if err != nil {
		return err
	}
	n, h := ids.Len(), word.Cols()
	if out.Len() != n*h {
		return fmt.Errorf("embed: out %v, want [%d, %d]", out, n, h)
	}
	if positions.Len() != n {
		return fmt.Errorf("embed: positions %v do not match ids %v", positions, ids)
	}
	if pos.Cols() != h || typ.Cols() != h || gamma.Len() != h || beta.Len() != h {
		return fmt.Errorf("embed: tables of hidden size %d, %d, %d do not match %d", pos.Cols(), typ.Cols(), gamma.Len(), h)
	}
	var sty *storage
	var tyv []int32
	if types != nil {
		if sty, tyv, err = b.index("token types", types); err != nil {
			return err
		}
		if types.Len() != n {
			return fmt.Errorf("embed: token types %v do not match ids %v", types, ids)
		}
	}
	if err := kernels.CheckEmbedIndexes(idv, tyv, posv, word.Rows(), pos.Rows(), typ.Rows()); err != nil {
		return fmt.Errorf("embed: %w", err)
	}
	if err := b.enter(); err != nil {
		return err
	}
	defer b.leave()
	return b.runEmbed(2, so, si, sty, sp, st, n, h, eps)
}

// runEmbed launches version v of the embedding kernel; tables holds word,
// pos, typ, gamma and beta.
func (b *Backend) runEmbed(v int, out, ids, types, positions *storage, tables []*storage, n, hidden int, eps float32) error {
	if n == 0 || hidden == 0 {
		return nil
	}
	name := fmt.Sprintf("embed_ln%d_%s", v, suffix(b.dt))
	args := []uint64{ptr(out), ptr(ids), ptr(types), ptr(positions), i32(n), i32(hidden),
		ptr(tables[0]), ptr(tables[1]), ptr(tables[2]), ptr(tables[3]), ptr(tables[4]), f32(eps)}
	if v == 1 {
		return b.launch(name, blocks(n, 128), 1, 1, 128, 0, args...)
	}
	return b.launch(name, blocks(n, 8), 1, 1, 256, 0, args...)
}

func (b *Backend) Gather(out, x, idx *nn.Tensor) error {
	st, err := b.floats([]string{"out", "x"}, out, x)
	if err != nil {
		return err
	}
	si, iv, err := b.index("index", idx)
	if err != nil {
		return err
	}
	h := x.Cols()
	if out.Cols() != h || out.Rows() != idx.Len() {
		return fmt.Errorf("gather: out %v, want [%d, %d]", out, idx.Len(), h)
	}
	rows := x.Rows()
	for i, r := range iv {
		if r < 0 || int(r) >= rows {
			return fmt.Errorf("gather: index %d at %d outside %d rows", r, i, rows)
		}
	}
	if err := b.enter(); err != nil {
		return err
	}
	defer b.leave()
	return b.runRows("gather_rows", st[0], st[1], si, len(iv), h*b.dt.Size())
}

func (b *Backend) Scatter(out, x, idx *nn.Tensor) error {
	st, err := b.floats([]string{"out", "x"}, out, x)
	if err != nil {
		return err
	}
	si, iv, err := b.index("index", idx)
	if err != nil {
		return err
	}
	h := x.Cols()
	if out.Cols() != h || x.Rows() != idx.Len() {
		return fmt.Errorf("scatter: out %v, x %v and index %v do not fit", out, x, idx)
	}
	rows := out.Rows()
	// Threads write rows in no particular order, so a row named twice
	// would get either source: refused rather than left to chance.
	seen := make(map[int32]int, len(iv))
	for i, r := range iv {
		if r < 0 || int(r) >= rows {
			return fmt.Errorf("scatter: index %d at %d outside %d rows", r, i, rows)
		}
		if j, dup := seen[r]; dup {
			return fmt.Errorf("scatter: row %d named at %d and %d", r, j, i)
		}
		seen[r] = i
	}
	if err := b.enter(); err != nil {
		return err
	}
	defer b.leave()
	if bytes := int64(out.Len() * b.dt.Size()); bytes > 0 {
		if err := cu.MemsetD8Async(st[0].ptr, 0, bytes, b.stream); err != nil {
			return fmt.Errorf("scatter: zero out %v: %w", out, err)
		}
	}
	return b.runRows("scatter_rows", st[0], st[1], si, len(iv), h*b.dt.Size())
}

// runRows launches the gather or scatter kernel over n rows of rowBytes,
// moved in the widest words that divide a row.
func (b *Backend) runRows(kernel string, out, x, idx *storage, n, rowBytes int) error {
	if n == 0 || rowBytes == 0 {
		return nil
	}
	word, name := 2, "w2"
	switch {
	case rowBytes%16 == 0:
		word, name = 16, "w16"
	case rowBytes%4 == 0:
		word, name = 4, "w4"
	}
	width := rowBytes / word
	return b.launch(kernel+"_"+name, strided(int64(n)*int64(width), 256), 1, 1, 256, 0,
		ptr(out), ptr(x), ptr(idx), i32(n), i32(width))
}

func (b *Backend) Pool(out, x, seqs *nn.Tensor, p nn.Pooling) error {
	st, err := b.floats([]string{"out", "x"}, out, x)
	if err != nil {
		return err
	}
	ss, s, err := b.index("sequence offsets", seqs)
	if err != nil {
		return fmt.Errorf("pool: %w", err)
	}
	if _, err := checkSeqs(s, seqs, x.Rows(), -1); err != nil {
		return fmt.Errorf("pool: %w", err)
	}
	h := x.Cols()
	if out.Len() != (len(s)-1)*h {
		return fmt.Errorf("pool: out %v, want [%d, %d]", out, len(s)-1, h)
	}
	if len(s) < 2 || h == 0 {
		return nil
	}
	if err := b.enter(); err != nil {
		return err
	}
	defer b.leave()
	return b.launch("pool_"+suffix(b.dt), blocks(h, 128), min(len(s)-1, 65535), 1, 128, 0,
		ptr(st[0]), ptr(st[1]), ptr(ss), i32(len(s)-1), i32(h), i32(int(p)))
}
