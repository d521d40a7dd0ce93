//go:build cuda && cgo

package emu

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/bertstream/bertstream/kernels"
	"github.com/bertstream/bertstream/kernels/gpu"
)

// The kernels run as the cuda backend launches them: with kernels/gpu's
// launch configuration.

type dtype = gpu.Type

const (
	f32  = gpu.F32
	f16  = gpu.F16
	bf16 = gpu.BF16
)

var all = gpu.Types

// tol is nntest's: an F32 bound, or the unit roundoff of F16 and BF16
// over terms summed.
func tol(dt dtype, abs, rel float64, terms int) (float64, float64) {
	switch dt {
	case f16:
		return 2e-3 * math.Sqrt(float64(terms)), 4e-3
	case bf16:
		return 1.6e-2 * math.Sqrt(float64(terms)), 3e-2
	}
	return abs, rel
}

type env struct {
	t    *testing.T
	rng  *rand.Rand
	bufs []Buf
}

func newEnv(t *testing.T) *env {
	e := &env{t: t, rng: rand.New(rand.NewSource(1))}
	t.Cleanup(func() {
		for _, b := range e.bufs {
			b.Free()
		}
	})
	return e
}

func (e *env) alloc(n int) Buf {
	b := Alloc(n)
	e.bufs = append(e.bufs, b)
	return b
}

// put stores v in dtype dt and returns the buffer and the stored values.
func (e *env) put(dt dtype, v []float32) (Buf, []float32) {
	b := e.alloc(len(v) * dt.Size())
	return b, e.store(b, dt, v)
}

func (e *env) store(b Buf, dt dtype, v []float32) []float32 {
	if dt == f32 {
		copy(b.F32(), v)
		return append([]float32(nil), v...)
	}
	u := b.U16()[:len(v)]
	got := make([]float32, len(v))
	if dt == f16 {
		kernels.F32ToF16(u, v)
		kernels.F16ToF32(got, u)
	} else {
		kernels.F32ToBF16(u, v)
		kernels.BF16ToF32(got, u)
	}
	return got
}

func (e *env) uniform(dt dtype, n int, lo, hi float32) (Buf, []float32) {
	v := make([]float32, n)
	for i := range v {
		v[i] = lo + (hi-lo)*e.rng.Float32()
	}
	return e.put(dt, v)
}

func (e *env) ints(v []int32) Buf {
	b := e.alloc(4 * len(v))
	copy(b.I32(), v)
	return b
}

func get(b Buf, dt dtype, n int) []float32 {
	out := make([]float32, n)
	switch dt {
	case f32:
		copy(out, b.F32())
	case f16:
		kernels.F16ToF32(out, b.U16()[:n])
	default:
		kernels.BF16ToF32(out, b.U16()[:n])
	}
	return out
}

func (e *env) launch(l gpu.Launch, args ...uint64) {
	e.t.Helper()
	if err := Launch(l, args...); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) check(what string, got, want []float32, abs, rel float64) {
	e.t.Helper()
	bad, worstAt, worst := 0, -1, 0.0
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if !(d <= abs+rel*math.Abs(float64(want[i]))) {
			if bad == 0 || !(d <= worst) {
				worst, worstAt = d, i
			}
			bad++
		}
	}
	if bad > 0 {
		e.t.Errorf("%s: %d of %d values off (%g + %g*|want|); worst at %d: got %g, want %g", what, bad, len(want), abs, rel, worstAt, got[worstAt], want[worstAt])
	}
}

// TestEmulatesEveryKernel checks that every kernel kernels/gpu launches is
// compiled into the emulation, so that each has its test here.
func TestEmulatesEveryKernel(t *testing.T) {
	for _, m := range gpu.Modules() {
		for _, k := range m.Kernels {
			if !Has(k) {
				t.Errorf("%s (%s.cu) is not in emu.cc's table", k, m.Name)
			}
		}
	}
}

