package kernels

import (
	"fmt"
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

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

// SGEMM in the GotoBLAS/BLIS style: op(B) is packed into panels of nr
// columns (k x nr, row after row), op(A) into panels of mr rows, one block
// of mc x kc at a time so that it stays in L2 while a kc x nr panel of B
// stays in L1, and a register-blocked micro-kernel computes each mr x nr
// tile of C. Blocks of C are tasks shared by the cores. Weights of linear
// layers are packed once, at load, by PrepareWeight.

// microKernel is one register-blocked inner kernel and its blocking.
type microKernel struct {
	name   string
	mr, nr int
	kc, mc int
	// pairs marks a BF16 kernel: panels hold pairs of BF16 values along
	// k in 32-bit words, and k, kc count pairs. Its A is rows of such
	// words (lda in words), always read in place: it has direct and
	// tails down to one row, and no run.
	pairs bool
	// run computes the mr x nr tile c (row stride ldc) = [c +] a*b over k
	// steps, from an mr-row panel a and an nr-column panel b; add says
	// whether c's old values are kept. k is at least 1.
	run func(k int, a, b, c []float32, ldc int, add bool)
	// direct, when not nil, is run reading A in place: mr rows of lda
	// values from a (op(A) = A, alpha 1), which spares packing A. It may
	// ask for the start of pf (part of the next panel of B) to be fetched.
	direct directFunc
	// tails are direct versions for fewer rows, longest first.
	tails []tailKernel
	// packTrans, when not nil, writes one full panel of nr columns of
	// op(B) = B^T (b stored n x k, row j the panel's column j) into dst,
	// k values deep, and reports whether it could.
	packTrans func(dst, b []float32, ldb, k int) bool
	// packRows, when not nil, writes one full panel of nr columns of
	// op(B) = B (b stored k x n) into dst, k values deep.
	packRows func(dst, b []float32, ldb, k int)
}

// goKernel is the portable micro-kernel: 4 x 4 accumulators that the Go
// compiler keeps in registers.
var goKernel = &microKernel{name: "go", mr: 4, nr: 4, kc: 256, mc: 128, run: kernelGo4x4}

func kernelGo4x4(k int, a, b, c []float32, ldc int, add bool) {
	var c00, c01, c02, c03, c10, c11, c12, c13 float32
	var c20, c21, c22, c23, c30, c31, c32, c33 float32
	a, b = a[:4*k], b[:4*k]
	for p := 0; p < len(a); p += 4 {
		ap, bp := a[p:p+4:p+4], b[p:p+4:p+4]
		b0, b1, b2, b3 := bp[0], bp[1], bp[2], bp[3]
		a0 := ap[0]
		c00 += a0 * b0
		c01 += a0 * b1
		c02 += a0 * b2
		c03 += a0 * b3
		a1 := ap[1]
		c10 += a1 * b0
		c11 += a1 * b1
		c12 += a1 * b2
		c13 += a1 * b3
		a2 := ap[2]
		c20 += a2 * b0
		c21 += a2 * b1
		c22 += a2 * b2
		c23 += a2 * b3
		a3 := ap[3]
		c30 += a3 * b0
		c31 += a3 * b1
		c32 += a3 * b2
		c33 += a3 * b3
	}
	r0, r1, r2, r3 := c[0:4:4], c[ldc:ldc+4:ldc+4], c[2*ldc:2*ldc+4:2*ldc+4], c[3*ldc:3*ldc+4:3*ldc+4]
	if add {
		c00 += r0[0]
		c01 += r0[1]
		c02 += r0[2]
		c03 += r0[3]
		c10 += r1[0]
		c11 += r1[1]
		c12 += r1[2]
		c13 += r1[3]
		c20 += r2[0]
		c21 += r2[1]
		c22 += r2[2]
		c23 += r2[3]
		c30 += r3[0]
		c31 += r3[1]
		c32 += r3[2]
		c33 += r3[3]
	}
	r0[0], r0[1], r0[2], r0[3] = c00, c01, c02, c03
	r1[0], r1[1], r1[2], r1[3] = c10, c11, c12, c13
	r2[0], r2[1], r2[2], r2[3] = c20, c21, c22, c23
	r3[0], r3[1], r3[2], r3[3] = c30, c31, c32, c33
}

// Implementation is bertstream's blas.Float32, for users who plug it into
// gonum's blas32: Sgemm is the native SGEMM of Engine (Default when nil)
// on its version and goroutines, the other routines are gonum's.
type Implementation struct {
	gonum.Implementation
	Engine *Engine
}

// Sgemm computes C = alpha*op(A)*op(B) + beta*C for row-major matrices, as
// blas.Float32 specifies.
func (im Implementation) Sgemm(tA, tB blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	ta, tb := tA == blas.Trans || tA == blas.ConjTrans, tB == blas.Trans || tB == blas.ConjTrans
	if err := checkGemm(tA, tB, ta, tb, m, n, k, len(a), lda, len(b), ldb, len(c), ldc); err != nil {
		panic(err.Error()) // blas.Float32 reports misuse by panicking, as gonum does
	}
	e := im.Engine
	if e == nil {
		e = Default()
	}
	e.sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

func checkGemm(tA, tB blas.Transpose, ta, tb bool, m, n, k, la, lda, lb, ldb, lc, ldc int) error {
	ok := func(t blas.Transpose) bool {
		return t == blas.NoTrans || t == blas.Trans || t == blas.ConjTrans
	}
	if !ok(tA) || !ok(tB) {
		return fmt.Errorf("sgemm: bad transpose %v, %v", tA, tB)
	}
	if m < 0 || n < 0 || k < 0 {
		return fmt.Errorf("sgemm: negative size m=%d n=%d k=%d", m, n, k)
	}
	ar, ac := m, k
	if ta {
		ar, ac = k, m
	}
	br, bc := k, n
	if tb {
		br, bc = n, k
	}
	if lda < max(1, ac) || ldb < max(1, bc) || ldc < max(1, n) {
		return fmt.Errorf("sgemm: leading dimensions lda=%d ldb=%d ldc=%d too small", lda, ldb, ldc)
	}
	short := func(l, rows, cols, ld int) bool { return rows > 0 && cols > 0 && l < (rows-1)*ld+cols }
	if short(la, ar, ac, lda) || short(lb, br, bc, ldb) || short(lc, m, n, ldc) {
		return fmt.Errorf("sgemm: a slice is shorter than its matrix")
	}
	return nil
}

// bufPool holds the packed-B buffers of GEMMs whose B is not a prepared
// weight.
var bufPool = sync.Pool{New: func() any { return new([]float32) }}

// sgemm is the native SGEMM on e's micro-kernel, arguments already
// checked.
func (e *Engine) sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	if k == 0 || alpha == 0 {
		scaleC(beta, m, n, c, ldc)
		return
	}
	bufp := bufPool.Get().(*[]float32)
	bp := grow(bufp, packedLen(e.gemm, n, k))
	// Packing on one core while the others wait cost 10-20 % of a
	// product of 1024 rows on two cores.
	if float64(m)*float64(n)*float64(k) < 1<<17 {
		packB(e.gemm, bp, transB, n, k, b, ldb)
	} else {
		packParallel(e.gemm, e.Threads(), bp, transB, n, k, b, ldb)
	}
	gemmPacked(e.gemm, e.vec, e.Threads(), transA, m, n, k, alpha, a, lda, bp, beta, c, ldc, nil, ActNone)
	bufPool.Put(bufp)
}

func scaleC(beta float32, m, n int, c []float32, ldc int) {
	if beta == 1 {
		return
	}
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
			continue
		}
		for j := range row {
			row[j] *= beta
		}
	}
}

