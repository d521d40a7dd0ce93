package kernels

import (
	"fmt"
	"math/rand"
	"testing"

	"gonum.org/v1/gonum/blas"
)

func TestSgemmVersions(t *testing.T) {
	forVersions(t, func(t *testing.T, e *Engine) {
		rng := rand.New(rand.NewSource(1))
		impl := Implementation{Engine: e}
		for _, m := range oddSizes {
			for _, n := range oddSizes {
				for _, k := range append(oddSizes, 400) { // 400 > every kc of the table: two k blocks
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

// TestSgemmPackSplit checks products whose op(B) is packed in several
// blocks of panels on several goroutines, the last panel partial.
func TestSgemmPackSplit(t *testing.T) {
	forVersions(t, func(t *testing.T, e *Engine) {
		e = engine(t, Config{Version: e.cfg.Version, Tuning: e.cfg.Tuning, Threads: 3})
		rng := rand.New(rand.NewSource(2))
		const m, n, k = 7, 1501, 333 // blocks of panels cover 768 columns at k = 333
		for _, tb := range []bool{false, true} {
			ldb, tB := n+1, blas.NoTrans
			if tb {
				ldb, tB = k+1, blas.Trans
			}
			a, b := randSlice(rng, m*k), randSlice(rng, max(n, k)*ldb)
			want, got := make([]float32, m*n), make([]float32, m*n)
			GemmRef(false, tb, m, n, k, 1, a, k, b, ldb, 0, want, n)
			Implementation{Engine: e}.Sgemm(blas.NoTrans, tB, m, n, k, 1, a, k, b, ldb, 0, got, n)
			if err := closeTo(got, want, 2e-6*k, 1e-5); err != nil {
				t.Errorf("transB=%v: %v", tb, err)
			}
		}
	})
}

func TestSgemmNoAllocs(t *testing.T) {
	if raceDetector {
		t.Skip("under -race sync.Pool drops items at random: allocation counts mean nothing")
	}
	rng := rand.New(rand.NewSource(3))
	const m, n, k = 130, 300, 200
	a, b, c := randSlice(rng, m*k), randSlice(rng, k*n), make([]float32, m*n)
	impl := Implementation{}
	impl.Sgemm(blas.NoTrans, blas.NoTrans, m, n, k, 1, a, k, b, n, 0, c, n)
	if allocs := testing.AllocsPerRun(20, func() { impl.Sgemm(blas.NoTrans, blas.NoTrans, m, n, k, 1, a, k, b, n, 0, c, n) }); allocs != 0 {
		t.Errorf("Sgemm allocates %v times per call in the steady state", allocs)
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

func BenchmarkSgemm(b *testing.B) {
	for _, v := range Versions() {
		b.Run(v, func(b *testing.B) {
			const m, n, k = 1024, 768, 768
			rng := rand.New(rand.NewSource(1))
			x, w, out := randSlice(rng, m*k), randSlice(rng, n*k), make([]float32, m*n)
			impl := Implementation{Engine: engine(b, Config{Version: v})}
			for b.Loop() {
				impl.Sgemm(blas.NoTrans, blas.Trans, m, n, k, 1, x, k, w, k, 0, out, n)
			}
			b.ReportMetric(2*float64(m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// TestPackB holds each kernel's own panel packers (packTrans, packRows) to
// packB's portable loops, value for value, on widths and depths around
// the panel width and the packers' 8- and 16-step blocks, rows longer than
// they are read.
func TestPackB(t *testing.T) {
	rng := rand.New(rand.NewSource(41))
	for _, v := range versionList() {
		kern := v.gemm
		if kern.packTrans == nil && kern.packRows == nil {
			continue
		}
		plain := *kern
		plain.packTrans, plain.packRows = nil, nil
		for _, trans := range []bool{true, false} {
			for _, n := range []int{1, kern.nr - 1, kern.nr, kern.nr + 1, 2*kern.nr + 8} {
				for _, k := range []int{1, 7, 8, 9, 15, 16, 17, 63, 64, 129} {
					rows, cols := k, n // b is k x n, or n x k transposed
					if trans {
						rows, cols = n, k
					}
					ldb := cols + 3
					b := randSlice(rng, rows*ldb)
					size := (n + kern.nr - 1) / kern.nr * kern.nr * k
					got, want := make([]float32, size), make([]float32, size)
					for i := range got {
						got[i], want[i] = float32(i), float32(i) // packB must write every value
					}
					packB(kern, got, trans, n, k, b, ldb)
					packB(&plain, want, trans, n, k, b, ldb)
					if err := closeTo(got, want, 0, 0); err != nil {
						t.Fatalf("%s trans=%v n=%d k=%d: %v", kern.name, trans, n, k, err)
					}
				}
			}
		}
	}
}

// BenchmarkPackB times each kernel's own panel packers against packB's
// portable loops at attention's shapes (a head's 128 keys of 64 values,
// transposed; its values, 64 columns of 128 rows, in the qkv layout's
// row stride) and a BERT-base weight (768 x 768, transposed).
func BenchmarkPackB(b *testing.B) {
	rng := rand.New(rand.NewSource(42))
	const ld = 3 * 768
	for _, v := range versionList() {
		kern := v.gemm
		if kern.packTrans == nil && kern.packRows == nil {
			continue
		}
		plain := *kern
		plain.packTrans, plain.packRows = nil, nil
		for _, s := range []struct {
			name      string
			trans     bool
			n, k, ldb int
		}{{"keys", true, 128, 64, ld}, {"values", false, 64, 128, ld}, {"weight", true, 768, 768, 768}} {
			rows := s.k
			if s.trans {
				rows = s.n
			}
			src := randSlice(rng, rows*s.ldb)
			dst := make([]float32, (s.n+kern.nr-1)/kern.nr*kern.nr*s.k)
			for _, k := range []*microKernel{kern, &plain} {
				name := kern.name
				if k == &plain {
					name = "portable"
				}
				b.Run(fmt.Sprintf("%s/%s/%s", kern.name, s.name, name), func(b *testing.B) {
					b.SetBytes(int64(4 * s.n * s.k))
					for b.Loop() {
						packB(k, dst, s.trans, s.n, s.k, src, s.ldb)
					}
				})
			}
		}
	}
}