func TestConvert(t *testing.T) {
	e := newEnv(t)
	src := []float32{0, float32(math.Copysign(0, -1)), 1e-6, -6e-8, 65504, 65520, 70000, -3.14159, 1e-40,
		float32(math.Inf(1)), float32(math.Inf(-1)), math.Float32frombits(0x7fc00001), math.Float32frombits(0xffa00000)}
	for i := 0; i < 300; i++ {
		src = append(src, float32(e.rng.NormFloat64()*math.Pow(10, float64(e.rng.Intn(12)-6))))
	}
	n := len(src)
	in := e.alloc(4 * n)
	copy(in.F32(), src)
	for _, c := range []struct {
		half  dtype
		host  func([]uint16, []float32)
		widen func([]float32, []uint16)
	}{{f16, kernels.F32ToF16, kernels.F16ToF32}, {bf16, kernels.F32ToBF16, kernels.BF16ToF32}} {
		half := e.alloc(2 * n)
		narrow := gpu.Convert(f32, c.half, int64(n))
		e.launch(narrow, half.Ptr(), in.Ptr(), I64(int64(n)))
		want := make([]uint16, n)
		c.host(want, src)
		for i, h := range half.U16() {
			if h != want[i] {
				t.Errorf("%s(%g) = %#04x, want %#04x", narrow.Kernel, src[i], h, want[i])
			}
		}
		out := e.alloc(4 * n)
		back := gpu.Convert(c.half, f32, int64(n))
		e.launch(back, out.Ptr(), half.Ptr(), I64(int64(n)))
		wide := make([]float32, n)
		c.widen(wide, want)
		for i, v := range out.F32() {
			if math.Float32bits(v) != math.Float32bits(wide[i]) {
				t.Errorf("%s(%#04x) = %#08x, want %#08x", back.Kernel, want[i], math.Float32bits(v), math.Float32bits(wide[i]))
			}
		}
	}
}

var acts = []kernels.Act{kernels.ActGELU, kernels.ActGELUTanh, kernels.ActReLU, kernels.ActTanh}

// TestGELU runs GELU, and the other activations that a configuration may
// name, as Linear's epilogue applies them: in place, and with the bias.
func TestGELU(t *testing.T) {
	e := newEnv(t)
	for _, dt := range all {
		for _, a := range acts {
			const rows, cols = 7, 129 // n not a multiple of the vector width: a tail
			vals := make([]float32, rows*cols)
			for i := range vals {
				vals[i] = -6 + 12*e.rng.Float32()
			}
			vals[0], vals[1], vals[2] = 0, -12, 12
			x, xh := e.put(dt, vals)
			n := int64(rows * cols)
			e.launch(gpu.GELU(dt, n), x.Ptr(), I64(n), I32(int(a)))
			want := append([]float32(nil), xh...)
			kernels.BiasActRef(want, rows, cols, nil, a)
			abs, rel := tol(dt, 2e-6, 1e-5, 1)
			e.check(fmt.Sprintf("gelu %s %s", a, dt), get(x, dt, int(n)), want, abs, rel)

			y, yh := e.put(dt, vals)
			bias, bh := e.uniform(dt, cols, -1, 1)
			e.launch(gpu.BiasGELU(dt, rows, cols), y.Ptr(), bias.Ptr(), I64(rows), I32(cols), I32(int(a)))
			want = append(want[:0], yh...)
			kernels.BiasActRef(want, rows, cols, bh, a)
			abs, rel = tol(dt, 2e-6, 1e-5, 2)
			e.check(fmt.Sprintf("bias_gelu %s %s", a, dt), get(y, dt, int(n)), want, abs, rel)
		}
	}
}

func TestLayerNorm(t *testing.T) {
	e := newEnv(t)
	for _, dt := range all {
		for v := 1; v <= gpu.LayerNormVersions; v++ {
			for _, rows := range []int{1, 17} {
				for _, cols := range []int{1, 3, 65, 768} {
					for _, withRes := range []bool{false, true} {
						l := gpu.LayerNorm(v, dt, rows)
						name := fmt.Sprintf("%s rows=%d cols=%d residual=%v", l.Kernel, rows, cols, withRes)
						x, xh := e.uniform(dt, rows*cols, -3, 5)
						gamma, gh := e.uniform(dt, cols, 0.5, 1.5)
						beta, bh := e.uniform(dt, cols, -1, 1)
						var res Buf
						var rh []float32
						if withRes {
							res, rh = e.uniform(dt, rows*cols, -1, 1)
						}
						want := make([]float32, rows*cols)
						kernels.LayerNormRef(want, xh, rh, rows, cols, gh, bh, 1e-12)
						// In place, as BERT's layers call it: out is x.
						e.launch(l, x.Ptr(), x.Ptr(), res.Ptr(), gamma.Ptr(), beta.Ptr(), I32(rows), I32(cols), F32(1e-12))
						abs, rel := tol(dt, 2e-5, 1e-5, 1)
						e.check(name, get(x, dt, rows*cols), want, abs, rel)
					}
				}
			}
		}
	}
}

