//go:build cuda

package cuda

// GPU benchmarks: the kernel harness and model throughput. On a GPU
// machine:
//
//	go test -tags cuda -run '^$' -bench . ./cuda      # with Go
//	cd cuda && ./cuda.test -test.run '^$' -test.bench .  # make gpu-bundle's binary
//
// The harness follows llm.c's dev/cuda: every version of an op's kernel
// (a family, named after the op; the versions launched as kernels/gpu
// configures them) is first checked against the CPU reference
// (kernels.*Ref) on the benchmark's own inputs, and only then timed, with
// CUDA events around b.N launches, so that the figures are device time:
// µs per launch, GB/s of the bytes a launch must move, TFLOP/s where it
// computes.

import (
	"fmt"
	"math"
	"math/rand"
	"testing"
	"time"

	"gorgonia.org/cu"

	"github.com/bertstream/bertstream/bench"
	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/kernels"
	"github.com/bertstream/bertstream/kernels/gpu"
	"github.com/bertstream/bertstream/nn"
)

// BERT-base at a batch of 32 sequences of 128 tokens.
const (
	kBatch, kSeq, kHidden, kHeads, kInter, kVocab = 32, 128, 768, 12, 3072, 30522
	kTokens                                       = kBatch * kSeq
)

// harnessTol bounds a version's error relative to the largest reference
// value: the unit roundoff of the dtype the inputs and the result are
// stored in, times a few roundings.
var harnessTol = map[nn.DType]float64{nn.F32: 1e-5, nn.F16: 4e-3, nn.BF16: 3e-2}

type harness struct {
	b   *testing.B
	be  *Backend
	s   *nn.Scope
	rng *rand.Rand
}

// upload puts random values in [lo, hi) on the device in the compute
// dtype and returns them as the device holds them.
func (h *harness) upload(lo, hi float32, shape ...int) (*nn.Tensor, []float32) {
	v := make([]float32, nn.NumElements(shape))
	for i := range v {
		v[i] = lo + (hi-lo)*h.rng.Float32()
	}
	host, err := nn.HostF32(h.s, v, shape...)
	if err != nil {
		h.b.Fatal(err)
	}
	d, err := h.be.Upload(h.s, host, h.be.dt)
	if err != nil {
		h.b.Fatal(err)
	}
	return d, h.download(d)
}

func (h *harness) ints(v []int32) *nn.Tensor {
	host, err := nn.HostI32(h.s, v, len(v))
	if err != nil {
		h.b.Fatal(err)
	}
	d, err := h.be.Upload(h.s, host, nn.I32)
	if err != nil {
		h.b.Fatal(err)
	}
	return d
}

func (h *harness) download(t *nn.Tensor) []float32 {
	host, err := h.be.Download(h.s, t, nn.F32)
	if err != nil {
		h.b.Fatal(err)
	}
	return host.F32()
}

