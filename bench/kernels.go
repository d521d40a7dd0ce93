package bench

import (
	"fmt"
	"math"
	"math/rand"
	"runtime"
	"sort"
	"time"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"

	"github.com/bertstream/bertstream/kernels"
	"github.com/bertstream/bertstream/nn"
)

// The kernel harness, in the manner of llm.c's dev/cuda: for each kernel
// family, every version (the plain reference, gonum where it applies, and
// each instruction-set version of the fast kernel this CPU runs) is first
// validated against the reference on the benchmark's own inputs, then
// timed. A version that fails validation is reported, not timed.

// KernelResult is one version of one kernel family on one shape.
type KernelResult struct {
	Family  string  `json:"family"`
	Shape   string  `json:"shape"`
	Version string  `json:"version"`
	MaxErr  float64 `json:"max_err"` // vs the reference, relative to max |ref|
	Valid   bool    `json:"valid"`
	Ms      float64 `json:"ms"`
	GFLOPS  float64 `json:"gflops,omitempty"`
	GBps    float64 `json:"gb_per_s"`
	PeakPct float64 `json:"peak_pct,omitempty"` // GFLOPS over Peak
	// Peak is the measured GFLOP/s PeakPct is a share of: the FMA peak,
	// or the dot-product peak of the family's instruction (PeakISA).
	Peak float64 `json:"peak_gflops,omitempty"`
	// PeakISA names the peak where it is not the FMA one: the BF16
	// (VDPBF16PS) loop's for linear-bf16, the INT8 (VPDPBUSD) loop's for
	// linear-int8, whose GFLOPS are then integer GOP/s.
	PeakISA string `json:"peak_isa,omitempty"`
}

// kernelCase is one family on one shape: how to compute the reference and
// how to run a version.
type kernelCase struct {
	family, shape string
	flops, bytes  float64
	tol           float64 // on the error relative to max |ref|
	ref           func() []float32
	// prepare readies version v, which runs on e when it is one of the
	// kernels package's (e is nil for "ref" and the extra versions), and
	// returns a function that runs it once and the buffer it writes.
	prepare func(v string, e *kernels.Engine) (run func(), out []float32)
	// versions beyond "ref" and the kernels package's ones.
	extra []string
	// int8 marks a case of the INT8 micro-kernels: its versions are
	// kernels.Int8Versions (engines of that Int8Version) and its rate is
	// a share of the INT8 dot-product peak.
	int8 bool
	// bf16 runs the BF16 kernel versions (BF16Versions) instead, against
	// the BF16 dot-product peak.
	bf16 bool
}

// KernelFamilies lists what RunKernels can run.
var KernelFamilies = []string{"sgemm", "linear", "linear-bf16", "linear-int8", "attention", "attention-bf16", "layernorm", "gelu", "embed"}