func TestAttention(t *testing.T) {
	e := newEnv(t)
	type tc struct {
		hidden, heads int
		lengths       []int
	}
	cases := []tc{{4, 1, []int{1}}, {12, 3, []int{3, 0, 2}}, {64, 4, []int{17, 1, 40}}, {48, 2, []int{33, 32}}, {15, 5, []int{9, 16, 1, 4}}}
	for _, dt := range all {
		for v := 1; v <= gpu.AttentionVersions; v++ {
			cs := cases
			if v == 3 {
				if dt == f32 {
					continue
				}
				// Heads of 32 and 64; partial query and key tiles; an
				// empty sequence.
				cs = []tc{{128, 2, []int{65, 1, 0, 33}}, {64, 2, []int{70, 7}}}
			}
			for _, c := range cs {
				sh := kernels.SeqOffsets(c.lengths...)
				n, nseq := int(sh[len(sh)-1]), len(c.lengths)
				longest := 0
				for _, l := range c.lengths {
					longest = max(longest, l)
				}
				dh := c.hidden / c.heads
				qkv, qh := e.uniform(dt, n*3*c.hidden, -1, 1)
				out := e.alloc(n * c.hidden * dt.Size())
				scale := float32(1 / math.Sqrt(float64(dh)))
				seqs := e.ints(sh)
				l := gpu.Attention(v, dt, n, c.hidden, c.heads, longest, nseq)
				name := fmt.Sprintf("%s hidden=%d heads=%d lengths=%v", l.Kernel, c.hidden, c.heads, c.lengths)
				if v == 1 {
					e.launch(l, out.Ptr(), qkv.Ptr(), seqs.Ptr(), I32(nseq), I32(n), I32(c.hidden), I32(c.heads), F32(scale))
				} else {
					e.launch(l, out.Ptr(), qkv.Ptr(), seqs.Ptr(), I32(c.hidden), I32(c.heads), F32(scale))
				}
				want := make([]float32, n*c.hidden)
				kernels.AttentionRef(want, qh, sh, c.hidden, c.heads, scale)
				abs, rel := tol(dt, 2e-6*math.Sqrt(float64(longest*dh)), 1e-5, longest)
				e.check(name, get(out, dt, n*c.hidden), want, abs, rel)
			}
		}
	}
}

func TestEmbed(t *testing.T) {
	e := newEnv(t)
	const vocab, npos, ntypes = 50, 140, 2
	for _, dt := range all {
		for v := 1; v <= gpu.EmbedVersions; v++ {
			for _, c := range []struct{ n, hidden int }{{1, 1}, {3, 17}, {51, 65}, {10, 768}} {
				for _, withTypes := range []bool{false, true} {
					l := gpu.Embed(v, dt, c.n)
					name := fmt.Sprintf("%s n=%d hidden=%d types=%v", l.Kernel, c.n, c.hidden, withTypes)
					word, wh := e.uniform(dt, vocab*c.hidden, -1, 1)
					pos, ph := e.uniform(dt, npos*c.hidden, -1, 1)
					typ, th := e.uniform(dt, ntypes*c.hidden, -1, 1)
					gamma, gh := e.uniform(dt, c.hidden, 0.5, 1.5)
					beta, bh := e.uniform(dt, c.hidden, -1, 1)
					ids, tys, ps := make([]int32, c.n), make([]int32, c.n), make([]int32, c.n)
					for i := range ids {
						ids[i], tys[i], ps[i] = int32(e.rng.Intn(vocab)), int32(e.rng.Intn(ntypes)), int32(e.rng.Intn(npos))
					}
					var types Buf
					var typesRef []int32
					if withTypes {
						types, typesRef = e.ints(tys), tys
					}
					out := e.alloc(c.n * c.hidden * dt.Size())
					e.launch(l, out.Ptr(), e.ints(ids).Ptr(), types.Ptr(), e.ints(ps).Ptr(), I32(c.n), I32(c.hidden),
						word.Ptr(), pos.Ptr(), typ.Ptr(), gamma.Ptr(), beta.Ptr(), F32(1e-12))
					want := make([]float32, c.n*c.hidden)
					if err := kernels.EmbedLayerNormRef(want, ids, typesRef, ps, c.hidden, wh, ph, th, gh, bh, 1e-12); err != nil {
						t.Fatal(err)
					}
					abs, rel := tol(dt, 2e-5, 1e-5, 1)
					e.check(name, get(out, dt, c.n*c.hidden), want, abs, rel)
				}
			}
		}
	}
}

