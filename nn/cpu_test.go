package nn_test

import (
	"fmt"
	"math/rand"
	"sync"
	"testing"

	"github.com/bertstream/bertstream/kernels"
	"github.com/bertstream/bertstream/nn"
	"github.com/bertstream/bertstream/nn/nntest"
)

// TestCPUConformance runs the suite once per kernel version this CPU
// has (avx512, avx2, go), each on a backend configured for it, so that
// every version of every kernel meets the references on the suite's odd
// shapes.
func TestCPUConformance(t *testing.T) {
	for _, v := range kernels.Versions() {
		t.Run(v, func(t *testing.T) {
			b, err := nn.Open("cpu", nn.Options{Kernels: v})
			if err != nil {
				t.Fatal(err)
			}
			if got := b.(nn.CPU).Kernels().Config().Version; got != v {
				t.Fatalf("backend opened for %s runs %s", v, got)
			}
			nntest.Run(t, b)
		})
	}
}

func TestCPUOptions(t *testing.T) {
	for _, bad := range []nn.Options{{Kernels: "sse1"}, {Compute: nn.BF16, BF16Kernels: "fp8"}, {BLAS: "mkl"}, {Compute: nn.F16}, {Int8: true, Int8Kernels: "int4"}, {Int8: true, Compute: nn.BF16}} {
		if _, err := nn.Open("cpu", bad); err == nil {
			t.Errorf("options %+v accepted", bad)
		}
	}
	t.Setenv("BERTSTREAM_BLAS", "gonum")
	for blas, want := range map[string]string{"": "gonum", "native": "native"} {
		b, err := nn.Open("cpu", nn.Options{BLAS: blas, Threads: 3})
		if err != nil {
			t.Fatal(err)
		}
		k := b.(nn.CPU).Kernels()
		if got := k.Config().BLAS; got != want || k.Threads() != 3 {
			t.Errorf("BLAS %q with BERTSTREAM_BLAS=gonum: %s on %d threads, want %s on 3", blas, got, k.Threads(), want)
		}
	}
}

