package kernels

import (
	"fmt"
	"math"
	"math/rand"
	"testing"
)

// TestInt8Kernels checks each INT8 micro-kernel's integers against plain
// loops over the same bytes (signed activations, unsigned shifted
// weights), with and without accumulation, on every byte value, and the
// tile each stores dequantized against dequant, bit for bit.
func TestInt8Kernels(t *testing.T) {
	rng := rand.New(rand.NewSource(21))
	for _, kern := range int8Kernels() {
		mr, nr := kern.mr, kern.nr
		corr, rs := make([]int32, mr), randSlice(rng, mr)
		cs, bias := randSlice(rng, nr), randSlice(rng, nr)
		for i := range corr {
			corr[i] = rng.Int31n(1<<16) - 1<<15
		}
		for _, kq := range []int{1, 2, 3, 17, 256} {
			a := make([]byte, mr*4*kq) // a panel: for each quad, mr rows' words
			b := make([]byte, nr*4*kq)
			rng.Read(a)
			rng.Read(b)
			a[0], a[1], b[0], b[1] = 0x80, 0x7f, 255, 0
			packed := widen(a, kern.aw)
			ldc := nr + 5
			c := make([]int32, mr*ldc)
			prev := make([]int32, len(c))
			for i := range prev {
				prev[i] = rng.Int31() - 1<<30
			}
			for _, add := range []bool{false, true} {
				for _, deq := range []bool{false, true} {
					copy(c, prev)
					var ep *int8Epilogue
					if deq {
						ep = &int8Epilogue{corr: &corr[0], rowScale: &rs[0], colScale: &cs[0], bias: &bias[0]}
					}
					kern.run(kq, packed, b, c, ldc, add, ep)
					for i := 0; i < mr; i++ {
						for j := 0; j < nr; j++ {
							var want int32
							if add {
								want = prev[i*ldc+j]
							}
							for p := 0; p < 4*kq; p++ {
								want += int32(int8(a[(p/4*mr+i)*4+p%4])) * int32(b[(p/4*nr+j)*4+p%4])
							}
							if !deq && c[i*ldc+j] != want {
								t.Fatalf("%s kq=%d add=%v: c[%d][%d] = %d, want %d", kern.name, kq, add, i, j, c[i*ldc+j], want)
							}
							got := math.Float32frombits(uint32(c[i*ldc+j]))
							if wantF := dequant(want-corr[i], rs[i], cs[j], bias[j]); deq && got != wantF {
								t.Fatalf("%s kq=%d add=%v dequantized: c[%d][%d] = %g, want %g", kern.name, kq, add, i, j, got, wantF)
							}
						}
					}
				}
			}
		}
	}
}

// TestInt8Quantize checks each kernel's vector quantization against
// QuantizeRowsRef: the same scale and the same bytes, on odd lengths,
// halves that round to even, a zero row and values at the extremes.
func TestInt8Quantize(t *testing.T) {
	rng := rand.New(rand.NewSource(22))
	for _, kern := range int8Kernels() {
		for _, n := range []int{1, 3, 16, 17, 65, 768, 3073} {
			for _, kind := range []string{"random", "halves", "zero"} {
				x := randSlice(rng, n)
				switch kind {
				case "halves":
					// With max 127, x*inv = x: .5s land exactly between two integers.
					for i := range x {
						x[i] = float32(rng.Intn(255)-127) + 0.5
					}
					x[0] = 127
				case "zero":
					clear(x)
				}
				q, s := make([]int8, n), make([]float32, 1)
				QuantizeRowsRef(q, s, x, 1, n)
				scale, inv := quantScale(kern.maxAbs(x))
				if scale != s[0] {
					t.Fatalf("%s n=%d %s: scale %g, want %g", kern.name, n, kind, scale, s[0])
				}
				// Written as a row of a panel: quad j/4 at (j/4)*stride,
				// the bytes between (other rows') left alone. The
				// buffer ends with the row's last value, as the last
				// row of a panel does.
				aw := kern.aw
				stride := 4 * kern.mr * aw
				u := make([]byte, (n+3)/4*stride-(kern.mr-1)*4*aw)
				for i := range u {
					u[i] = 0xa5
				}
				sum := kern.quant(u, stride, x, inv)
				var want int32
				for i := 0; i < len(u); i += aw {
					j := i/stride*4 + i%stride/aw
					if i%stride >= 4*aw || j >= n {
						for _, v := range u[i : i+aw] {
							if v != 0xa5 {
								t.Fatalf("%s n=%d %s: byte %d, outside the row's values, overwritten", kern.name, n, kind, i)
							}
						}
						continue
					}
					v := int32(int8(u[i]))
					if aw == 2 {
						v = int32(int16(uint16(u[i]) | uint16(u[i+1])<<8))
					}
					if v != int32(q[j]) {
						t.Fatalf("%s n=%d %s: x[%d]=%g quantized to %d, want %d", kern.name, n, kind, j, x[j], v, q[j])
					}
					want += v
				}
				if sum != want {
					t.Fatalf("%s n=%d %s: sum %d, want %d", kern.name, n, kind, sum, want)
				}
			}
		}
	}
}

