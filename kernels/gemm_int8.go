package kernels

import (
	"math"
	"sync"
	"unsafe"
)

// The INT8 path of the linear layers, dynamic quantization as ONNX
// Runtime's quantize_dynamic does it but with finer scales: weights
// quantized once, at load, per output channel (symmetric int8, scale
// max|w|/127), activations at run time per row, that is per token
// (symmetric, scale max|x|/127), products summed exactly in int32, and
// the result dequantized with both scales, bias and activation in the
// epilogue. Attention and LayerNorm stay float32.
//
// VPDPBUSD multiplies unsigned bytes by signed bytes, and only the signed
// operand can be broadcast from memory inside the instruction, which the
// activations are: so the weights are packed shifted by 128 (u = q + 128,
// in [1, 255]). The products then carry 128 * (the sum of the row's
// quantized activations), which quantization computes along the way and
// the epilogue subtracts: the integers are exactly those of the signed
// products, on every version.

// Int8Versions names the INT8 micro-kernels this CPU runs, fastest first
// ("avx512vnni", "avxvnni", "avx2-int8", "go-int8").
func Int8Versions() []string {
	var names []string
	for _, k := range int8Kernels() {
		names = append(names, k.name)
	}
	return names
}

func int8Kernels() []*int8Kernel {
	return append(asmInt8Kernels(), goInt8Kernel)
}

// quantScale returns the scale max|x|/127 of a row of values whose largest
// magnitude is amax, and the factor that maps the row onto [-127, 127].
func quantScale(amax float32) (scale, inv float32) {
	if amax == 0 || amax != amax || amax > math.MaxFloat32 {
		return 0, 0 // a zero row (or one without a finite scale) quantizes to zeros
	}
	return amax / 127, 127 / amax
}

// quantize is round-half-to-even of x*inv clamped to [-127, 127], what
// VCVTPS2DQ and VPMOVSDB compute.
func quantize(x, inv float32) int32 {
	v := float32(x * inv)
	return int32(max(-127, min(127, math.RoundToEven(float64(v)))))
}

// dequant is one output of the epilogue: the exact integer sum times the
// row's and the column's scales, plus the bias. The conversions keep the
// float32 operations apart (no fused multiply-add), as the vector code does.
func dequant(acc int32, rowScale, colScale, bias float32) float32 {
	return float32(float32(float32(acc)*rowScale)*colScale) + bias
}

// QuantizeRowsRef quantizes each of the rows x rows (cols values each, row
// stride cols) symmetrically: q[i*cols+j] = round(x/scale[i]), scale[i] =
// max|row i|/127. It is how both weights (per output channel) and
// activations (per token) are quantized.
func QuantizeRowsRef(q []int8, scale []float32, x []float32, rows, cols int) {
	for i := 0; i < rows; i++ {
		row := x[i*cols : i*cols+cols]
		var amax float32
		for _, v := range row {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		s, inv := quantScale(amax)
		scale[i] = s
		for j, v := range row {
			q[i*cols+j] = int8(quantize(v, inv))
		}
	}
}

// LinearInt8Ref computes act(x * w^T + bias) as the INT8 path does, in
// plain loops: x (m x k) and w (n x k) quantized per row, signed integer
// products summed in int32, then dequant and act. Every INT8 version
// computes these integers exactly.
func LinearInt8Ref(out, x []float32, m int, w []float32, n, k int, bias []float32, a Act) {
	qx, sx := make([]int8, m*k), make([]float32, m)
	qw, sw := make([]int8, n*k), make([]float32, n)
	QuantizeRowsRef(qx, sx, x, m, k)
	QuantizeRowsRef(qw, sw, w, n, k)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var acc int32
			for p := 0; p < k; p++ {
				acc += int32(qx[i*k+p]) * int32(qw[j*k+p])
			}
			var b float32
			if bias != nil {
				b = bias[j]
			}
			out[i*n+j] = dequant(acc, sx[i], sw[j], b)
		}
	}
	BiasActRef(out, m, n, nil, a)
}