// TestCPUBackendsSideBySide runs CPU backends of different kernel versions
// and thread counts at once, each from its own goroutine: every backend
// packs its weights for its own version and computes its own version's
// results (which differ between versions in the last bits), whatever the
// others run meanwhile.
func TestCPUBackendsSideBySide(t *testing.T) {
	vs, bvs, ivs := kernels.Versions(), kernels.BF16Versions(), kernels.Int8Versions()
	opts := []nn.Options{
		{Int8: true, Int8Kernels: ivs[0], Threads: 2},
		{Int8: true, Int8Kernels: ivs[len(ivs)-1], Kernels: vs[len(vs)-1], Threads: 1},
		{Kernels: vs[0], Threads: 1},
		{Kernels: vs[len(vs)-1], Threads: 2},
		{Compute: nn.BF16, BF16Kernels: bvs[0], Threads: 2},
		{Compute: nn.BF16, BF16Kernels: bvs[len(bvs)-1], Kernels: vs[len(vs)-1], Threads: 1},
	}
	const m, n, k, hidden, heads, rounds = 37, 129, 257, 48, 4, 20
	rng := rand.New(rand.NewSource(1))
	rnd := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = 2*rng.Float32() - 1
		}
		return v
	}
	xv, wv, bv := rnd(m*k), rnd(n*k), rnd(n)
	// A sequence long enough for the BF16 backends' BF16 attention beside
	// short ones that keep F32's.
	seqv := kernels.SeqOffsets(5, 17, kernels.Default().BF16AttentionMin()+3)
	tokens := int(seqv[len(seqv)-1])
	qkvv := rnd(tokens * 3 * hidden)
	s := nn.NewScope("side by side")
	defer s.Close()
	host := func(v []float32, shape ...int) *nn.Tensor {
		x, err := nn.HostF32(s, v, shape...)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	x, bias, qkv := host(xv, m, k), host(bv, n), host(qkvv, tokens, 3*hidden)
	seqs, err := nn.HostI32(s, seqv, len(seqv))
	if err != nil {
		t.Fatal(err)
	}

	type run struct {
		be                  nn.Backend
		w, lin, att         *nn.Tensor
		wantLin, wantAtt    []float32
		packedFor, wantPack string
	}
	runs := make([]run, len(opts))
	for i, o := range opts {
		be, err := nn.Open("cpu", o)
		if err != nil {
			t.Fatal(err)
		}
		r := run{be: be, w: host(wv, n, k), lin: be.New(s, nn.F32, m, n), att: be.New(s, nn.F32, tokens, hidden)}
		if err := be.PrepareWeight(r.w); err != nil {
			t.Fatal(err)
		}
		// The expected results: the same configuration's kernels, called
		// directly, before anything runs concurrently.
		e, err := kernels.New(kernels.Config{Version: o.Kernels, BF16Version: o.BF16Kernels, Int8Version: o.Int8Kernels, Threads: o.Threads})
		if err != nil {
			t.Fatal(err)
		}
		var pw *kernels.Weight
		pw, r.wantPack = e.PrepareWeight(wv, n, k), e.Config().Version
		if o.Compute == nn.BF16 {
			pw, r.wantPack = e.PrepareWeightBF16(wv, n, k), e.Config().BF16Version
		}
		if o.Int8 {
			pw, r.wantPack = e.PrepareWeightInt8(wv, n, k), e.Config().Int8Version
		}
		r.wantLin, r.wantAtt = make([]float32, m*n), make([]float32, tokens*hidden)
		e.Linear(r.wantLin, xv, m, pw, bv, nn.ActGELU)
		if o.Compute == nn.BF16 {
			e.AttentionBF16(r.wantAtt, qkvv, seqv, hidden, heads, 0.25)
		} else {
			e.Attention(r.wantAtt, qkvv, seqv, hidden, heads, 0.25)
		}
		runs[i] = r
	}

	var wg sync.WaitGroup
	errs := make([]error, len(runs))
	for i := range runs {
		r := &runs[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				if err := r.be.Linear(r.lin, x, r.w, bias, nn.ActGELU); err != nil {
					errs[i] = err
					return
				}
				if err := r.be.Attention(r.att, qkv, seqs, tokens-22, heads, 0.25); err != nil {
					errs[i] = err
					return
				}
				if d := nn.MaxAbsDiff(r.lin.F32(), r.wantLin) + nn.MaxAbsDiff(r.att.F32(), r.wantAtt); d != 0 {
					errs[i] = fmt.Errorf("results differ from their version's by %g", d)
					return
				}
			}
			r.packedFor = r.w.Storage().(*nn.HostStorage).Prepared.(*kernels.Weight).PackedFor()
		}()
	}
	wg.Wait()
	for i, r := range runs {
		if errs[i] != nil {
			t.Errorf("backend %+v: %v", opts[i], errs[i])
		} else if r.packedFor != r.wantPack {
			t.Errorf("backend %+v: weight packed for %s, want %s", opts[i], r.packedFor, r.wantPack)
		}
	}
}

// TestCPUScopeLeak checks that closing a scope frees what operations
// allocated in it and its children.
func TestCPUScopeLeak(t *testing.T) {
	b, err := nn.Open("cpu", nn.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := nn.NewScope("leak")
	x, err := nn.HostF32(s, []float32{1, 2, 3, 4, 5, 6}, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	c := s.Child("layer")
	w, err := b.Upload(c, x, nn.F32)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.PrepareWeight(w); err != nil {
		t.Fatal(err)
	}
	out := b.New(c, nn.F32, 2, 2)
	if err := b.Linear(out, x, w, nil, nn.ActGELU); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Live(); n != 3 {
		t.Errorf("live tensors before close: %d, want 3", n)
	}
	s.Close()
	if n, bytes := s.Live(); n != 0 || bytes != 0 {
		t.Errorf("after close: %d tensors, %d bytes live", n, bytes)
	}
}