// kWords is how many packed words k values of a row take: k, or k/2
// rounded up for a kernel of BF16 pairs.
func kWords(kern *microKernel, k int) int {
	if kern.pairs {
		return (k + 1) / 2
	}
	return k
}

// packedLen is the length of op(B) (k x n) packed in panels of kern.nr
// columns, the last one padded with zeros.
func packedLen(kern *microKernel, n, k int) int {
	return (n + kern.nr - 1) / kern.nr * kern.nr * kWords(kern, k)
}

// packB writes op(B) (k x n) as panels of nr columns: panel jp holds, for
// each p, the values of columns jp*nr ... jp*nr+nr-1 of row p. A kc-row
// slice of a panel is therefore contiguous, whatever the blocking of k.
func packB(kern *microKernel, dst []float32, transB bool, n, k int, b []float32, ldb int) {
	nr := kern.nr
	for j0 := 0; j0 < n; j0 += nr {
		panel := dst[j0*k : j0*k+nr*k]
		cols := min(nr, n-j0)
		if cols < nr {
			clear(panel)
		}
		if transB {
			// B is stored n x k: column j of op(B) is row j of b.
			if cols == nr && k > 0 && kern.packTrans != nil && kern.packTrans(panel, b[j0*ldb:], ldb, k) {
				continue
			}
			for jj := 0; jj < cols; jj++ {
				src := b[(j0+jj)*ldb : (j0+jj)*ldb+k]
				for p, v := range src {
					panel[p*nr+jj] = v
				}
			}
			continue
		}
		if cols == nr && k > 0 && kern.packRows != nil {
			kern.packRows(panel, b[j0:], ldb, k)
			continue
		}
		for p := 0; p < k; p++ {
			copy(panel[p*nr:p*nr+cols], b[p*ldb+j0:p*ldb+j0+cols])
		}
	}
}