// int8Kernel is one INT8 micro-kernel and its blocking. k is counted in
// quads: groups of 4 consecutive values of a row.
type int8Kernel struct {
	name   string
	mr, nr int
	kc, mc int // quads of a k block, rows of a row block
	// aw is the bytes of one packed activation: 1 (int8), or 2 (int16,
	// for a kernel that multiplies 16-bit words).
	aw int
	// run computes the mr x nr int32 tile c (row stride ldc) = [c +] a*b
	// over kq quads: a is a kq-quad slice of a panel of mr rows of signed
	// activations (for each quad, the mr rows' 4 values), b the same of a
	// weight panel (for each quad, nr columns of 4 shifted weights). kq >=
	// 1. With ep (the last k block), the tile is stored dequantized
	// instead, float32 in c's place.
	run func(kq int, a []byte, b []byte, c []int32, ldc int, add bool, ep *int8Epilogue)
	// maxAbs returns max|x|; quant writes quantize(x[j], inv) as value
	// j%4 (aw bytes, little-endian) of the quad at q[(j/4)*stride:], a row
	// of a panel of A, and returns their sum.
	maxAbs func(x []float32) float32
	quant  func(q []byte, stride int, x []float32, inv float32) int32
	// dequant sets c[j] = dequant(int32(c[j]) - corr, rowScale,
	// colScale[j], bias[j]) in place (bias may be nil: 0).
	dequant func(c []float32, corr int32, rowScale float32, colScale, bias []float32)
}

// int8Epilogue is what dequantizes one tile as a kernel stores it: its
// rows' corrections and scales (mr each), its columns' scales and bias (nr
// each; zeros where the layer has no bias).
type int8Epilogue struct {
	corr     *int32
	rowScale *float32
	colScale *float32
	bias     *float32
}

// int8NoBias is the bias of a tile of a layer without one.
var int8NoBias [32]float32

// int8Weight is a weight quantized and packed for one int8Kernel.
type int8Weight struct {
	kern  *int8Kernel
	kq    int
	words []float32 // backing store of packed (for adviseHuge)
	// packed holds panels of nr columns: for each quad, nr columns of 4
	// weights shifted by 128; the last panel and quad are padded with
	// (shifted) zeros.
	packed []byte
	scale  []float32 // per output channel
}

// PrepareWeightInt8 quantizes w (n x k, row-major) per output channel and
// packs it for e.Linear: the layer then computes with INT8 weights and
// activations quantized per token at run time.
func (e *Engine) PrepareWeightInt8(w []float32, n, k int) *Weight {
	pw := &Weight{N: n, K: k, Data: w}
	pw.i8 = packInt8(e.int8, w, n, k)
	return pw
}

func packInt8(kern *int8Kernel, w []float32, n, k int) *int8Weight {
	q, scale := make([]int8, n*k), make([]float32, n)
	QuantizeRowsRef(q, scale, w, n, k)
	nr, kq := kern.nr, (k+3)/4
	panels := (n + nr - 1) / nr
	pw := &int8Weight{kern: kern, kq: kq, scale: scale}
	pw.words = make([]float32, panels*nr*kq)
	adviseHuge(pw.words)
	if len(pw.words) > 0 {
		pw.packed = unsafe.Slice((*byte)(unsafe.Pointer(&pw.words[0])), 4*len(pw.words))
	}
	for i := range pw.packed {
		pw.packed[i] = 128
	}
	for j := 0; j < n; j++ {
		panel := pw.packed[j/nr*nr*kq*4:]
		jj := j % nr
		for p, v := range q[j*k : j*k+k] {
			panel[(p/4*nr+jj)*4+p%4] = byte(int32(v) + 128)
		}
	}
	return pw
}

// Int8 reports whether w computes with INT8 weights and activations.
func (w *Weight) Int8() bool { return w.i8 != nil }

