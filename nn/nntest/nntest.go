// Package nntest is the conformance suite every nn.Backend runs, in the
// spirit of ggml's test-backend-ops and gonum's testblas: each operation of
// the Backend interface is checked against the kernels package's plain
// references, computed on the host, over a table of shapes that includes
// odd sizes (1, 3, 17, 65, 129) so that tails of vector loops and tile
// edges are exercised. Inputs are made on the host, uploaded in the
// backend's compute dtype and downloaded again, so that the reference sees
// exactly the rounded values the backend computes on.
//
// An operation the backend reports as unsupported (an error wrapping
// nn.ErrUnsupported) is skipped with a message naming it, never silently.
package nntest

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/bertstream/bertstream/kernels"
	"github.com/bertstream/bertstream/nn"
)

// Run checks every operation of b. It closes every scope it opens and
// fails if tensors of b's device outlive them.
func Run(t *testing.T, b nn.Backend) {
	t.Helper()
	before := deviceTensors(b.Device())
	for _, tc := range []struct {
		name string
		fn   func(e *env)
	}{
		{"Upload", testUpload},
		{"Linear", testLinear},
		{"LayerNorm", testLayerNorm},
		{"Attention", testAttention},
		{"Embed", testEmbed},
		{"Gather", testGather},
		{"Scatter", testScatter},
		{"Pool", testPool},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := nn.NewScope("nntest/" + tc.name)
			defer s.Close()
			tc.fn(&env{t: t, b: b, s: s, rng: rand.New(rand.NewSource(1)), dt: b.Compute()})
			if err := b.Sync(); err != nil {
				t.Fatalf("sync: %v", err)
			}
		})
	}
	if after := deviceTensors(b.Device()); after != before {
		t.Errorf("%d tensors live on %s after the suite closed its scopes, %d before", after, b.Device(), before)
	}
}

// deviceTensors is the number of live tensors nn counts on dev.
func deviceTensors(dev string) int64 {
	for _, u := range nn.Usage() {
		if u.Device == dev {
			return u.Tensors
		}
	}
	return 0
}

// Sizes are the odd and even extents the shape tables draw from.
var Sizes = []int{1, 3, 17, 65, 129}

type env struct {
	t   *testing.T
	b   nn.Backend
	s   *nn.Scope
	rng *rand.Rand
	dt  nn.DType // the backend's compute dtype
}

// tol is a mixed tolerance: |got-want| <= abs + rel*|want|.
type tol struct{ abs, rel float64 }

// tolFor scales an F32 tolerance for lower-precision compute dtypes: the
// unit roundoff of F16 is 2^-11 and of BF16 2^-8, against F32's 2^-24.
func (e *env) tolFor(f32 tol, terms int) tol {
	switch e.dt {
	case nn.F16:
		return tol{abs: 2e-3 * math.Sqrt(float64(terms)), rel: 4e-3}
	case nn.BF16:
		return tol{abs: 1.6e-2 * math.Sqrt(float64(terms)), rel: 3e-2}
	}
	return f32
}

// ok handles an operation's error: nil passes, an unsupported operation
// skips the subtest with the backend's reason, anything else fails.
func (e *env) ok(op string, err error) bool {
	e.t.Helper()
	if err == nil {
		return true
	}
	if errors.Is(err, nn.ErrUnsupported) {
		e.t.Skipf("%s: %s reports it unsupported: %v", op, e.b.Name(), err)
	}
	e.t.Fatalf("%s: %v", op, err)
	return false
}

// uniform returns n values uniform in [lo, hi).
func (e *env) uniform(n int, lo, hi float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = lo + (hi-lo)*e.rng.Float32()
	}
	return v
}

// upload puts host values on the device in dtype dt and returns the tensor
// with the values as the device holds them (rounded to dt).
func (e *env) upload(data []float32, dt nn.DType, shape ...int) (*nn.Tensor, []float32) {
	e.t.Helper()
	h, err := nn.HostF32(e.s, data, shape...)
	if err != nil {
		e.t.Fatal(err)
	}
	d, err := e.b.Upload(e.s, h, dt)
	e.ok("upload", err)
	return d, e.download(d)
}