// rowCases are rows of 64, 260 and 130 bytes, which the kernels move as
// words of 16, 4 and 2 bytes.
var rowCases = []int{64, 260, 130}

// randomRows returns rows x rowBytes random bytes.
func (e *env) randomRows(rows, rowBytes int) Buf {
	x := e.alloc(rows * rowBytes)
	for i := range x.U16() {
		x.U16()[i] = uint16(e.rng.Intn(1 << 16))
	}
	return x
}

func row(b Buf, rowBytes, r int) []uint16 { return b.U16()[r*rowBytes/2 : (r+1)*rowBytes/2] }

func TestGather(t *testing.T) {
	e := newEnv(t)
	for _, rowBytes := range rowCases {
		const rows = 17
		x := e.randomRows(rows, rowBytes)
		idx := []int32{16, 0, 8, 3}
		g := e.alloc(len(idx) * rowBytes)
		l, words := gpu.Gather(len(idx), rowBytes)
		e.launch(l, g.Ptr(), x.Ptr(), e.ints(idx).Ptr(), I32(len(idx)), I32(words))
		for i, r := range idx {
			if fmt.Sprint(row(g, rowBytes, i)) != fmt.Sprint(row(x, rowBytes, int(r))) {
				t.Errorf("%s: row %d is not row %d of x", l.Kernel, i, r)
			}
		}
	}
}

func TestScatter(t *testing.T) {
	e := newEnv(t)
	for _, rowBytes := range rowCases {
		const rows = 17
		idx := []int32{16, 0, 8, 3}
		x := e.randomRows(len(idx), rowBytes)
		s := e.alloc(rows * rowBytes)
		l, words := gpu.Scatter(len(idx), rowBytes)
		e.launch(l, s.Ptr(), x.Ptr(), e.ints(idx).Ptr(), I32(len(idx)), I32(words))
		from := map[int]int{}
		for i, r := range idx {
			from[int(r)] = i
		}
		for r := 0; r < rows; r++ {
			want := make([]uint16, rowBytes/2)
			if i, ok := from[r]; ok {
				want = row(x, rowBytes, i)
			}
			if fmt.Sprint(row(s, rowBytes, r)) != fmt.Sprint(want) {
				t.Errorf("%s: row %d wrong", l.Kernel, r)
			}
		}
	}
}

func TestPool(t *testing.T) {
	e := newEnv(t)
	for _, dt := range all {
		for _, p := range []kernels.Pooling{kernels.PoolCLS, kernels.PoolMean, kernels.PoolMax} {
			for _, c := range []struct {
				hidden  int
				lengths []int
			}{{1, []int{1}}, {3, []int{17, 0, 4}}, {129, []int{65, 1, 33, 2}}} {
				name := fmt.Sprintf("pool_%s %s hidden=%d lengths=%v", dt, p, c.hidden, c.lengths)
				sh := kernels.SeqOffsets(c.lengths...)
				n, nseq := int(sh[len(sh)-1]), len(c.lengths)
				x, xh := e.uniform(dt, n*c.hidden, -1, 1)
				out := e.alloc(nseq * c.hidden * dt.Size())
				e.launch(gpu.Pool(dt, c.hidden, nseq), out.Ptr(), x.Ptr(), e.ints(sh).Ptr(), I32(nseq), I32(c.hidden), I32(int(p)))
				want := make([]float32, nseq*c.hidden)
				kernels.PoolRef(want, xh, sh, c.hidden, p)
				abs, rel := tol(dt, 1e-6, 1e-5, 1)
				e.check(name, get(out, dt, nseq*c.hidden), want, abs, rel)
			}
		}
	}
}