// int8Bufs is the quantized activations of one call, shared by its
// tasks.
type int8Bufs struct {
	words []uint32 // backing store of q, 4-byte aligned
	q     []byte
	scale []float32
	corr  []int32 // 128 * the sum of each row's q
}

var int8BufPool = sync.Pool{New: func() any { return new(int8Bufs) }}

// int8Task is one Linear call of the INT8 path: first the quantization of
// the rows of x (tasks over groups of rows), then the product (tasks over
// blocks of rows and chunks of column panels, as gemmPacked's).
type int8Task struct {
	quantizing     bool
	kern           *int8Kernel
	vec            *vecOps
	m, n, k        int
	x              []float32
	w              *int8Weight
	q              []byte    // panels of mr rows (see int8Kernel.run), the last padded with zero rows
	panel          int       // bytes of one panel of q
	xs             []float32 // row scales
	corr           []int32   // the rows' correction for the shifted weights
	out            []float32
	bias           []float32
	act            Act
	mc, mBlocks    int
	panelsPerChunk int
	rowsPerTask    int
}

var int8Tasks = sync.Pool{New: func() any { return new(int8Task) }}

func (e *Engine) linearInt8(out, x []float32, m int, w *Weight, bias []float32, a Act) {
	// Tunings change a kernel's blocking, not its panels: a weight packed
	// by another tuning's engine serves as it is.
	if w.i8.kern.name != e.int8.name {
		w.i8 = packInt8(e.int8, w.Data, w.N, w.K)
	}
	kern := e.int8
	pw := w.i8
	mr, nr := kern.mr, kern.nr
	panel := mr * pw.kq * 4 * kern.aw
	mpad := (m + mr - 1) / mr * mr
	bufs := int8BufPool.Get().(*int8Bufs)
	if words := mpad * pw.kq * kern.aw; cap(bufs.words) < words {
		bufs.words = make([]uint32, words)
	}
	bufs.words = bufs.words[:mpad*pw.kq*kern.aw]
	bufs.q = unsafe.Slice((*byte)(unsafe.Pointer(&bufs.words[0])), 4*len(bufs.words))
	// Values past k meet the weights' padding, a shifted zero (128), which
	// no correction takes back: quantizeRows zeroes them. Rows past m only
	// reach tile rows no one reads; the last panel is cleared all the same,
	// so that nothing computed depends on old contents.
	if m < mpad {
		clear(bufs.q[m/mr*panel:])
	}
	bufs.scale = grow(&bufs.scale, m)
	if cap(bufs.corr) < m {
		bufs.corr = make([]int32, m)
	}
	bufs.corr = bufs.corr[:m]

	threads := e.Threads()
	g := int8Tasks.Get().(*int8Task)
	*g = int8Task{quantizing: true, kern: kern, vec: e.vec, m: m, n: w.N, k: w.K, x: x, w: pw,
		q: bufs.q, panel: panel, xs: bufs.scale, corr: bufs.corr, out: out, bias: bias, act: a}
	// Whole panels per task: two goroutines writing rows of one panel
	// would share every one of its cache lines (whole panels share at most
	// the line at each end).
	g.rowsPerTask = (max(1, (1<<14)/max(w.K, 1)) + mr - 1) / mr * mr
	parallel(threads, (m+g.rowsPerTask-1)/g.rowsPerTask, g)

	// The split of gemmPacked: equal row blocks, columns split too when
	// there are few row blocks, tasks cut so that they divide among the
	// goroutines.
	g.quantizing = false
	mc := kern.mc
	if m <= 4*mc {
		mc *= 2
	}
	g.mBlocks = (m + mc - 1) / mc
	g.mc = ((m+g.mBlocks-1)/g.mBlocks + mr - 1) / mr * mr
	g.mBlocks = (m + g.mc - 1) / g.mc
	nPanels := (w.N + nr - 1) / nr
	wk := threads
	if float64(m)*float64(w.N)*float64(w.K) < 1<<19 {
		wk = 1
	}
	chunks := 1
	if wk > 1 && g.mBlocks < 3*wk {
		chunks = min(nPanels, (3*wk+g.mBlocks-1)/g.mBlocks)
	}
	g.panelsPerChunk = (nPanels + chunks - 1) / chunks
	g.panelsPerChunk = min(g.panelsPerChunk, max(1, gemmNC/nr))
	chunks = (nPanels + g.panelsPerChunk - 1) / g.panelsPerChunk
	for wk > 1 && (g.mBlocks*chunks)%wk != 0 && g.mBlocks*chunks < 8*wk && g.panelsPerChunk > 1 {
		g.panelsPerChunk--
		chunks = (nPanels + g.panelsPerChunk - 1) / g.panelsPerChunk
	}
	parallel(wk, g.mBlocks*chunks, g)
	*g = int8Task{}
	int8Tasks.Put(g)
	int8BufPool.Put(bufs)
}

