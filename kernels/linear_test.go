package kernels

import (
	"fmt"
	"math"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
)

var allActs = []Act{ActNone, ActGELU, ActGELUTanh, ActReLU, ActTanh}

func TestLinearVersions(t *testing.T) {
	forVersions(t, func(t *testing.T, e *Engine) {
		rng := rand.New(rand.NewSource(2))
		for _, a := range allActs {
			for _, m := range oddSizes {
				for _, n := range []int{1, 17, 129} {
					for _, k := range []int{3, 65, 257} {
						x, wd, bias := randSlice(rng, m*k), randSlice(rng, n*k), randSlice(rng, n)
						w := e.PrepareWeight(wd, n, k)
						b := bias
						if n == 17 {
							b = nil
						}
						want := make([]float32, m*n)
						LinearRef(want, x, m, wd, n, k, b, a)
						got := make([]float32, m*n)
						e.Linear(got, x, m, w, b, a)
						if err := closeTo(got, want, 2e-6*float64(k), 1e-5); err != nil {
							t.Fatalf("linear m=%d n=%d k=%d act=%s bias=%v: %v", m, n, k, a, b != nil, err)
						}
					}
				}
			}
		}
	})
}

func roundBF16(x []float32) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = math.Float32frombits(uint32(f32ToBF16(v)) << 16)
	}
	return out
}

// TestLinearBF16Versions checks each BF16 kernel, under each entry of the
// blocking table that blocks it otherwise, against the float64 reference
// on BF16-rounded inputs (the kernel's products are exact there, only the
// float32 sums round), on odd sizes and odd k (a half pair), k in one
// slice and in several.
func TestLinearBF16Versions(t *testing.T) {
	for _, v := range BF16Versions() {
		seen := map[[2]int]bool{}
		for _, tn := range Tunings() {
			e := engine(t, Config{BF16Version: v, Tuning: tn})
			if key := [2]int{e.bf16.kc, e.bf16.mc}; !seen[key] {
				seen[key] = true
				t.Run(v+"/"+tn, func(t *testing.T) { testLinearBF16(t, e) })
			}
		}
	}
}

func testLinearBF16(t *testing.T, e *Engine) {
	rng := rand.New(rand.NewSource(8))
	for _, a := range []Act{ActNone, ActGELU} {
		for _, m := range oddSizes {
			for _, n := range []int{1, 17, 129} {
				for _, k := range []int{1, 3, 64, 513, 1031} {
					x, wd, bias := randSlice(rng, m*k), randSlice(rng, n*k), randSlice(rng, n)
					w := e.PrepareWeightBF16(wd, n, k)
					got := make([]float32, m*n)
					e.Linear(got, x, m, w, bias, a)
					want := make([]float32, m*n)
					LinearRef(want, roundBF16(x), m, roundBF16(wd), n, k, bias, a)
					if err := closeTo(got, want, 2e-6*float64(k), 1e-5); err != nil {
						t.Fatalf("m=%d n=%d k=%d act=%s: %v", m, n, k, a, err)
					}
				}
			}
		}
	}
}

// TestLinearRepacks uses weights prepared by one engine with engines of
// other versions: each packs them again for its own micro-kernel.
func TestLinearRepacks(t *testing.T) {
	rng := rand.New(rand.NewSource(9))
	const m, n, k = 7, 33, 40
	x, wd := randSlice(rng, m*k), randSlice(rng, n*k)
	want := make([]float32, m*n)
	LinearRef(want, x, m, wd, n, k, nil, ActNone)
	w := engine(t, Config{Version: "go"}).PrepareWeight(wd, n, k)
	wb := engine(t, Config{BF16Version: "go-bf16"}).PrepareWeightBF16(wd, n, k)
	wantBF16 := make([]float32, m*n)
	LinearRef(wantBF16, roundBF16(x), m, roundBF16(wd), n, k, nil, ActNone)
	for _, v := range Versions() {
		for _, bv := range BF16Versions() {
			e := engine(t, Config{Version: v, BF16Version: bv})
			got := make([]float32, m*n)
			e.Linear(got, x, m, w, nil, ActNone)
			if err := closeTo(got, want, 2e-6*k, 1e-5); err != nil || w.PackedFor() != v {
				t.Errorf("F32 weight on %s: packed for %s, %v", v, w.PackedFor(), err)
			}
			e.Linear(got, x, m, wb, nil, ActNone)
			if err := closeTo(got, wantBF16, 2e-6*k, 1e-5); err != nil || wb.PackedFor() != bv {
				t.Errorf("BF16 weight on %s: packed for %s, %v", bv, wb.PackedFor(), err)
			}
		}
	}
}