// packA writes rows [i0, i0+rows) and columns [p0, p0+kc) of alpha*op(A)
// as panels of mr rows (for each p, mr values), padding with zeros.
func packA(mr int, dst []float32, transA bool, a []float32, lda, i0, rows, p0, kc int, alpha float32) {
	for r0 := 0; r0 < rows; r0 += mr {
		panel := dst[r0*kc : r0*kc+mr*kc]
		rr := min(mr, rows-r0)
		if rr < mr {
			clear(panel)
		}
		for ii := 0; ii < rr; ii++ {
			i := i0 + r0 + ii
			if transA {
				for p := 0; p < kc; p++ {
					panel[p*mr+ii] = alpha * a[(p0+p)*lda+i]
				}
				continue
			}
			src := a[i*lda+p0 : i*lda+p0+kc]
			if alpha == 1 {
				for p, v := range src {
					panel[p*mr+ii] = v
				}
				continue
			}
			for p, v := range src {
				panel[p*mr+ii] = alpha * v
			}
		}
	}
}

// tailKernel is a direct micro-kernel of fewer rows than mr.
type tailKernel struct {
	rows int
	run  directFunc
}

// gemmNC bounds the columns of C one task computes (see gemmPacked).
var gemmNC = 512

// gemmTask computes C = alpha*op(A)*B + beta*C from B packed by packB, then
// applies bias and act to each finished tile column while it is in cache.
type gemmTask struct {
	kern           *microKernel
	vec            *vecOps // for bias and act
	transA         bool
	m, n, k        int // k in packed words (see kWords)
	alpha, beta    float32
	a              []float32
	lda            int
	bp             []float32
	c              []float32
	ldc            int
	bias           []float32
	act            Act
	mc, mBlocks    int
	panelsPerChunk int
}

var gemmTasks = sync.Pool{New: func() any { return new(gemmTask) }}

