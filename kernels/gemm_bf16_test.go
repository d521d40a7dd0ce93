package kernels

import (
	"math"
	"math/rand"
	"testing"
)

func roundBF16(x []float32) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = math.Float32frombits(uint32(f32ToBF16(v)) << 16)
	}
	return out
}

// TestLinearBF16Versions checks each BF16 kernel against the float64
// reference on BF16-rounded inputs (the kernel's products are exact there,
// only the float32 sums round), on odd sizes and odd k (a half pair).
func TestLinearBF16Versions(t *testing.T) {
	prev := bf16Kernel
	defer func() { bf16Kernel = prev }()
	t.Logf("BF16 kernels on this CPU: %v", BF16Versions())
	for _, v := range BF16Versions() {
		t.Run(v, func(t *testing.T) {
			if err := SetBF16Version(v); err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewSource(8))
			for _, a := range []Act{ActNone, ActGELU} {
				for _, m := range oddSizes {
					for _, n := range []int{1, 17, 129} {
						for _, k := range []int{1, 3, 64, 513} {
							x, wd, bias := randSlice(rng, m*k), randSlice(rng, n*k), randSlice(rng, n)
							w := PrepareWeightBF16(wd, n, k)
							got := make([]float32, m*n)
							Linear(got, x, m, w, bias, a)
							want := make([]float32, m*n)
							GemmRef(false, true, m, n, k, 1, roundBF16(x), k, roundBF16(wd), k, 0, want, n)
							BiasActRef(want, m, n, bias, a)
							if err := closeTo(got, want, 2e-6*float64(k), 1e-5); err != nil {
								t.Fatalf("m=%d n=%d k=%d act=%s: %v", m, n, k, a, err)
							}
						}
					}
				}
			}
		})
	}
	if err := SetBF16Version("fp8"); err == nil {
		t.Error("unknown BF16 version accepted")
	}
}

func BenchmarkLinearBF16(b *testing.B) {
	prev := bf16Kernel
	defer func() { bf16Kernel = prev }()
	for _, v := range BF16Versions()[:1] {
		for _, sh := range [][3]int{{1024, 3072, 768}, {1024, 768, 3072}} {
			m, n, k := sh[0], sh[1], sh[2]
			b.Run(v, func(b *testing.B) {
				if err := SetBF16Version(v); err != nil {
					b.Fatal(err)
				}
				rng := rand.New(rand.NewSource(1))
				x := randSlice(rng, m*k)
				w := PrepareWeightBF16(randSlice(rng, n*k), n, k)
				out := make([]float32, m*n)
				for b.Loop() {
					Linear(out, x, m, w, nil, ActNone)
				}
				b.ReportMetric(2*float64(m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