// TestLinearGonum runs the linear layers of F32 weights on gonum's SGEMM
// (the BLAS an engine may be configured with, for comparison); BF16
// weights keep their own kernel.
func TestLinearGonum(t *testing.T) {
	e := engine(t, Config{BLAS: BLASGonum})
	rng := rand.New(rand.NewSource(4))
	x, wd := randSlice(rng, 5*7), randSlice(rng, 3*7)
	got, want := make([]float32, 15), make([]float32, 15)
	e.Linear(got, x, 5, e.PrepareWeight(wd, 3, 7), nil, ActReLU)
	LinearRef(want, x, 5, wd, 3, 7, nil, ActReLU)
	if err := closeTo(got, want, 1e-5, 1e-5); err != nil {
		t.Errorf("linear through gonum: %v", err)
	}
	e.Linear(got, x, 5, e.PrepareWeightBF16(wd, 3, 7), nil, ActReLU)
	LinearRef(want, roundBF16(x), 5, roundBF16(wd), 3, 7, nil, ActReLU)
	if err := closeTo(got, want, 1e-5, 1e-5); err != nil {
		t.Errorf("BF16 linear with the gonum BLAS: %v", err)
	}
}

func TestLinearNoAllocs(t *testing.T) {
	if raceDetector {
		t.Skip("under -race sync.Pool drops items at random: allocation counts mean nothing")
	}
	rng := rand.New(rand.NewSource(3))
	const m, n, k = 130, 300, 200
	x, bias := randSlice(rng, m*k), randSlice(rng, n)
	e := Default()
	w := e.PrepareWeight(randSlice(rng, n*k), n, k)
	out := make([]float32, m*n)
	e.Linear(out, x, m, w, bias, ActGELU) // warm the pools and helpers
	if allocs := testing.AllocsPerRun(20, func() { e.Linear(out, x, m, w, bias, ActGELU) }); allocs != 0 {
		t.Errorf("Linear allocates %v times per call in the steady state", allocs)
	}
}