// gemmPacked runs the blocked product on up to threads goroutines. bias (n
// values, may be nil) and act are applied to the result with vec.
func gemmPacked(kern *microKernel, vec *vecOps, threads int, transA bool, m, n, k int, alpha float32, a []float32, lda int, bp []float32, beta float32, c []float32, ldc int, bias []float32, act Act) {
	if beta != 0 && beta != 1 {
		scaleC(beta, m, n, c, ldc)
		beta = 1
	}
	g := gemmTasks.Get().(*gemmTask)
	*g = gemmTask{kern: kern, vec: vec, transA: transA, m: m, n: n, k: kWords(kern, k), alpha: alpha, beta: beta,
		a: a, lda: lda, bp: bp, c: c, ldc: ldc, bias: bias, act: act}
	// Balance the row blocks: as many as kern.mc requires, of equal size.
	// A product of few rows (a small batch) takes blocks of up to twice
	// that, so that each panel of B is fetched from memory for more rows:
	// there the columns, not the rows, are split among the cores.
	mr, mc := kern.mr, kern.mc
	if m <= 4*mc {
		mc *= 2
	}
	g.mBlocks = (m + mc - 1) / mc
	g.mc = ((m+g.mBlocks-1)/g.mBlocks + mr - 1) / mr * mr
	g.mBlocks = (m + g.mc - 1) / g.mc
	nPanels := (n + kern.nr - 1) / kern.nr
	w := threads
	if float64(m)*float64(n)*float64(k) < 1<<17 {
		w = 1 // too small to pay for waking another core
	}
	// Split columns too when there are fewer row blocks than a few per
	// goroutine, so that small batches still use every core.
	chunks := 1
	if w > 1 && g.mBlocks < 3*w {
		chunks = min(nPanels, (3*w+g.mBlocks-1)/g.mBlocks)
	}
	g.panelsPerChunk = (nPanels + chunks - 1) / chunks
	// A task sums over all of k into its block of C, one kc slice at a
	// time: a block of at most gemmNC columns stays in L2 between slices
	// instead of going out to L3 and back.
	g.panelsPerChunk = min(g.panelsPerChunk, max(1, gemmNC/kern.nr))
	chunks = (nPanels + g.panelsPerChunk - 1) / g.panelsPerChunk
	// Few tasks that do not divide among the goroutines leave cores idle
	// at the end (9 tasks on 2 cores: one core does 5): cut finer.
	for w > 1 && (g.mBlocks*chunks)%w != 0 && g.mBlocks*chunks < 8*w && g.panelsPerChunk > 1 {
		g.panelsPerChunk--
		chunks = (nPanels + g.panelsPerChunk - 1) / g.panelsPerChunk
	}
	if w == 1 {
		s := scratches.Get().(*scratch)
		for i := 0; i < g.mBlocks*chunks; i++ {
			g.run(i, s)
		}
		scratches.Put(s)
	} else {
		parallel(w, g.mBlocks*chunks, g)
	}
	*g = gemmTask{}
	gemmTasks.Put(g)
}

// directFunc is a micro-kernel reading A in place (see microKernel).
type directFunc func(k int, a []float32, lda int, b, c []float32, ldc int, add bool, pf []float32)

// rowSeg is a run of rows of a task's block that one micro-kernel call
// covers: read in place by direct, or packed panel packed-1 of the block's
// packed rows (packed > 0).
type rowSeg struct {
	r0, rows int
	direct   directFunc
	packed   int
}

