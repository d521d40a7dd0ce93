package bench

import (
	"fmt"
	"math/rand"
	"runtime"
	"sort"
	"time"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/nn"
)

// ModelOptions describe a throughput/latency run of a preset with random
// weights.
type ModelOptions struct {
	Preset     string
	Batch, Seq int
	// MinLen, when above 0, makes a batch of mixed lengths: each sequence
	// gets a length uniform in [MinLen, Seq] (the batch is padded to Seq),
	// the shape of real traffic rather than of a benchmark.
	MinLen int
	// Runs timed passes after Warmup untimed ones.
	Runs, Warmup int
	Seed         int64
	// Profile times every operation by kind and layer (slower: each op
	// waits for the device).
	Profile bool
}

// ModelResult is one benchmark row, in the JSON form of DESIGN.md's
// `bertstream bench --json` (which other tools read): the median pass time
// and throughput, plus spread and context.
type ModelResult struct {
	Engine     string  `json:"engine"`
	Preset     string  `json:"preset"`
	Batch      int     `json:"batch"`
	Seq        int     `json:"seq"`
	MinLen     int     `json:"min_len,omitempty"`
	Tokens     int     `json:"tokens"` // real tokens per batch
	Threads    int     `json:"threads"`
	Device     string  `json:"device"`
	DType      string  `json:"dtype"`
	Kernels    string  `json:"kernels,omitempty"`
	MsPerBatch float64 `json:"ms_per_batch"`
	MsP10      float64 `json:"ms_p10"`
	MsP90      float64 `json:"ms_p90"`
	SeqPerS    float64 `json:"seq_per_s"`
	TokensPerS float64 `json:"tokens_per_s"`
	// GFLOP is the encoder's work per batch on its real tokens and GFLOPS
	// the rate at the median.
	GFLOP   float64  `json:"gflop"`
	GFLOPS  float64  `json:"gflops"`
	Runs    int      `json:"runs"`
	Profile []OpTime `json:"profile,omitempty"`
}

// Inputs makes a batch of random token ids: every sequence Seq long, or of
// lengths in [MinLen, Seq] when MinLen > 0.
func Inputs(cfg bert.Config, batch, seq, minLen int, seed int64) bert.Inputs {
	r := rand.New(rand.NewSource(seed))
	in := bert.Inputs{B: batch, T: seq, IDs: make([]int32, batch*seq), TypeIDs: make([]int32, batch*seq), Mask: make([]int32, batch*seq)}
	for b := 0; b < batch; b++ {
		n := seq
		if minLen > 0 && minLen < seq {
			n = minLen + r.Intn(seq-minLen+1)
		}
		for t := 0; t < n; t++ {
			in.IDs[b*seq+t] = int32(r.Intn(cfg.VocabSize))
			in.Mask[b*seq+t] = 1
		}
	}
	return in
}

// EncoderFLOP counts the multiply-adds (x2) of the encoder on a batch:
// per token and layer the four H x H projections and the two H x I ones,
// plus, per sequence of n tokens, the n x n x H of q k^T and of the
// probabilities times v.
func EncoderFLOP(cfg bert.Config, in bert.Inputs) float64 {
	H, I := float64(cfg.HiddenSize), float64(cfg.IntermediateSize)
	var tokens, attn float64
	for b := 0; b < in.B; b++ {
		n := 0.0
		for t := 0; t < in.T; t++ {
			n += float64(in.Mask[b*in.T+t])
		}
		tokens += n
		attn += 2 * n * n * H
	}
	return float64(cfg.NumHiddenLayers) * 2 * (tokens*(4*H*H+2*H*I) + attn)
}

// RunModel builds the preset on be with random weights and times forward
// passes (encoder and pooler) on one batch.
func RunModel(be nn.Backend, o ModelOptions) (ModelResult, error) {
	cfg, err := bert.Preset(o.Preset)
	if err != nil {
		return ModelResult{}, err
	}
	if o.Batch <= 0 || o.Seq <= 0 || o.Seq > cfg.MaxPositionEmbeddings {
		return ModelResult{}, fmt.Errorf("batch %d x seq %d: want positive sizes, seq at most %d", o.Batch, o.Seq, cfg.MaxPositionEmbeddings)
	}
	o.Runs = max(o.Runs, 1)
	var prof *Profiler
	run := be
	if o.Profile {
		prof = NewProfiler(be)
		run = prof
	}
	m, err := bert.NewRandom(cfg, run, o.Seed+1)
	if err != nil {
		return ModelResult{}, err
	}
	defer m.Close()
	in := Inputs(cfg, o.Batch, o.Seq, o.MinLen, o.Seed+2)
	pass := func() error {
		s := nn.NewScope("bench")
		defer s.Close()
		if _, err := m.Forward(s, in, bert.Want{Pooled: true}); err != nil {
			return err
		}
		return run.Sync()
	}
	for i := 0; i < o.Warmup; i++ {
		if err := pass(); err != nil {
			return ModelResult{}, err
		}
	}
	if prof != nil {
		prof.Reset()
	}
	times := make([]float64, o.Runs)
	for i := range times {
		start := time.Now()
		if err := pass(); err != nil {
			return ModelResult{}, err
		}
		times[i] = time.Since(start).Seconds() * 1e3
	}
	sort.Float64s(times)
	q := func(f float64) float64 { return times[min(len(times)-1, int(f*float64(len(times))))] }
	tokens := 0
	for _, v := range in.Mask {
		tokens += int(v)
	}
	res := ModelResult{
		Engine: "bertstream", Preset: o.Preset, Batch: o.Batch, Seq: o.Seq, MinLen: o.MinLen, Tokens: tokens,
		Threads: runtime.GOMAXPROCS(0), Device: be.Device(), DType: be.Compute().String(),
		MsPerBatch: median(times), MsP10: q(0.1), MsP90: q(0.9), Runs: o.Runs,
		GFLOP: EncoderFLOP(cfg, in) / 1e9,
	}
	if c, ok := be.(nn.CPU); ok {
		k := c.Kernels()
		res.Threads, res.Kernels = k.Threads(), k.Config().Version
		if c.BF16Weights {
			res.DType = "BF16"
			res.Kernels = k.Config().BF16Version
		}
		if c.Int8Weights {
			res.DType = "INT8"
			res.Kernels = k.Config().Int8Version
		}
	}
	res.SeqPerS = float64(o.Batch) / res.MsPerBatch * 1e3
	res.TokensPerS = float64(tokens) / res.MsPerBatch * 1e3
	res.GFLOPS = res.GFLOP / res.MsPerBatch * 1e3
	if prof != nil {
		res.Profile = prof.Report(o.Runs)
	}
	return res, nil
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}
