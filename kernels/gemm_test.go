package kernels

import (
	"fmt"
	"math"
	"math/rand"
	"sync"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

var oddSizes = []int{1, 3, 17, 65, 129}

func randSlice(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = 2*rng.Float32() - 1
	}
	return v
}

// closeTo reports the first element of got farther than abs + rel*|want|
// from want.
func closeTo(got, want []float32, abs, rel float64) error {
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if !(d <= abs+rel*math.Abs(float64(want[i]))) {
			return fmt.Errorf("element %d: got %g, want %g", i, got[i], want[i])
		}
	}
	return nil
}

// withVersion runs f once per SGEMM micro-kernel this CPU supports.
func withVersion(t *testing.T, f func(t *testing.T)) {
	prev := Version()
	defer func() {
		if err := SetVersion(prev); err != nil {
			t.Fatal(err)
		}
	}()
	for _, v := range Versions() {
		t.Run(v, func(t *testing.T) {
			if err := SetVersion(v); err != nil {
				t.Fatal(err)
			}
			f(t)
		})
	}
}

func TestSgemmVersions(t *testing.T) {
	t.Logf("SGEMM versions on this CPU: %v", Versions())
	withVersion(t, func(t *testing.T) {
		rng := rand.New(rand.NewSource(1))
		impl := Implementation{}
		for _, m := range oddSizes {
			for _, n := range oddSizes {
				for _, k := range append(oddSizes, 300) { // 300 > kc: two k blocks
					for ti := 0; ti < 4; ti++ {
						ta, tb := ti&1 != 0, ti&2 != 0
						alpha, beta := float32(1), float32(0)
						switch (m + n + k + ti) % 3 {
						case 1:
							alpha, beta = 0.5, 1
						case 2:
							alpha, beta = -1.5, 0.25
						}
						// Leading dimensions wider than the matrices.
						lda, ldb, ldc := k+1, n+2, n+3
						if ta {
							lda = m + 1
						}
						if tb {
							ldb = k + 2
						}
						ar, br := m, k
						if ta {
							ar = k
						}
						if tb {
							br = n
						}
						a, b := randSlice(rng, ar*lda), randSlice(rng, br*ldb)
						c := randSlice(rng, m*ldc)
						want := append([]float32(nil), c...)
						GemmRef(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, want, ldc)
						tA, tB := blas.NoTrans, blas.NoTrans
						if ta {
							tA = blas.Trans
						}
						if tb {
							tB = blas.Trans
						}
						impl.Sgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
						if err := closeTo(c, want, 2e-6*float64(k), 1e-5); err != nil {
							t.Fatalf("m=%d n=%d k=%d transA=%v transB=%v alpha=%g beta=%g: %v", m, n, k, ta, tb, alpha, beta, err)
						}
					}
				}
			}
		}
	})
}

func TestLinearVersions(t *testing.T) {
	withVersion(t, func(t *testing.T) {
		rng := rand.New(rand.NewSource(2))
		for _, a := range []Act{ActNone, ActGELU, ActGELUTanh, ActReLU, ActTanh} {
			for _, m := range oddSizes {
				for _, n := range []int{1, 17, 129} {
					for _, k := range []int{3, 65, 257} {
						x, wd, bias := randSlice(rng, m*k), randSlice(rng, n*k), randSlice(rng, n)
						w := PrepareWeight(wd, n, k)
						got := make([]float32, m*n)
						want := make([]float32, m*n)
						GemmRef(false, true, m, n, k, 1, x, k, wd, k, 0, want, n)
						b := bias
						if n == 17 {
							b = nil
						}
						BiasActRef(want, m, n, b, a)
						Linear(got, x, m, w, b, a)
						if err := closeTo(got, want, 2e-6*float64(k), 1e-5); err != nil {
							t.Fatalf("linear m=%d n=%d k=%d act=%s bias=%v: %v", m, n, k, a, b != nil, err)
						}
					}
				}
			}
		}
	})
}