// RunKernels validates and times the families named (all when empty) at
// BERT-base shapes for a batch of 8 x 128 tokens, the kernels on up to
// threads goroutines (0: all). peak (GFLOP/s, 0 if unknown) turns rates
// into a share of the machine; the BF16 and INT8 families' shares are of
// their dot-product instruction's peak, measured here (a second) when such
// a family runs, and left out where the CPU lacks the instruction. With
// measured (a tuning of this CPU, see Tune), the fastest version of each
// kind runs once more on it, as VERSION@measured beside the table's.
func RunKernels(families []string, threads int, peak float64, minTime time.Duration, measured *kernels.Measured) ([]KernelResult, error) {
	if len(families) == 0 {
		families = KernelFamilies
	}
	engines := map[string]*kernels.Engine{}
	for _, v := range kernels.Versions() {
		e, err := kernels.New(kernels.Config{Version: v, Threads: threads})
		if err != nil {
			return nil, fmt.Errorf("kernel version %s: %w", v, err)
		}
		engines[v] = e
	}
	bf16Engines, int8Engines := map[string]*kernels.Engine{}, map[string]*kernels.Engine{}
	// The fastest version once more on the default blocking, where this
	// CPU has an entry of its own in the table: the entry's gain, side by
	// side.
	var alt []string
	if t := kernels.Tunings(); t[0] != "default" {
		v := kernels.Versions()[0]
		e, err := kernels.New(kernels.Config{Version: v, Threads: threads, Tuning: "default"})
		if err != nil {
			return nil, fmt.Errorf("kernel version %s, default blocking: %w", v, err)
		}
		engines[v+"@default"] = e
		alt = append(alt, v+"@default")
	}
	var bf16Alt, int8Alt []string
	if measured != nil {
		for _, c := range []struct {
			cfg  kernels.Config
			engs map[string]*kernels.Engine
			alt  *[]string
		}{
			{kernels.Config{Version: kernels.Versions()[0]}, engines, &alt},
			{kernels.Config{BF16Version: kernels.BF16Versions()[0]}, bf16Engines, &bf16Alt},
			{kernels.Config{Int8Version: kernels.Int8Versions()[0]}, int8Engines, &int8Alt},
		} {
			cfg := c.cfg
			cfg.Threads, cfg.Measured = threads, measured
			e, err := kernels.New(cfg)
			if err != nil {
				return nil, fmt.Errorf("measured tuning: %w", err)
			}
			v := cfg.Version + cfg.BF16Version + cfg.Int8Version + "@measured"
			c.engs[v] = e
			*c.alt = append(*c.alt, v)
		}
	}
	// The dot-product peaks, measured when a family needs them.
	peaks := map[string]Peak{}
	measureDot := func(name string, measure func(int, time.Duration) (Peak, error)) Peak {
		if p, ok := peaks[name]; ok {
			return p
		}
		pt := threads
		if pt <= 0 {
			pt = runtime.GOMAXPROCS(0)
		}
		p, err := measure(pt, time.Second)
		if err != nil {
			p = Peak{} // rates without a share
		}
		peaks[name] = p
		return p
	}
	// The BF16 and INT8 kernels are engines of their own versions.
	for _, v := range kernels.BF16Versions() {
		e, err := kernels.New(kernels.Config{BF16Version: v, Threads: threads})
		if err != nil {
			return nil, fmt.Errorf("BF16 kernel version %s: %w", v, err)
		}
		bf16Engines[v] = e
	}
	for _, v := range kernels.Int8Versions() {
		e, err := kernels.New(kernels.Config{Int8Version: v, Threads: threads})
		if err != nil {
			return nil, fmt.Errorf("INT8 kernel version %s: %w", v, err)
		}
		int8Engines[v] = e
	}
	var out []KernelResult
	for _, f := range families {
		cases, err := kernelCases(f)
		if err != nil {
			return nil, err
		}
		for _, c := range cases {
			want := c.ref()
			scale := 0.0
			for _, v := range want {
				scale = math.Max(scale, math.Abs(float64(v)))
			}
			versions := append(append([]string{"ref"}, c.extra...), kernels.Versions()...)
			engs, pk, isa := engines, peak, ""
			switch {
			case c.int8:
				p := measureDot("int8", MeasurePeakInt8)
				versions, engs, pk, isa = append(append([]string{"ref"}, kernels.Int8Versions()...), int8Alt...), int8Engines, p.GFLOPS, p.ISA
			case c.bf16:
				p := measureDot("bf16", MeasurePeakBF16)
				versions, engs, pk, isa = append(append([]string{"ref"}, kernels.BF16Versions()...), bf16Alt...), bf16Engines, p.GFLOPS, p.ISA
			case c.family == "sgemm" || c.family == "linear" || c.family == "attention":
				versions = append(versions, alt...)
			}
			for _, v := range versions {
				r := KernelResult{Family: c.family, Shape: c.shape, Version: v, PeakISA: isa}
				run, got := c.prepare(v, engs[v])
				run()
				r.MaxErr = nn.MaxAbsDiff(got, want) / math.Max(scale, 1e-30)
				r.Valid = r.MaxErr <= c.tol
				if r.Valid {
					r.Ms = timeIt(run, minTime, v == "ref")
					r.GBps = c.bytes / r.Ms / 1e6
					if c.flops > 0 {
						r.GFLOPS = c.flops / r.Ms / 1e6
						if pk > 0 {
							r.PeakPct, r.Peak = 100*r.GFLOPS/pk, pk
						}
					}
				}
				out = append(out, r)
			}
		}
	}
	return out, nil
}