// act uploads random activations in the compute dtype.
func (e *env) act(shape ...int) (*nn.Tensor, []float32) {
	return e.upload(e.uniform(nn.NumElements(shape), -1, 1), e.dt, shape...)
}

func (e *env) ints(data []int32, shape ...int) *nn.Tensor {
	e.t.Helper()
	h, err := nn.HostI32(e.s, data, shape...)
	if err != nil {
		e.t.Fatal(err)
	}
	d, err := e.b.Upload(e.s, h, nn.I32)
	e.ok("upload I32", err)
	return d
}

func (e *env) download(d *nn.Tensor) []float32 {
	e.t.Helper()
	h, err := e.b.Download(e.s, d, nn.F32)
	e.ok("download", err)
	return h.F32()
}

// check compares a device tensor with reference values.
func (e *env) check(what string, got *nn.Tensor, want []float32, tl tol) {
	e.t.Helper()
	g := e.download(got)
	if len(g) != len(want) {
		e.t.Fatalf("%s: %d values, want %d", what, len(g), len(want))
	}
	bad, worst, worstAt := 0, 0.0, -1
	for i := range want {
		d := math.Abs(float64(g[i]) - float64(want[i]))
		lim := tl.abs + tl.rel*math.Abs(float64(want[i]))
		if !(d <= lim) { // NaN fails too
			if bad == 0 || d > worst || math.IsNaN(d) {
				worst, worstAt = d, i
			}
			bad++
		}
	}
	if bad > 0 {
		e.t.Errorf("%s: %d of %d values off (tolerance %g + %g*|want|); worst at %d: got %g, want %g",
			what, bad, len(want), tl.abs, tl.rel, worstAt, g[worstAt], want[worstAt])
	}
}

func testUpload(e *env) {
	src := e.uniform(129, -70000, 70000)
	src = append(src, 0, float32(math.Copysign(0, -1)), 1e-6, -6e-8, float32(math.Inf(1)), 65504, 3.14159)
	h, err := nn.HostF32(e.s, src, len(src))
	if err != nil {
		e.t.Fatal(err)
	}
	for _, dt := range []nn.DType{nn.F32, nn.F16, nn.BF16} {
		want := make([]float32, len(src))
		u := make([]uint16, len(src))
		switch dt {
		case nn.F32:
			copy(want, src)
		case nn.F16:
			kernels.F32ToF16(u, src)
			kernels.F16ToF32(want, u)
		case nn.BF16:
			kernels.F32ToBF16(u, src)
			kernels.BF16ToF32(want, u)
		}
		d, err := e.b.Upload(e.s, h, dt)
		if errors.Is(err, nn.ErrUnsupported) {
			e.t.Logf("upload F32 -> %s: unsupported by %s: %v", dt, e.b.Name(), err)
			continue
		}
		if err != nil {
			e.t.Fatalf("upload F32 -> %s: %v", dt, err)
		}
		if d.DType() != dt || !nn.SameShape(d.Shape(), h.Shape()) {
			e.t.Fatalf("upload F32 -> %s gave %v", dt, d)
		}
		got := e.download(d)
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				e.t.Errorf("F32 -> %s -> F32 of %g: got %g, want %g", dt, src[i], got[i], want[i])
			}
		}
	}

	ids := []int64{0, 1, 30521, -1, math.MaxInt32}
	h64 := nn.NewHost(e.s, nn.I64, len(ids))
	copy(h64.I64(), ids)
	d, err := e.b.Upload(e.s, h64, nn.I32)
	e.ok("upload I64 -> I32", err)
	back, err := e.b.Download(e.s, d, nn.I32)
	e.ok("download I32", err)
	for i, v := range back.I32() {
		if int64(v) != ids[i] {
			e.t.Errorf("I64 -> I32 at %d: got %d, want %d", i, v, ids[i])
		}
	}
	copy(h64.I64(), []int64{1, 1 << 40})
	if _, err := e.b.Upload(e.s, h64, nn.I32); err == nil {
		e.t.Errorf("upload of I64 1<<40 as I32 did not fail")
	}
}