// TestLinearConcurrentCallers runs kernel calls from several goroutines
// at once, as two models in one process do: each call publishes its batch
// over the previous one's for the helpers, and every result must still be
// whole.
func TestLinearConcurrentCallers(t *testing.T) {
	rng := rand.New(rand.NewSource(5))
	const m, n, k, callers, calls = 67, 129, 96, 4, 40
	x, bias := randSlice(rng, m*k), randSlice(rng, n)
	e := Default()
	w := e.PrepareWeight(randSlice(rng, n*k), n, k)
	want := make([]float32, m*n)
	e.Linear(want, x, m, w, bias, ActGELU)
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := make([]float32, m*n)
			for range calls {
				clear(out)
				e.Linear(out, x, m, w, bias, ActGELU)
				if err := closeTo(out, want, 0, 0); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func BenchmarkLinear(b *testing.B) {
	for _, v := range Versions() {
		e := engine(b, Config{Version: v})
		for _, sh := range [][3]int{{128, 768, 768}, {1024, 3072, 768}, {1024, 768, 3072}} {
			m, n, k := sh[0], sh[1], sh[2]
			b.Run(fmt.Sprintf("%s/m=%d/n=%d/k=%d", v, m, n, k), func(b *testing.B) {
				rng := rand.New(rand.NewSource(1))
				x := randSlice(rng, m*k)
				w := e.PrepareWeight(randSlice(rng, n*k), n, k)
				out := make([]float32, m*n)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					e.Linear(out, x, m, w, nil, ActNone)
				}
				b.ReportMetric(2*float64(m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

func BenchmarkLinearBF16(b *testing.B) {
	for _, v := range BF16Versions()[:1] {
		e := engine(b, Config{BF16Version: v})
		for _, sh := range [][3]int{{1024, 2304, 768}, {1024, 768, 768}, {1024, 3072, 768}, {1024, 768, 3072}} {
			m, n, k := sh[0], sh[1], sh[2]
			b.Run(fmt.Sprintf("%s/m=%d/n=%d/k=%d", v, m, n, k), func(b *testing.B) {
				rng := rand.New(rand.NewSource(1))
				x := randSlice(rng, m*k)
				w := e.PrepareWeightBF16(randSlice(rng, n*k), n, k)
				out := make([]float32, m*n)
				for b.Loop() {
					e.Linear(out, x, m, w, nil, ActNone)
				}
				b.ReportMetric(2*float64(m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// splitRows cuts the rows of w (n x k) into blocks of the given sizes,
// each a separate slice, as a checkpoint's query, key and value are.
func splitRows(w []float32, k int, sizes []int) [][]float32 {
	var parts [][]float32
	at := 0
	for _, s := range sizes {
		parts = append(parts, append([]float32(nil), w[at*k:(at+s)*k]...))
		at += s
	}
	return parts
}

// TestLinearRows packs weights straight from blocks of rows whose sizes
// are not multiples of any micro-kernel's panel (a panel then gathers rows
// of two or more blocks), F32 and BF16, on every version and on gonum's
// SGEMM, which multiplies block by block.
func TestLinearRows(t *testing.T) {
	rng := rand.New(rand.NewSource(11))
	const m, k = 9, 37
	for _, sizes := range [][]int{{5, 7, 33}, {1, 1, 1}, {32, 32}, {3, 40, 2, 17}} {
		n := 0
		for _, s := range sizes {
			n += s
		}
		x, wd, bias := randSlice(rng, m*k), randSlice(rng, n*k), randSlice(rng, n)
		parts := splitRows(wd, k, sizes)
		calls := 0
		rows := func() ([][]float32, func()) { calls++; return parts, func() {} }
		want, wantBF16 := make([]float32, m*n), make([]float32, m*n)
		LinearRef(want, x, m, wd, n, k, bias, ActGELU)
		LinearRef(wantBF16, roundBF16(x), m, roundBF16(wd), n, k, bias, ActGELU)
		for _, v := range Versions() {
			e := engine(t, Config{Version: v})
			got := make([]float32, m*n)
			e.Linear(got, x, m, e.PrepareWeightRows(parts, rows, n, k, false), bias, ActGELU)
			if err := closeTo(got, want, 2e-6*k, 1e-5); err != nil {
				t.Errorf("%s, blocks %v: %v", v, sizes, err)
			}
		}
		for _, v := range BF16Versions() {
			e := engine(t, Config{BF16Version: v})
			got := make([]float32, m*n)
			e.Linear(got, x, m, e.PrepareWeightRows(parts, rows, n, k, true), bias, ActGELU)
			if err := closeTo(got, wantBF16, 2e-6*k, 1e-5); err != nil {
				t.Errorf("%s, blocks %v: %v", v, sizes, err)
			}
		}
		if calls != 0 {
			t.Errorf("blocks %v: rows called %d times to pack what parts held", sizes, calls)
		}
		g := engine(t, Config{BLAS: BLASGonum})
		got := make([]float32, m*n)
		g.Linear(got, x, m, g.PrepareWeightRows(parts, rows, n, k, false), bias, ActGELU)
		if err := closeTo(got, want, 2e-6*k, 1e-5); err != nil || calls != 1 {
			t.Errorf("gonum, blocks %v: rows called %d times, %v", sizes, calls, err)
		}
	}
}

// TestDeferWeight: a deferred weight's first product of few rows reads
// the rows in place, and any other product packs it, once, and calls the
// packed hook; every result is the reference's, on every version.
func TestDeferWeight(t *testing.T) {
	rng := rand.New(rand.NewSource(12))
	const k = 45
	sizes := []int{19, 6, 40}
	n := 65
	wd, bias := randSlice(rng, n*k), randSlice(rng, n)
	parts := splitRows(wd, k, sizes)
	forVersions(t, func(t *testing.T, e *Engine) {
		nr := e.gemm.nr
		for _, first := range []int{1, nr, nr + 1} {
			packs := 0
			w := e.DeferWeight(func() ([][]float32, func()) { return parts, func() {} }, n, k, func() { packs++ })
			for i, m := range []int{first, 3, 2 * nr} {
				x := randSlice(rng, m*k)
				got, want := make([]float32, m*n), make([]float32, m*n)
				LinearRef(want, x, m, wd, n, k, bias, ActReLU)
				e.Linear(got, x, m, w, bias, ActReLU)
				if err := closeTo(got, want, 2e-6*k, 1e-5); err != nil {
					t.Fatalf("first m=%d, product %d (m=%d): %v", first, i, m, err)
				}
				wantPacked := 1
				if i == 0 && first <= nr {
					wantPacked = 0
				}
				if packs != wantPacked || (w.kern != nil) != (packs == 1) {
					t.Fatalf("first m=%d, after product %d (m=%d): packed %d times, want %d", first, i, m, packs, wantPacked)
				}
			}
		}
	})
}

// TestDeferWeightConcurrent: products that share a deferred weight from
// several goroutines (a server's first requests) race to read it in place
// and to pack it; each gets the reference's result and it is packed once.
func TestDeferWeightConcurrent(t *testing.T) {
	rng := rand.New(rand.NewSource(13))
	const n, k = 70, 33
	wd := randSlice(rng, n*k)
	e := engine(t, Config{})
	var packs atomic.Int32
	w := e.DeferWeight(func() ([][]float32, func()) { return [][]float32{wd}, func() {} }, n, k, func() { packs.Add(1) })
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		m := 1 + g%2*40
		x := randSlice(rng, m*k)
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, want := make([]float32, m*n), make([]float32, m*n)
			LinearRef(want, x, m, wd, n, k, nil, ActNone)
			e.Linear(got, x, m, w, nil, ActNone)
			if err := closeTo(got, want, 2e-6*k, 1e-5); err != nil {
				errs <- fmt.Errorf("m=%d: %w", m, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if packs.Load() != 1 {
		t.Errorf("packed %d times, want 1", packs.Load())
	}
}