func TestLinearNoAllocs(t *testing.T) {
	if raceDetector {
		t.Skip("under -race sync.Pool drops items at random: allocation counts mean nothing")
	}
	rng := rand.New(rand.NewSource(3))
	const m, n, k = 130, 300, 200
	x, bias := randSlice(rng, m*k), randSlice(rng, n)
	w := PrepareWeight(randSlice(rng, n*k), n, k)
	out := make([]float32, m*n)
	Linear(out, x, m, w, bias, ActGELU) // warm the pools and helpers
	if allocs := testing.AllocsPerRun(20, func() { Linear(out, x, m, w, bias, ActGELU) }); allocs != 0 {
		t.Errorf("Linear allocates %v times per call in the steady state", allocs)
	}
	a, b, c := randSlice(rng, m*k), randSlice(rng, k*n), make([]float32, m*n)
	Sgemm(false, false, m, n, k, 1, a, k, b, n, 0, c, n)
	if allocs := testing.AllocsPerRun(20, func() { Sgemm(false, false, m, n, k, 1, a, k, b, n, 0, c, n) }); allocs != 0 {
		t.Errorf("Sgemm allocates %v times per call in the steady state", allocs)
	}
}

func TestBlasSelection(t *testing.T) {
	defer UseNative()
	UseGonum()
	if _, ok := blas32.Implementation().(Implementation); ok {
		t.Fatal("UseGonum left the native implementation in place")
	}
	rng := rand.New(rand.NewSource(4))
	x, wd := randSlice(rng, 5*7), randSlice(rng, 3*7)
	got, want := make([]float32, 15), make([]float32, 15)
	Linear(got, x, 5, PrepareWeight(wd, 3, 7), nil, ActReLU)
	GemmRef(false, true, 5, 3, 7, 1, x, 7, wd, 7, 0, want, 3)
	BiasActRef(want, 5, 3, nil, ActReLU)
	if err := closeTo(got, want, 1e-5, 1e-5); err != nil {
		t.Errorf("linear through gonum: %v", err)
	}
	UseNative()
	if _, ok := blas32.Implementation().(Implementation); !ok {
		t.Fatal("UseNative did not install the native implementation")
	}
	if err := SetVersion("sse1"); err == nil {
		t.Error("SetVersion accepted an unknown version")
	}
}

func TestSgemmMisusePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Sgemm with a short C did not panic")
		}
	}()
	Implementation{}.Sgemm(blas.NoTrans, blas.NoTrans, 2, 2, 2, 1, make([]float32, 4), 2, make([]float32, 4), 2, 0, make([]float32, 3), 2)
}

func BenchmarkLinear(b *testing.B) {
	for _, v := range Versions() {
		for _, sh := range [][3]int{{128, 768, 768}, {1024, 3072, 768}, {1024, 768, 3072}} {
			m, n, k := sh[0], sh[1], sh[2]
			b.Run(fmt.Sprintf("%s/m=%d/n=%d/k=%d", v, m, n, k), func(b *testing.B) {
				if err := SetVersion(v); err != nil {
					b.Fatal(err)
				}
				rng := rand.New(rand.NewSource(1))
				x := randSlice(rng, m*k)
				w := PrepareWeight(randSlice(rng, n*k), n, k)
				out := make([]float32, m*n)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					Linear(out, x, m, w, nil, ActNone)
				}
				b.ReportMetric(2*float64(m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// TestConcurrentCallers runs kernel calls from several goroutines at once,
// as two models in one process do: each call publishes its batch over the
// previous one's for the helpers, and every result must still be whole.
func TestConcurrentCallers(t *testing.T) {
	rng := rand.New(rand.NewSource(5))
	const m, n, k, callers, calls = 67, 129, 96, 4, 40
	x, bias := randSlice(rng, m*k), randSlice(rng, n)
	w := PrepareWeight(randSlice(rng, n*k), n, k)
	want := make([]float32, m*n)
	Linear(want, x, m, w, bias, ActGELU)
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := make([]float32, m*n)
			for range calls {
				clear(out)
				Linear(out, x, m, w, bias, ActGELU)
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