func testLinear(e *env) {
	acts := []nn.Act{nn.ActNone, nn.ActGELU, nn.ActGELUTanh, nn.ActReLU, nn.ActTanh}
	i := 0
	for _, m := range Sizes {
		for _, n := range Sizes {
			for _, k := range Sizes {
				a := acts[i%len(acts)]
				withBias := i%2 == 0
				i++
				name := fmt.Sprintf("linear m=%d n=%d k=%d act=%s bias=%v", m, n, k, a, withBias)
				x, xh := e.act(m, k)
				if m%2 == 1 && m > 1 {
					// A 3-D activation is read as rows x last dimension.
					x, xh = e.act(1, m, k)
				}
				w, wh := e.act(n, k)
				e.ok(name+": prepare", e.b.PrepareWeight(w))
				var bias *nn.Tensor
				var bh []float32
				if withBias {
					bias, bh = e.act(n)
				}
				out := e.b.New(e.s, e.dt, m, n)
				e.ok(name, e.b.Linear(out, x, w, bias, a))
				want := make([]float32, m*n)
				kernels.GemmRef(false, true, m, n, k, 1, xh, k, wh, k, 0, want, n)
				kernels.BiasActRef(want, m, n, bh, a)
				e.check(name, out, want, e.tolFor(tol{abs: 2e-6 * float64(k), rel: 1e-5}, k))
			}
		}
	}
	// Activations far into their tails (where an approximation saturates
	// or a formula cancels), through an identity weight so that Linear's
	// epilogue sees exactly these values.
	for _, a := range acts {
		for _, n := range Sizes {
			name := fmt.Sprintf("linear identity act=%s n=%d", a, n)
			vals := e.uniform(7*n, -6, 6)
			vals[0] = 0
			if n > 1 {
				vals[1], vals[2] = -12, 12
			}
			x, xh := e.upload(vals, e.dt, 7, n)
			eye := make([]float32, n*n)
			for j := 0; j < n; j++ {
				eye[j*n+j] = 1
			}
			w, _ := e.upload(eye, e.dt, n, n)
			e.ok(name+": prepare", e.b.PrepareWeight(w))
			out := e.b.New(e.s, e.dt, 7, n)
			e.ok(name, e.b.Linear(out, x, w, nil, a))
			want := append([]float32(nil), xh...)
			kernels.BiasActRef(want, 7, n, nil, a)
			e.check(name, out, want, e.tolFor(tol{abs: 2e-6, rel: 1e-5}, 1))
		}
	}
	x, _ := e.act(3, 5)
	w, _ := e.act(4, 6)
	e.ok("prepare", e.b.PrepareWeight(w))
	if err := e.b.Linear(e.b.New(e.s, e.dt, 3, 4), x, w, nil, nn.ActNone); err == nil {
		e.t.Errorf("linear of x [3,5] by weight [4,6] did not fail")
	}
}

func testLayerNorm(e *env) {
	for _, rows := range []int{1, 3, 17} {
		for _, cols := range []int{1, 3, 17, 65, 129, 768} {
			for _, withRes := range []bool{false, true} {
				name := fmt.Sprintf("addlayernorm rows=%d cols=%d residual=%v", rows, cols, withRes)
				x, xh := e.upload(e.uniform(rows*cols, -3, 5), e.dt, rows, cols)
				gamma, gh := e.upload(e.uniform(cols, 0.5, 1.5), e.dt, cols)
				beta, bh := e.act(cols)
				var res *nn.Tensor
				var rh []float32
				if withRes {
					res, rh = e.act(rows, cols)
				}
				out := e.b.New(e.s, e.dt, rows, cols)
				e.ok(name, e.b.LayerNorm(out, x, res, gamma, beta, 1e-12))
				want := make([]float32, rows*cols)
				kernels.LayerNormRef(want, xh, rh, rows, cols, gh, bh, 1e-12)
				e.check(name, out, want, e.tolFor(tol{abs: 2e-5, rel: 1e-5}, 1))

				// In place, as BERT's post-LN layers call it: out is x.
				if withRes {
					x2, _ := e.upload(xh, e.dt, rows, cols)
					e.ok(name+" in place", e.b.LayerNorm(x2, x2, res, gamma, beta, 1e-12))
					e.check(name+" in place", x2, want, e.tolFor(tol{abs: 2e-5, rel: 1e-5}, 1))
				}
			}
		}
	}
}