// TestLinearInt8Versions checks every INT8 version against LinearInt8Ref
// on odd shapes (k not a multiple of 4, partial tiles, one row), with 1 and
// 2 goroutines: the integers are the same, so without an activation the
// outputs are too, bit for bit.
func TestLinearInt8Versions(t *testing.T) {
	for _, v := range Int8Versions() {
		for _, threads := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s/threads=%d", v, threads), func(t *testing.T) {
				e := engine(t, Config{Int8Version: v, Threads: threads})
				rng := rand.New(rand.NewSource(23))
				for _, a := range []Act{ActNone, ActGELU, ActTanh} {
					for _, m := range oddSizes {
						for _, n := range []int{1, 17, 33, 129} {
							for _, k := range []int{1, 3, 5, 64, 129, 1031} {
								x, wd, bias := randSlice(rng, m*k), randSlice(rng, n*k), randSlice(rng, n)
								if n == 17 {
									bias = nil
								}
								w := e.PrepareWeightInt8(wd, n, k)
								if !w.Int8() || w.PackedFor() != v {
									t.Fatalf("weight packed for %q, int8 %v", w.PackedFor(), w.Int8())
								}
								got := make([]float32, m*n)
								e.Linear(got, x, m, w, bias, a)
								want := make([]float32, m*n)
								LinearInt8Ref(want, x, m, wd, n, k, bias, a)
								tol := 0.0
								if a != ActNone {
									tol = 1e-6
								}
								if err := closeTo(got, want, tol, tol); err != nil {
									t.Fatalf("m=%d n=%d k=%d act=%s bias=%v: %v", m, n, k, a, bias != nil, err)
								}
							}
						}
					}
				}
			})
		}
	}
}

// TestLinearInt8Error bounds the quantization error against the float32
// product on data shaped like BERT-base's: activations of unit scale with
// a few large outliers per row (LayerNorm outputs have them), weights of
// standard deviation 0.02. The bound is on the error relative to the
// root mean square of the output, per row.
func TestLinearInt8Error(t *testing.T) {
	rng := rand.New(rand.NewSource(24))
	const m, n, k = 33, 96, 768
	x, wd := make([]float32, m*k), make([]float32, n*k)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	for i := 0; i < m; i++ {
		x[i*k+rng.Intn(k)] = 8 // an outlier sets the row's scale
	}
	for i := range wd {
		wd[i] = float32(0.02 * rng.NormFloat64())
	}
	want, got := make([]float32, m*n), make([]float32, m*n)
	LinearRef(want, x, m, wd, n, k, nil, ActNone)
	e := Default()
	e.Linear(got, x, m, e.PrepareWeightInt8(wd, n, k), nil, ActNone)
	var worst float64
	for i := 0; i < m; i++ {
		var se, sr float64
		for j := 0; j < n; j++ {
			d := float64(got[i*n+j] - want[i*n+j])
			se += d * d
			sr += float64(want[i*n+j]) * float64(want[i*n+j])
		}
		worst = max(worst, math.Sqrt(se/sr))
	}
	// Rounding both operands to 1/254 of their range, with an outlier at 8
	// standard deviations, leaves about 2 % of the output's scale (1.8 % from
	// the activations, 1.2 % from the weights, uniform rounding errors).
	if worst > 0.03 {
		t.Fatalf("worst row's relative RMS error %.4f, want <= 0.03", worst)
	}
	t.Logf("worst row's relative RMS error %.4f", worst)
}