// version validates one kernel version, launch, against want (the values
// of out at rows, all rows when rows is nil), then times it. A kernel
// that works in place gets reset, which restores its input before the
// validating launch (the benchmark function runs once per b.N tried).
func (h *harness) version(name string, reset, launch func() error, out *nn.Tensor, rows []int, want []float32, flops, bytes float64) {
	h.b.Run(name, func(b *testing.B) {
		be := h.be
		if reset != nil {
			if err := locked(be, reset); err != nil {
				b.Fatal(err)
			}
		}
		if err := locked(be, launch); err != nil {
			b.Fatal(err)
		}
		hs := h.s.Child("download")
		defer hs.Close()
		host, err := be.Download(hs, out, nn.F32)
		if err != nil {
			b.Fatal(err)
		}
		got := host.F32()
		if rows != nil {
			w := out.Cols()
			sel := make([]float32, 0, len(rows)*w)
			for _, r := range rows {
				sel = append(sel, got[r*w:(r+1)*w]...)
			}
			got = sel
		}
		scale, worst := 0.0, 0.0
		for i := range want {
			scale = math.Max(scale, math.Abs(float64(want[i])))
			d := math.Abs(float64(got[i]) - float64(want[i]))
			if math.IsNaN(d) {
				d = math.Inf(1)
			}
			worst = math.Max(worst, d)
		}
		if rel := worst / math.Max(scale, 1e-30); rel > harnessTol[be.dt] {
			b.Fatalf("invalid: max error %.3g of the largest reference value %.3g, over %.3g", rel, scale, harnessTol[be.dt])
		}
		var ms float64
		b.ResetTimer()
		err = locked(be, func() error {
			start, err := cu.MakeEvent(cu.DefaultEvent)
			if err != nil {
				return err
			}
			defer cu.DestroyEvent(&start)
			end, err := cu.MakeEvent(cu.DefaultEvent)
			if err != nil {
				return err
			}
			defer cu.DestroyEvent(&end)
			if err := start.Record(be.stream); err != nil {
				return err
			}
			for i := 0; i < b.N; i++ {
				if err := launch(); err != nil {
					return err
				}
			}
			if err := end.Record(be.stream); err != nil {
				return err
			}
			if err := end.Synchronize(); err != nil {
				return err
			}
			ms, err = start.Elapsed(end)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		per := ms / 1e3 / float64(b.N) // seconds per launch
		b.ReportMetric(per*1e6, "µs/launch")
		b.ReportMetric(bytes/per/1e9, "GB/s")
		if flops > 0 {
			b.ReportMetric(flops/per/1e12, "TFLOP/s")
		}
	})
}

func locked(be *Backend, f func() error) error {
	if err := be.enter(); err != nil {
		return err
	}
	defer be.leave()
	return f()
}

func BenchmarkKernels(b *testing.B) {
	for _, dt := range []nn.DType{nn.F32, nn.F16, nn.BF16} {
		b.Run(dt.String(), func(b *testing.B) {
			be := open(b, dt)
			s := nn.NewScope("harness")
			defer s.Close()
			h := &harness{b: b, be: be, s: s, rng: rand.New(rand.NewSource(1))}
			b.Run("embed", func(b *testing.B) { h.b = b; h.embed() })
			b.Run("layernorm", func(b *testing.B) { h.b = b; h.layerNorm() })
			b.Run("gelu", func(b *testing.B) { h.b = b; h.gelu() })
			b.Run("attention", func(b *testing.B) { h.b = b; h.attention() })
			b.Run("linear", func(b *testing.B) { h.b = b; h.linear() })
		})
	}
}

func (h *harness) embed() {
	size := float64(h.be.dt.Size())
	word, wh := h.upload(-1, 1, kVocab, kHidden)
	pos, ph := h.upload(-1, 1, 512, kHidden)
	typ, th := h.upload(-1, 1, 2, kHidden)
	gamma, gh := h.upload(0.5, 1.5, kHidden)
	beta, bh := h.upload(-1, 1, kHidden)
	ids, types, positions := make([]int32, kTokens), make([]int32, kTokens), make([]int32, kTokens)
	for i := range ids {
		ids[i], types[i], positions[i] = int32(h.rng.Intn(kVocab)), int32(h.rng.Intn(2)), int32(i%kSeq)
	}
	out := h.be.New(h.s, h.be.dt, kTokens, kHidden)
	want := make([]float32, kTokens*kHidden)
	if err := kernels.EmbedLayerNormRef(want, ids, types, positions, kHidden, wh, ph, th, gh, bh, 1e-12); err != nil {
		h.b.Fatal(err)
	}
	tables := []*storage{storageOf(word), storageOf(pos), storageOf(typ), storageOf(gamma), storageOf(beta)}
	di, dty, dp := h.ints(ids), h.ints(types), h.ints(positions)
	for v := 1; v <= gpu.EmbedVersions; v++ {
		h.version(fmt.Sprintf("v%d", v), nil, func() error {
			return h.be.runEmbed(v, storageOf(out), storageOf(di), storageOf(dty), storageOf(dp), tables, kTokens, kHidden, 1e-12)
		}, out, nil, want, 0, 4*kTokens*kHidden*size)
	}
}

func (h *harness) layerNorm() {
	size := float64(h.be.dt.Size())
	x, xh := h.upload(-3, 5, kTokens, kHidden)
	res, rh := h.upload(-1, 1, kTokens, kHidden)
	gamma, gh := h.upload(0.5, 1.5, kHidden)
	beta, bh := h.upload(-1, 1, kHidden)
	out := h.be.New(h.s, h.be.dt, kTokens, kHidden)
	want := make([]float32, kTokens*kHidden)
	kernels.LayerNormRef(want, xh, rh, kTokens, kHidden, gh, bh, 1e-12)
	for v := 1; v <= gpu.LayerNormVersions; v++ {
		h.version(fmt.Sprintf("v%d", v), nil, func() error {
			return h.be.runLayerNorm(v, storageOf(out), storageOf(x), storageOf(res), storageOf(gamma), storageOf(beta), kTokens, kHidden, 1e-12)
		}, out, nil, want, 0, 3*kTokens*kHidden*size)
	}
}

func (h *harness) gelu() {
	n := kTokens * kInter
	src, xh := h.upload(-6, 6, kTokens, kInter)
	x := h.be.New(h.s, h.be.dt, kTokens, kInter)
	want := append([]float32(nil), xh...)
	kernels.BiasActRef(want, kTokens, kInter, nil, nn.ActGELU)
	h.version("v1", h.copy(x, src), func() error { return h.be.runGELU(storageOf(x), int64(n), nn.ActGELU) },
		x, nil, want, 0, 2*float64(n*h.be.dt.Size()))
}

// copy returns a reset that copies src into dst on the device.
func (h *harness) copy(dst, src *nn.Tensor) func() error {
	return func() error {
		return cu.MemcpyDtoDAsync(storageOf(dst).ptr, storageOf(src).ptr, storageOf(src).size, h.be.stream)
	}
}

func (h *harness) attention() {
	size := float64(h.be.dt.Size())
	qkv, qh := h.upload(-1, 1, kTokens, 3*kHidden)
	seqs := make([]int32, kBatch+1)
	for b := range seqs {
		seqs[b] = int32(b * kSeq)
	}
	ds := h.ints(seqs)
	out := h.be.New(h.s, h.be.dt, kTokens, kHidden)
	scale := float32(1 / math.Sqrt(kHidden/kHeads))
	want := make([]float32, kTokens*kHidden)
	kernels.AttentionRef(want, qh, seqs, kHidden, kHeads, scale)
	for v := 1; v <= gpu.AttentionVersions; v++ {
		if v == 3 && gpu.AttentionVersion(h.be.kt, kHidden/kHeads, kHeads) != 3 {
			continue // no tensor-core kernel for this dtype
		}
		h.version(fmt.Sprintf("v%d", v), nil, func() error {
			return h.be.runAttention(v, storageOf(out), storageOf(qkv), storageOf(ds), kBatch, kTokens, kHidden, kHeads, kSeq, scale)
		}, out, nil, want, 4*kTokens*kSeq*kHidden, 4*kTokens*kHidden*size)
	}
}

// linear is the feed-forward block's first layer, x [tokens, H] by w [I,
// H] plus bias, then GELU: through cuBLASLt with the bias in its epilogue
// ("lt"), and through cuBLAS's GEMM with a bias + GELU pass ("gemm", the
// fallback for shapes cuBLASLt lacks). A GEMM this size is validated on a
// sample of rows: the reference is a plain triple loop.
func (h *harness) linear() {
	size := float64(h.be.dt.Size())
	x, xh := h.upload(-1, 1, kTokens, kHidden)
	w, wh := h.upload(-0.05, 0.05, kInter, kHidden)
	bias, bh := h.upload(-1, 1, kInter)
	out := h.be.New(h.s, h.be.dt, kTokens, kInter)
	rows := []int{0, 1, 777, kTokens / 2, kTokens - 1}
	want := make([]float32, len(rows)*kInter)
	for i, r := range rows {
		kernels.GemmRef(false, true, 1, kInter, kHidden, 1, xh[r*kHidden:], kHidden, wh, kHidden, 0, want[i*kInter:], kInter)
	}
	kernels.BiasActRef(want, len(rows), kInter, bh, nn.ActGELU)
	flops := 2.0 * kTokens * kInter * kHidden
	bytes := (kTokens*kHidden + kInter*kHidden + 3*kTokens*kInter) * size
	so, sx, sw, sb := storageOf(out), storageOf(x), storageOf(w), storageOf(bias)
	h.version("lt", nil, func() error {
		return h.be.linearLt(so, sx, sw, sb, kTokens, kInter, kHidden, nn.ActGELU)
	}, out, rows, want, flops, bytes)
	h.version("gemm", nil, func() error {
		return h.be.linearGemm(so, sx, sw, sb, kTokens, kInter, kHidden, nn.ActGELU)
	}, out, rows, want, flops, bytes)
}

// BenchmarkModel times forward passes (encoder and pooler) of BERT-base
// with random weights, every sequence full length, as `bertstream bench`
// and bench/gpu/torch_peer.py do: ms per batch (wall clock, device work
// included), sequences per second and the encoder's TFLOP/s.
func BenchmarkModel(b *testing.B) {
	cfg, err := bert.Preset("base")
	if err != nil {
		b.Fatal(err)
	}
	for _, dt := range []nn.DType{nn.F32, nn.F16} {
		b.Run(dt.String(), func(b *testing.B) {
			be := open(b, dt)
			m, err := bert.NewRandom(cfg, be, 1)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			for _, batch := range []int{1, 8, 32, 128} {
				for _, seq := range []int{128, 384} {
					b.Run(fmt.Sprintf("B=%d/T=%d", batch, seq), func(b *testing.B) {
						in := bench.Inputs(cfg, batch, seq, 0, 2)
						pass := func() {
							s := nn.NewScope("bench")
							defer s.Close()
							if _, err := m.Forward(s, in, bert.Want{Pooled: true}); err != nil {
								b.Fatal(err)
							}
							if err := be.Sync(); err != nil {
								b.Fatal(err)
							}
						}
						pass() // fills the pool and cuBLASLt's plans
						b.ResetTimer()
						start := time.Now()
						for i := 0; i < b.N; i++ {
							pass()
						}
						per := time.Since(start).Seconds() / float64(b.N)
						b.ReportMetric(per*1e3, "ms/batch")
						b.ReportMetric(float64(batch)/per, "seq/s")
						b.ReportMetric(bench.EncoderFLOP(cfg, in)/per/1e12, "TFLOP/s")
					})
				}
			}
		})
	}
}