func (g *int8Task) run(t int, s *scratch) {
	if g.quantizing {
		g.quantizeRows(t)
		return
	}
	kern, pw := g.kern, g.w
	mr, nr, kc := kern.mr, kern.nr, kern.kc
	mi, nj := t%g.mBlocks, t/g.mBlocks
	i0 := mi * g.mc
	i1 := min(i0+g.mc, g.m)
	nPanels := (g.n + nr - 1) / nr
	p0 := nj * g.panelsPerChunk
	p1 := min(p0+g.panelsPerChunk, nPanels)
	tileF := grow(&s.tile, mr*nr)
	tile := int32s(tileF)
	c := int32s(g.out)
	var ep int8Epilogue
	for pc := 0; pc < pw.kq; pc += kc {
		kcb := min(kc, pw.kq-pc)
		add, last := pc > 0, pc+kcb == pw.kq
		for jp := p0; jp < p1; jp++ {
			bpan := pw.packed[(jp*pw.kq+pc)*nr*4:]
			j0 := jp * nr
			cols := min(nr, g.n-j0)
			var bias []float32
			if g.bias != nil {
				bias = g.bias[j0 : j0+cols]
			}
			for r := i0; r < i1; r += mr {
				rows := min(mr, i1-r)
				a := g.q[r/mr*g.panel+pc*mr*4*kern.aw:]
				if cols == nr && rows == mr {
					// The last k block stores the tile dequantized,
					// saving a pass over C.
					var tep *int8Epilogue
					if last {
						ep = int8Epilogue{corr: &g.corr[r : r+mr][0], rowScale: &g.xs[r : r+mr][0], colScale: &pw.scale[j0 : j0+nr][0], bias: &int8NoBias[0]}
						if bias != nil {
							ep.bias = &bias[:nr][0]
						}
						tep = &ep
					}
					kern.run(kcb, a, bpan, c[r*g.n+j0:], g.n, add, tep)
					continue
				}
				kern.run(kcb, a, bpan, tile, nr, false, nil)
				for i := 0; i < rows; i++ {
					d := c[(r+i)*g.n+j0 : (r+i)*g.n+j0+cols]
					src := tile[i*nr : i*nr+cols]
					if add {
						for j, v := range src {
							d[j] += v
						}
					} else {
						copy(d, src)
					}
					if last {
						kern.dequant(g.out[(r+i)*g.n+j0:(r+i)*g.n+j0+cols], g.corr[r+i], g.xs[r+i], pw.scale[j0:j0+cols], bias)
					}
				}
			}
		}
	}
	// The activation over the task's block while it is in L2.
	if g.act == ActNone {
		return
	}
	j0, j1 := p0*nr, min(p1*nr, g.n)
	for r := i0; r < i1; r++ {
		biasAct(g.vec, g.out[r*g.n+j0:r*g.n+j1], nil, g.act)
	}
}