func testAttention(e *env) {
	for _, c := range []struct {
		hidden, heads int
		lengths       []int
	}{
		{4, 1, []int{1}}, {12, 3, []int{3, 0, 2}}, {64, 4, []int{17, 1, 17}}, {48, 2, []int{65, 64}},
		{32, 2, []int{129, 3, 100}}, {768, 12, []int{33, 7}}, {15, 5, []int{9, 16, 1, 4}},
	} {
		name := fmt.Sprintf("attention hidden=%d heads=%d lengths=%v", c.hidden, c.heads, c.lengths)
		sh := kernels.SeqOffsets(c.lengths...)
		n := int(sh[len(sh)-1])
		maxLen := 0
		for _, l := range c.lengths {
			maxLen = max(maxLen, l)
		}
		qkv, qh := e.upload(e.uniform(n*3*c.hidden, -1, 1), e.dt, n, 3*c.hidden)
		seqs := e.ints(sh, len(sh))
		out := e.b.New(e.s, e.dt, n, c.hidden)
		scale := float32(1 / math.Sqrt(float64(c.hidden/c.heads)))
		e.ok(name, e.b.Attention(out, qkv, seqs, maxLen, c.heads, scale))
		want := make([]float32, n*c.hidden)
		kernels.AttentionRef(want, qh, sh, c.hidden, c.heads, scale)
		e.check(name, out, want, e.tolFor(tol{abs: 2e-6 * math.Sqrt(float64(maxLen*c.hidden/c.heads)), rel: 1e-5}, maxLen))

		if maxLen > 1 {
			if err := e.b.Attention(out, qkv, seqs, maxLen-1, c.heads, scale); err == nil {
				e.t.Errorf("%s: a sequence of %d tokens with maxLen %d did not fail", name, maxLen, maxLen-1)
			}
		}
	}
	qkv, _ := e.act(5, 12)
	out := e.b.New(e.s, e.dt, 5, 4)
	for _, bad := range [][]int32{{0, 4}, {1, 5}, {0, 3, 2, 5}} {
		if err := e.b.Attention(out, qkv, e.ints(bad, len(bad)), 5, 2, 1); err == nil {
			e.t.Errorf("attention over 5 tokens with offsets %v did not fail", bad)
		}
	}
}

func testEmbed(e *env) {
	const vocab, npos, ntypes = 50, 140, 2
	for _, c := range []struct{ n, hidden int }{{1, 1}, {3, 17}, {51, 65}, {258, 3}, {10, 768}} {
		for _, withTypes := range []bool{false, true} {
			name := fmt.Sprintf("embed n=%d hidden=%d types=%v", c.n, c.hidden, withTypes)
			word, wh := e.act(vocab, c.hidden)
			pos, ph := e.act(npos, c.hidden)
			typ, th := e.act(ntypes, c.hidden)
			gamma, gh := e.upload(e.uniform(c.hidden, 0.5, 1.5), e.dt, c.hidden)
			beta, bh := e.act(c.hidden)
			idh := make([]int32, c.n)
			tyh := make([]int32, c.n)
			ph32 := make([]int32, c.n)
			for i := range idh {
				idh[i] = int32(e.rng.Intn(vocab))
				tyh[i] = int32(e.rng.Intn(ntypes))
				ph32[i] = int32(e.rng.Intn(npos))
			}
			idh[0], ph32[0] = vocab-1, npos-1
			ids, positions := e.ints(idh, c.n), e.ints(ph32, c.n)
			var types *nn.Tensor
			var tys []int32
			if withTypes {
				types, tys = e.ints(tyh, c.n), tyh
			}
			out := e.b.New(e.s, e.dt, c.n, c.hidden)
			e.ok(name, e.b.Embed(out, ids, types, positions, word, pos, typ, gamma, beta, 1e-12))
			want := make([]float32, c.n*c.hidden)
			if err := kernels.EmbedLayerNormRef(want, idh, tys, ph32, c.hidden, wh, ph, th, gh, bh, 1e-12); err != nil {
				e.t.Fatalf("%s: reference: %v", name, err)
			}
			e.check(name, out, want, e.tolFor(tol{abs: 2e-5, rel: 1e-5}, 1))

			for _, badID := range []int32{vocab, -1} {
				bad := append([]int32(nil), idh...)
				bad[len(bad)-1] = badID
				err := e.b.Embed(out, e.ints(bad, c.n), types, positions, word, pos, typ, gamma, beta, 1e-12)
				if errors.Is(err, nn.ErrUnsupported) || err == nil {
					e.t.Errorf("%s: id %d outside the vocabulary of %d: got error %v", name, badID, vocab, err)
				}
			}
			bad := append([]int32(nil), ph32...)
			bad[len(bad)-1] = npos
			if err := e.b.Embed(out, ids, types, e.ints(bad, c.n), word, pos, typ, gamma, beta, 1e-12); err == nil {
				e.t.Errorf("%s: position %d outside the %d position embeddings did not fail", name, npos, npos)
			}
		}
	}
}