// timeIt returns the median time of run in ms over at least minTime (at
// least 3 runs; the slow reference runs once).
func timeIt(run func(), minTime time.Duration, once bool) float64 {
	var ts []float64
	start := time.Now()
	for len(ts) < 3 || time.Since(start) < minTime {
		t0 := time.Now()
		run()
		ts = append(ts, time.Since(t0).Seconds()*1e3)
		if once {
			break
		}
	}
	sort.Float64s(ts)
	return median(ts)
}

// roundBF16 is x rounded to bfloat16 and back.
func roundBF16(x []float32) []float32 {
	h := make([]uint16, len(x))
	kernels.F32ToBF16(h, x)
	out := make([]float32, len(x))
	kernels.BF16ToF32(out, h)
	return out
}

func randVec(rng *rand.Rand, n int, lo, hi float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = lo + (hi-lo)*rng.Float32()
	}
	return x
}

// BERT-base at B=8, T=128.
const (
	benchTokens = 8 * 128
	benchH      = 768
	benchI      = 3072
	benchHeads  = 12
)

func kernelCases(family string) ([]kernelCase, error) {
	rng := rand.New(rand.NewSource(1))
	switch family {
	case "sgemm", "linear", "linear-bf16", "linear-int8":
		var cs []kernelCase
		for _, sh := range [][3]int{{benchTokens, 3 * benchH, benchH}, {benchTokens, benchI, benchH}, {benchTokens, benchH, benchI}} {
			m, n, k := sh[0], sh[1], sh[2]
			x, w, bias := randVec(rng, m*k, -1, 1), randVec(rng, n*k, -0.05, 0.05), randVec(rng, n, -0.1, 0.1)
			out := make([]float32, m*n)
			flops := 2 * float64(m) * float64(n) * float64(k)
			bytes := 4 * float64(m*k+n*k+m*n)
			shape := fmt.Sprintf("%dx%dx%d", m, n, k)
			if family == "sgemm" {
				cs = append(cs, kernelCase{family: family, shape: shape, flops: flops, bytes: bytes, tol: 1e-5, extra: []string{"gonum"},
					ref: func() []float32 {
						want := make([]float32, m*n)
						kernels.GemmRef(false, true, m, n, k, 1, x, k, w, k, 0, want, n)
						return want
					},
					prepare: func(v string, e *kernels.Engine) (func(), []float32) {
						switch v {
						case "ref":
							return func() { kernels.GemmRef(false, true, m, n, k, 1, x, k, w, k, 0, out, n) }, out
						case "gonum":
							g := gonum.Implementation{}
							return func() { g.Sgemm(blas.NoTrans, blas.Trans, m, n, k, 1, x, k, w, k, 0, out, n) }, out
						}
						impl := kernels.Implementation{Engine: e}
						return func() { impl.Sgemm(blas.NoTrans, blas.Trans, m, n, k, 1, x, k, w, k, 0, out, n) }, out
					}})
				continue
			}
			if family == "linear-int8" {
				// Every INT8 version computes the reference's integers
				// exactly; what differs is the GELU's last bits.
				cs = append(cs, kernelCase{family: family, shape: shape + "+bias+gelu", flops: flops, bytes: 4*float64(m*k) + float64(n*k) + 4*float64(m*n), tol: 1e-5, int8: true,
					ref: func() []float32 {
						want := make([]float32, m*n)
						kernels.LinearInt8Ref(want, x, m, w, n, k, bias, kernels.ActGELU)
						return want
					},
					prepare: func(v string, e *kernels.Engine) (func(), []float32) {
						if v == "ref" {
							return func() { kernels.LinearInt8Ref(out, x, m, w, n, k, bias, kernels.ActGELU) }, out
						}
						pw := e.PrepareWeightInt8(w, n, k)
						return func() { e.Linear(out, x, m, pw, bias, kernels.ActGELU) }, out
					}})
				continue
			}
			if family == "linear-bf16" {
				// The reference multiplies the BF16-rounded inputs (exact
				// products, float64 sums): what every BF16 version computes
				// up to float32 summation.
				xr, wr := roundBF16(x), roundBF16(w)
				cs = append(cs, kernelCase{family: family, shape: shape + "+bias+gelu", flops: flops, bytes: 2*float64(m*k+n*k) + 4*float64(m*n), tol: 1e-5, bf16: true,
					ref: func() []float32 {
						want := make([]float32, m*n)
						kernels.LinearRef(want, xr, m, wr, n, k, bias, kernels.ActGELU)
						return want
					},
					prepare: func(v string, e *kernels.Engine) (func(), []float32) {
						if v == "ref" {
							return func() { kernels.LinearRef(out, xr, m, wr, n, k, bias, kernels.ActGELU) }, out
						}
						pw := e.PrepareWeightBF16(w, n, k)
						return func() { e.Linear(out, x, m, pw, bias, kernels.ActGELU) }, out
					}})
				continue
			}
			cs = append(cs, kernelCase{family: family, shape: shape + "+bias+gelu", flops: flops, bytes: bytes, tol: 1e-5,
				ref: func() []float32 {
					want := make([]float32, m*n)
					kernels.LinearRef(want, x, m, w, n, k, bias, kernels.ActGELU)
					return want
				},
				prepare: func(v string, e *kernels.Engine) (func(), []float32) {
					if v == "ref" {
						return func() { kernels.LinearRef(out, x, m, w, n, k, bias, kernels.ActGELU) }, out
					}
					pw := e.PrepareWeight(w, n, k)
					return func() { e.Linear(out, x, m, pw, bias, kernels.ActGELU) }, out
				}})
		}
		return cs, nil
	case "attention", "attention-bf16":
		// BF16 attention at lengths where it runs in BF16 (see
		// kernels.Engine.BF16AttentionMin), against the same F32
		// reference: its error is BF16's rounding of the four operands.
		shapes, tol, bf16 := [][2]int{{8, 128}, {1, 384}}, 1e-5, family == "attention-bf16"
		if bf16 {
			shapes, tol = [][2]int{{4, 256}, {1, 384}}, 5e-3
		}
		var cs []kernelCase
		for _, sh := range shapes {
			b, t := sh[0], sh[1]
			n := b * t
			qkv := randVec(rng, n*3*benchH, -1, 1)
			seqs := make([]int32, b+1)
			for i := range seqs {
				seqs[i] = int32(i * t)
			}
			out := make([]float32, n*benchH)
			scale := float32(1 / math.Sqrt(benchH/benchHeads))
			cs = append(cs, kernelCase{family: family, shape: fmt.Sprintf("B%d T%d H%d heads%d", b, t, benchH, benchHeads),
				flops: 4 * float64(b) * float64(t) * float64(t) * benchH, bytes: 4 * float64(n*4*benchH), tol: tol, bf16: bf16,
				ref: func() []float32 {
					want := make([]float32, n*benchH)
					kernels.AttentionRef(want, qkv, seqs, benchH, benchHeads, scale)
					return want
				},
				prepare: func(v string, e *kernels.Engine) (func(), []float32) {
					switch {
					case v == "ref":
						return func() { kernels.AttentionRef(out, qkv, seqs, benchH, benchHeads, scale) }, out
					case bf16:
						return func() { e.AttentionBF16(out, qkv, seqs, benchH, benchHeads, scale) }, out
					}
					return func() { e.Attention(out, qkv, seqs, benchH, benchHeads, scale) }, out
				}})
		}
		return cs, nil
	case "layernorm":
		x, res := randVec(rng, benchTokens*benchH, -3, 3), randVec(rng, benchTokens*benchH, -1, 1)
		g, b := randVec(rng, benchH, 0.5, 1.5), randVec(rng, benchH, -0.1, 0.1)
		out := make([]float32, benchTokens*benchH)
		return []kernelCase{{family: family, shape: fmt.Sprintf("%dx%d+residual", benchTokens, benchH), bytes: 12 * float64(benchTokens*benchH), tol: 1e-5,
			ref: func() []float32 {
				want := make([]float32, len(out))
				kernels.LayerNormRef(want, x, res, benchTokens, benchH, g, b, 1e-12)
				return want
			},
			prepare: func(v string, e *kernels.Engine) (func(), []float32) {
				if v == "ref" {
					return func() { kernels.LayerNormRef(out, x, res, benchTokens, benchH, g, b, 1e-12) }, out
				}
				return func() { e.LayerNorm(out, x, res, benchTokens, benchH, g, b, 1e-12) }, out
			}}}, nil
	case "gelu":
		x := randVec(rng, benchTokens*benchI, -5, 5)
		bias := randVec(rng, benchI, -0.1, 0.1)
		out := make([]float32, len(x))
		return []kernelCase{{family: family, shape: fmt.Sprintf("%dx%d+bias", benchTokens, benchI), bytes: 8 * float64(len(x)), tol: 1e-6,
			ref: func() []float32 {
				want := append([]float32(nil), x...)
				kernels.BiasActRef(want, benchTokens, benchI, bias, kernels.ActGELU)
				return want
			},
			prepare: func(v string, e *kernels.Engine) (func(), []float32) {
				if v == "ref" {
					return func() { copy(out, x); kernels.BiasActRef(out, benchTokens, benchI, bias, kernels.ActGELU) }, out
				}
				return func() { copy(out, x); e.BiasAct(out, benchTokens, benchI, bias, kernels.ActGELU) }, out
			}}}, nil
	case "embed":
		const vocab, npos = 30522, 512
		word, pos, typ := randVec(rng, vocab*benchH, -0.1, 0.1), randVec(rng, npos*benchH, -0.1, 0.1), randVec(rng, 2*benchH, -0.1, 0.1)
		g, b := randVec(rng, benchH, 0.5, 1.5), randVec(rng, benchH, -0.1, 0.1)
		ids, types, positions := make([]int32, benchTokens), make([]int32, benchTokens), make([]int32, benchTokens)
		for i := range ids {
			ids[i], types[i], positions[i] = int32(rng.Intn(vocab)), int32(rng.Intn(2)), int32(i%128)
		}
		out := make([]float32, benchTokens*benchH)
		return []kernelCase{{family: family, shape: fmt.Sprintf("%d tokens H%d", benchTokens, benchH), bytes: 16 * float64(benchTokens*benchH), tol: 1e-5,
			ref: func() []float32 {
				want := make([]float32, len(out))
				if err := kernels.EmbedLayerNormRef(want, ids, types, positions, benchH, word, pos, typ, g, b, 1e-12); err != nil {
					panic(err) // the inputs above are in range by construction
				}
				return want
			},
			prepare: func(v string, e *kernels.Engine) (func(), []float32) {
				if v == "ref" {
					return func() { _ = kernels.EmbedLayerNormRef(out, ids, types, positions, benchH, word, pos, typ, g, b, 1e-12) }, out
				}
				return func() { _ = e.EmbedLayerNorm(out, ids, types, positions, benchH, word, pos, typ, g, b, 1e-12) }, out
			}}}, nil
	}
	return nil, fmt.Errorf("no kernel family %q (have %v)", family, KernelFamilies)
}