// quantizeRows writes task t's rows of x, quantized, into their panels
// of q.
func (g *int8Task) quantizeRows(t int) {
	r0 := t * g.rowsPerTask
	mr, aw := g.kern.mr, g.kern.aw
	stride := 4 * mr * aw
	for r := r0; r < min(r0+g.rowsPerTask, g.m); r++ {
		x := g.x[r*g.k : r*g.k+g.k]
		s, inv := quantScale(g.kern.maxAbs(x))
		g.xs[r] = s
		q := g.q[r/mr*g.panel+r%mr*4*aw : (r/mr+1)*g.panel]
		g.corr[r] = 128 * g.kern.quant(q, stride, x, inv)
		if g.k%4 != 0 {
			last := q[(g.k/4)*stride:]
			clear(last[g.k%4*aw : 4*aw])
		}
	}
}

// int32s views C, while the INT8 product sums into it, as the int32s it
// holds until the epilogue.
func int32s(f []float32) []int32 {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*int32)(unsafe.Pointer(&f[0])), len(f))
}

// goInt8Kernel is the portable INT8 kernel, for CPUs without AVX2 and
// builds without assembly: the same packing (A in panels of 4 rows) and
// the same integers, 4 x 8 at a time.
var goInt8Kernel = &int8Kernel{name: "go-int8", mr: 4, nr: 8, kc: 256, mc: 128, aw: 1,
	run: kernelGoInt8, maxAbs: maxAbsGo, quant: quantGo, dequant: dequantGo}

func kernelGoInt8(kq int, a []byte, b []byte, c []int32, ldc int, add bool, ep *int8Epilogue) {
	var acc [4][8]int32
	a, b = a[:kq*16], b[:kq*32]
	for i := 0; i < 4; i++ {
		for p := 0; p < kq; p++ {
			aq := a[p*16+i*4 : p*16+i*4+4]
			q0, q1, q2, q3 := int32(int8(aq[0])), int32(int8(aq[1])), int32(int8(aq[2])), int32(int8(aq[3]))
			bq := b[p*32 : p*32+32]
			for j := 0; j < 8; j++ {
				w := bq[4*j : 4*j+4]
				acc[i][j] += q0*int32(w[0]) + q1*int32(w[1]) + q2*int32(w[2]) + q3*int32(w[3])
			}
		}
	}
	for i := 0; i < 4; i++ {
		d := c[i*ldc : i*ldc+8]
		for j := range d {
			if add {
				acc[i][j] += d[j]
			}
			d[j] = acc[i][j]
		}
	}
	if ep != nil {
		corr, rs := unsafe.Slice(ep.corr, 4), unsafe.Slice(ep.rowScale, 4)
		cs, bias := unsafe.Slice(ep.colScale, 8), unsafe.Slice(ep.bias, 8)
		for i := 0; i < 4; i++ {
			dequantGo(float32s(c[i*ldc:i*ldc+8]), corr[i], rs[i], cs, bias)
		}
	}
}

// float32s is int32s the other way: C's values once dequantized.
func float32s(c []int32) []float32 {
	return unsafe.Slice((*float32)(unsafe.Pointer(&c[0])), len(c))
}

func maxAbsGo(x []float32) float32 {
	var m float32
	for _, v := range x {
		m = max(m, float32(math.Abs(float64(v))))
	}
	return m
}

func quantGo(q []byte, stride int, x []float32, inv float32) int32 {
	var sum int32
	for j, v := range x {
		v := quantize(v, inv)
		q[j/4*stride+j%4] = byte(v)
		sum += v
	}
	return sum
}

func dequantGo(c []float32, corr int32, rowScale float32, colScale, bias []float32) {
	ci := int32s(c)
	for j := range c {
		var b float32
		if bias != nil {
			b = bias[j]
		}
		c[j] = dequant(ci[j]-corr, rowScale, colScale[j], b)
	}
}