func TestLinearInt8Repacks(t *testing.T) {
	vs := Int8Versions()
	rng := rand.New(rand.NewSource(25))
	const m, n, k = 13, 40, 70
	x, wd := randSlice(rng, m*k), randSlice(rng, n*k)
	want := make([]float32, m*n)
	LinearInt8Ref(want, x, m, wd, n, k, nil, ActNone)
	w := engine(t, Config{Int8Version: vs[0]}).PrepareWeightInt8(wd, n, k)
	e := engine(t, Config{Int8Version: vs[len(vs)-1]})
	got := make([]float32, m*n)
	e.Linear(got, x, m, w, nil, ActNone)
	if w.PackedFor() != vs[len(vs)-1] {
		t.Fatalf("weight packed for %s after a %s engine ran it", w.PackedFor(), vs[len(vs)-1])
	}
	if err := closeTo(got, want, 0, 0); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkLinearInt8 times the INT8 linear layers of BERT-base (128
// tokens x 8 sequences) beside the float32 ones, in GOPS (two operations
// a multiply-add).
func BenchmarkLinearInt8(b *testing.B) {
	for _, s := range []struct{ m, n, k int }{{1024, 768, 768}, {1024, 3072, 768}, {1024, 768, 3072}, {128, 768, 768}, {128, 3072, 768}} {
		rng := rand.New(rand.NewSource(1))
		x, wd, bias := randSlice(rng, s.m*s.k), randSlice(rng, s.n*s.k), randSlice(rng, s.n)
		out := make([]float32, s.m*s.n)
		e := Default()
		for _, kind := range []string{"int8", "f32"} {
			w := e.PrepareWeight(wd, s.n, s.k)
			if kind == "int8" {
				w = e.PrepareWeightInt8(wd, s.n, s.k)
			}
			b.Run(fmt.Sprintf("%s/m=%d/n=%d/k=%d", kind, s.m, s.n, s.k), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					e.Linear(out, x, s.m, w, bias, ActGELU)
				}
				b.ReportMetric(2*float64(s.m*s.n*s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GOPS")
			})
		}
	}
}

// BenchmarkInt8Kernel times each INT8 micro-kernel alone on one core,
// its panels in L1 and L2: the ceiling of the INT8 linear layers.
func BenchmarkInt8Kernel(b *testing.B) {
	for _, kern := range int8Kernels() {
		const kq = 192 // k = 768
		a, bp := make([]byte, kern.mr*4*kq*kern.aw), make([]byte, kern.nr*4*kq)
		c := make([]int32, kern.mr*kern.nr)
		b.Run(kern.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				kern.run(kq, a, bp, c, kern.nr, false, nil)
			}
			b.ReportMetric(2*float64(kern.mr*kern.nr*4*kq)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GOPS")
		})
	}
}

// BenchmarkInt8KernelL2 times each INT8 micro-kernel on one core as a
// layer's task drives it: a block of 144 rows of packed activations (12
// tiles of 12 rows, 24 of 6, 36 of 4) against 24 panels of a 768-deep weight,
// panel by panel, everything in L2 but not in L1. Against
// BenchmarkInt8Kernel it shows what leaving L1 costs.
func BenchmarkInt8KernelL2(b *testing.B) {
	for _, kern := range int8Kernels() {
		const kq, rows, panels = 192, 144, 24
		a := make([]byte, rows*4*kq*kern.aw)
		bp := make([]byte, panels*kern.nr*4*kq)
		for i := range a {
			a[i] = byte(i * 7)
		}
		for i := range bp {
			bp[i] = byte(i * 13)
		}
		ldc := panels * kern.nr
		c := make([]int32, rows*ldc)
		tile := kern.mr * 4 * kq * kern.aw
		b.Run(kern.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				for jp := 0; jp < panels; jp++ {
					for r := 0; r+kern.mr <= rows; r += kern.mr {
						kern.run(kq, a[r/kern.mr*tile:], bp[jp*kern.nr*4*kq:], c[r*ldc+jp*kern.nr:], ldc, false, nil)
					}
				}
			}
			b.ReportMetric(2*float64(rows/kern.mr*kern.mr*kern.nr*panels*4*kq)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GOPS")
		})
	}
}

// widen packs a panel of int8 activations as a kernel with aw-byte
// activations reads it: each value sign-extended, little-endian.
func widen(a []byte, aw int) []byte {
	if aw == 1 {
		return a
	}
	w := make([]byte, 0, 2*len(a))
	for _, v := range a {
		w = append(w, v, byte(int8(v)>>7))
	}
	return w
}