func testGather(e *env) {
	for _, rows := range []int{1, 17, 129} {
		for _, h := range []int{1, 3, 65} {
			name := fmt.Sprintf("gather rows=%d hidden=%d", rows, h)
			x, xh := e.act(rows, h)
			idx := []int32{0, int32(rows - 1), int32(rows / 2), 0}
			out := e.b.New(e.s, e.dt, len(idx), h)
			e.ok(name, e.b.Gather(out, x, e.ints(idx, len(idx))))
			want := make([]float32, 0, len(idx)*h)
			for _, r := range idx {
				want = append(want, xh[int(r)*h:int(r+1)*h]...)
			}
			e.check(name, out, want, tol{})
			if err := e.b.Gather(out, x, e.ints([]int32{0, 0, int32(rows), 0}, 4)); err == nil {
				e.t.Errorf("%s: index %d outside %d rows did not fail", name, rows, rows)
			}
		}
	}
}

func testScatter(e *env) {
	for _, rows := range []int{1, 17, 129} {
		for _, h := range []int{1, 3, 65} {
			name := fmt.Sprintf("scatter rows=%d hidden=%d", rows, h)
			idx := []int32{int32(rows - 1)}
			if rows > 2 {
				idx = []int32{0, int32(rows - 1), int32(rows / 2)}
			}
			x, xh := e.act(len(idx), h)
			out, _ := e.act(rows, h) // old contents must not survive
			e.ok(name, e.b.Scatter(out, x, e.ints(idx, len(idx))))
			want := make([]float32, rows*h)
			for i, r := range idx {
				copy(want[int(r)*h:int(r+1)*h], xh[i*h:(i+1)*h])
			}
			e.check(name, out, want, tol{})
			bad := append([]int32(nil), idx...)
			bad[0] = int32(rows)
			if err := e.b.Scatter(out, x, e.ints(bad, len(bad))); err == nil {
				e.t.Errorf("%s: index %d outside %d rows did not fail", name, rows, rows)
			}
			if len(idx) > 1 {
				dup := append([]int32(nil), idx...)
				dup[1] = dup[0]
				if err := e.b.Scatter(out, x, e.ints(dup, len(dup))); err == nil {
					e.t.Errorf("%s: row %d named twice did not fail", name, dup[0])
				}
			}
		}
	}
}

func testPool(e *env) {
	for _, p := range []nn.Pooling{nn.PoolCLS, nn.PoolMean, nn.PoolMax} {
		for _, c := range []struct {
			hidden  int
			lengths []int
		}{{1, []int{1}}, {3, []int{17, 0, 4}}, {129, []int{65, 1, 33, 2}}} {
			name := fmt.Sprintf("pool %s hidden=%d lengths=%v", p, c.hidden, c.lengths)
			sh := kernels.SeqOffsets(c.lengths...)
			n := int(sh[len(sh)-1])
			x, xh := e.act(n, c.hidden)
			out := e.b.New(e.s, e.dt, len(c.lengths), c.hidden)
			e.ok(name, e.b.Pool(out, x, e.ints(sh, len(sh)), p))
			want := make([]float32, len(c.lengths)*c.hidden)
			kernels.PoolRef(want, xh, sh, c.hidden, p)
			e.check(name, out, want, e.tolFor(tol{abs: 1e-6, rel: 1e-5}, 1))
		}
	}
}