func (g *gemmTask) run(t int, s *scratch) {
	kern := g.kern
	mr, nr, kc := kern.mr, kern.nr, kern.kc
	mi, nj := t%g.mBlocks, t/g.mBlocks
	i0 := mi * g.mc
	i1 := min(i0+g.mc, g.m)
	nPanels := (g.n + nr - 1) / nr
	p0 := nj * g.panelsPerChunk
	p1 := min(p0+g.panelsPerChunk, nPanels)
	tile := grow(&s.tile, mr*nr)

	// Rows of a plain A are read in place when the kernel can: mr at a
	// time, then the tail with the kernel's shorter versions, so that a
	// batch of 32 or 128 tokens wastes nothing on padding. Whatever is
	// left (or all rows, for a transposed or scaled A) is packed.
	segs := s.segs[:0]
	packedFrom := i0
	if kern.direct != nil && !g.transA && g.alpha == 1 {
		r := i0
		for ; r+mr <= i1; r += mr {
			segs = append(segs, rowSeg{r0: r, rows: mr, direct: kern.direct})
		}
		for _, tk := range kern.tails {
			for ; r+tk.rows <= i1; r += tk.rows {
				segs = append(segs, rowSeg{r0: r, rows: tk.rows, direct: tk.run})
			}
		}
		packedFrom = r
	}
	for r := packedFrom; r < i1; r += mr {
		segs = append(segs, rowSeg{r0: r, rows: min(mr, i1-r), packed: (r-packedFrom)/mr + 1})
	}
	s.segs = segs
	n := len(segs)
	packedRows := i1 - packedFrom

	for pc := 0; pc < g.k; pc += kc {
		kcb := min(kc, g.k-pc)
		var abuf []float32
		if packedRows > 0 {
			abuf = grow(&s.a, (packedRows+mr-1)/mr*mr*kcb)
			packA(mr, abuf, g.transA, g.a, g.lda, packedFrom, packedRows, pc, kcb, g.alpha)
		}
		add := pc > 0 || g.beta != 0
		for jp := p0; jp < p1; jp++ {
			bpan := g.bp[jp*nr*g.k+pc*nr:]
			j0 := jp * nr
			cols := min(nr, g.n-j0)
			for si := 0; si < n; si++ {
				sg := &segs[si]
				full := cols == nr && (sg.direct != nil || sg.rows == mr)
				dst, ldc, acc := tile, nr, false
				if full {
					dst, ldc, acc = g.c[sg.r0*g.ldc+j0:], g.ldc, add
				}
				if sg.direct != nil {
					// Each call fetches its share of the next panel (the
					// same panel's slice at the last one: harmless).
					next := min(jp+1, p1-1)*nr*g.k + pc*nr + si*nr*kcb/n
					sg.direct(kcb, g.a[sg.r0*g.lda+pc:], g.lda, bpan, dst, ldc, acc, g.bp[next:])
				} else {
					kern.run(kcb, abuf[(sg.packed-1)*mr*kcb:], bpan, dst, ldc, acc)
				}
				if full {
					continue
				}
				for r := 0; r < sg.rows; r++ {
					d := g.c[(sg.r0+r)*g.ldc+j0 : (sg.r0+r)*g.ldc+j0+cols]
					src := tile[r*nr : r*nr+cols]
					if add {
						for j, v := range src {
							d[j] += v
						}
					} else {
						copy(d, src)
					}
				}
			}
		}
	}
	// Bias and activation go over the task's block of C once it is done,
	// while it is still in L2 (see gemmNC), a row at a time: long vectors
	// for the vector code, few calls.
	if g.bias != nil || g.act != ActNone {
		j0, j1 := p0*nr, min(p1*nr, g.n)
		var bias []float32
		if g.bias != nil {
			bias = g.bias[j0:j1]
		}
		for r := i0; r < i1; r++ {
			biasAct(g.vec, g.c[r*g.ldc+j0:r*g.ldc+j1], bias, g.act)
		}
	}
}

// gemmSerial is C = A*op(B) on the calling goroutine, op(B) packed by
// packB, for products that are themselves part of a task of a parallel
// kernel.
func gemmSerial(kern *microKernel, m, n, k int, a []float32, lda int, bp []float32, c []float32, ldc int, s *scratch) {
	g := gemmTask{kern: kern, m: m, n: n, k: k, alpha: 1, a: a, lda: lda, bp: bp, c: c, ldc: ldc}
	g.mc = (kern.mc + kern.mr - 1) / kern.mr * kern.mr
	g.mBlocks = (m + g.mc - 1) / g.mc
	g.panelsPerChunk = (n + kern.nr - 1) / kern.nr
	for i := 0; i < g.mBlocks; i++ {
		g.run(i, s)
	}
}
