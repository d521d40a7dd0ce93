package bench

import (
	"fmt"
	"io"
	"math"
	"math/rand"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/bertstream/bertstream/kernels"
	"github.com/bertstream/bertstream/nn"
)

// Tune measures the blocking table's entry on the CPU at hand: for each
// micro-kernel this CPU runs in assembly (F32, BF16, INT8), the k slice
// and then the row block, and attention's tile, each setting timed on
// BERT-base's linear layers (or attention) side by side with the table's,
// interleaved over rounds. A setting replaces the table's only when its
// medians are at least minGain ahead: on a noisy machine the table wins
// ties.

// TuneOptions configures Tune.
type TuneOptions struct {
	// Threads is the goroutines of a kernel call (0: GOMAXPROCS).
	Threads int
	// Rounds is how many times every setting runs its workload, settings
	// interleaved in a rotating order; the median of each is compared.
	Rounds int
	// Base names the table's entry to start from and compare with
	// (kernels.Tunings); empty: this CPU's.
	Base string
	// Log, when not nil, gets a line per setting as it is decided.
	Log io.Writer
}

// TuneCandidate is one setting of one part, as timed.
type TuneCandidate struct {
	Part    string `json:"part"`    // "gemm avx2", "gemm avx2-int8", "attention"
	Setting string `json:"setting"` // "kc 768 mc 72", "rows 96"
	// Ms is the median of each workload (Loads).
	Ms    []float64 `json:"ms"`
	Loads []string  `json:"loads"`
	// Speedup is the geometric mean over the workloads of the
	// reference's median over this one's.
	Speedup float64 `json:"speedup"`
	// MaxErr is the largest difference from the reference's outputs,
	// relative to their largest magnitude: a blocking changes the order
	// of the sums, not their terms.
	MaxErr float64 `json:"max_err"`
	// Reference marks the setting the others are compared with: the
	// table's, or in a part's second sweep the first one's choice.
	Reference bool `json:"reference"`
	Chosen    bool `json:"chosen"`
}

// TunePart is the outcome of one part: the table's setting, the chosen
// one and how much faster it ran (the product of its sweeps' speedups).
type TunePart struct {
	Part    string  `json:"part"`
	Table   string  `json:"table"`
	Chosen  string  `json:"chosen"`
	Speedup float64 `json:"speedup"`
}

// TuneResult is a measured tuning and what decided it.
type TuneResult struct {
	Measured   kernels.Measured `json:"measured"`
	Parts      []TunePart       `json:"parts"`
	Candidates []TuneCandidate  `json:"candidates"`
}

// minGain is how far ahead of the table a setting must be to replace it.
const minGain = 1.01

// tuneTol bounds MaxErr: sums reordered in float32 over k <= 3072.
const tuneTol = 1e-4

// Candidate k slices (F32 values, BF16 pairs, INT8 quads: INT8's take
// a byte a value, or two, where F32's take four) and row blocks; the
// table's own setting is always among them.
var (
	tuneKC       = []int{128, 192, 256, 384, 512, 768, 1024}
	tuneKCPairs  = []int{128, 192, 256, 384, 512, 768}
	tuneKCQuads  = []int{64, 96, 128, 192, 256, 384, 768}
	tuneMC       = []int{48, 72, 96, 144, 192}
	tuneAttnRows = []int{32, 48, 64, 96, 128, 192}
)

// Tune measures a tuning of this CPU (see above).
func Tune(opts TuneOptions) (TuneResult, error) {
	if opts.Rounds < 1 {
		opts.Rounds = 7
	}
	if opts.Threads <= 0 {
		opts.Threads = runtime.GOMAXPROCS(0)
	}
	base, err := kernels.New(kernels.Config{Threads: opts.Threads, Tuning: opts.Base})
	if err != nil {
		return TuneResult{}, fmt.Errorf("base: %w", err)
	}
	gemm, attnRows := base.Blocking()
	res := TuneResult{Measured: kernels.Measured{
		CPU: kernels.ThisCPU(), Base: base.Config().Tuning, GEMM: map[string]kernels.Blocking{},
		Threads: opts.Threads, Date: time.Now().UTC().Format(time.RFC3339),
	}}
	m := &res.Measured
	rng := rand.New(rand.NewSource(1))
	// The four linear layers of a BERT-base encoder layer (fused query,
	// key and value; attention's output; the two of the feed-forward
	// block, GELU on the first) on a batch of 8 x 128 tokens and on one
	// sequence of 128.
	type layer struct {
		n, k int
		act  kernels.Act
		w    []float32
	}
	layers := []layer{{3 * benchH, benchH, kernels.ActNone, nil}, {benchH, benchH, kernels.ActNone, nil},
		{benchI, benchH, kernels.ActGELU, nil}, {benchH, benchI, kernels.ActNone, nil}}
	for i := range layers {
		layers[i].w = randVec(rng, layers[i].n*layers[i].k, -0.05, 0.05)
	}
	rows := []int{benchTokens, 128}
	x := randVec(rng, benchTokens*benchI, -2, 2)
	kinds := []struct {
		name    string
		version string
		kcs     []int // candidate k slices, in the kernel's unit
		cfg     func(string) kernels.Config
		prepare func(*kernels.Engine, []float32, int, int) *kernels.Weight
	}{
		{"f32", base.Config().Version, tuneKC, func(v string) kernels.Config { return kernels.Config{Version: v} },
			(*kernels.Engine).PrepareWeight},
		{"bf16", base.Config().BF16Version, tuneKCPairs, func(v string) kernels.Config { return kernels.Config{BF16Version: v} },
			(*kernels.Engine).PrepareWeightBF16},
		{"int8", base.Config().Int8Version, tuneKCQuads, func(v string) kernels.Config { return kernels.Config{Int8Version: v} },
			(*kernels.Engine).PrepareWeightInt8},
	}
	for _, kind := range kinds {
		// The portable kernels are the fallback of CPUs without the
		// instructions, not worth tuning.
		if strings.HasPrefix(kind.version, "go") {
			continue
		}
		v := kind.version
		cfg := kind.cfg(v)
		cfg.Threads = opts.Threads
		e, err := kernels.New(cfg)
		if err != nil {
			return res, err
		}
		ws := make([]*kernels.Weight, len(layers))
		outs := make([][]float32, len(layers))
		for i, l := range layers {
			// Engines of one kernel share its panels whatever their
			// blocking: packed once.
			ws[i] = kind.prepare(e, l.w, l.n, l.k)
			outs[i] = make([]float32, benchTokens*l.n)
		}
		var loads []load
		for _, r := range rows {
			loads = append(loads, load{name: fmt.Sprintf("%d rows", r), run: func(e *kernels.Engine) {
				for i, l := range layers {
					e.Linear(outs[i][:r*l.n], x[:r*l.k], r, ws[i], nil, l.act)
				}
			}, out: func() []float32 {
				var got []float32
				for i, l := range layers {
					got = append(got, outs[i][:r*l.n]...)
				}
				return got
			}})
		}
		engine := func(b kernels.Blocking) (*kernels.Engine, error) {
			mm := *m
			mm.GEMM = map[string]kernels.Blocking{v: b}
			c := cfg
			c.Measured = &mm
			return kernels.New(c)
		}
		part := "gemm " + v
		at := gemm[v]
		var kcs []kernels.Blocking
		for _, kc := range withBase(kind.kcs, at.KC) {
			kcs = append(kcs, kernels.Blocking{KC: kc, MC: at.MC})
		}
		best, cands, err := sweep(part, kcs, at, loads, engine, opts)
		res.Candidates = append(res.Candidates, cands...)
		if err != nil {
			return res, err
		}
		var mcs []kernels.Blocking
		for _, mc := range withBase(tuneMC, at.MC) {
			mcs = append(mcs, kernels.Blocking{KC: best.KC, MC: mc})
		}
		best, cands, err = sweep(part, mcs, kernels.Blocking{KC: best.KC, MC: at.MC}, loads, engine, opts)
		res.Candidates = append(res.Candidates, cands...)
		if err != nil {
			return res, err
		}
		m.GEMM[v] = best
		res.Parts = append(res.Parts, summarize(res.Candidates, part))
	}
	// Attention's tile, on the F32 kernel as tuned, at the lengths the
	// kernel harness times it.
	var loads []load
	for _, sh := range [][2]int{{8, 128}, {1, 384}} {
		b, t := sh[0], sh[1]
		qkv := randVec(rng, b*t*3*benchH, -1, 1)
		seqs := make([]int32, b+1)
		for i := range seqs {
			seqs[i] = int32(i * t)
		}
		out := make([]float32, b*t*benchH)
		scale := float32(1 / math.Sqrt(benchH/benchHeads))
		loads = append(loads, load{name: fmt.Sprintf("B%d T%d", b, t), run: func(e *kernels.Engine) {
			e.Attention(out, qkv, seqs, benchH, benchHeads, scale)
		}, out: func() []float32 { return slices.Clone(out) }})
	}
	// sweep's settings are Blockings; a tile's query rows ride in MC.
	var tiles []kernels.Blocking
	for _, r := range withBase(tuneAttnRows, attnRows) {
		tiles = append(tiles, kernels.Blocking{MC: r})
	}
	best, cands, err := sweep("attention", tiles, kernels.Blocking{MC: attnRows}, loads, func(b kernels.Blocking) (*kernels.Engine, error) {
		mm := *m
		mm.AttnRows = b.MC
		return kernels.New(kernels.Config{Threads: opts.Threads, Measured: &mm})
	}, opts)
	res.Candidates = append(res.Candidates, cands...)
	if err != nil {
		return res, err
	}
	m.AttnRows = best.MC
	res.Parts = append(res.Parts, summarize(res.Candidates, "attention"))
	return res, nil
}

// summarize sums up a part's sweeps: the first sweep's reference is the
// table's setting, the last choice the part's.
func summarize(cands []TuneCandidate, part string) TunePart {
	p := TunePart{Part: part, Speedup: 1}
	for _, c := range cands {
		if c.Part != part {
			continue
		}
		if c.Reference && p.Table == "" {
			p.Table = c.Setting
		}
		if c.Chosen {
			p.Chosen = c.Setting
			p.Speedup *= c.Speedup
		}
	}
	return p
}

// decide sets each candidate's Speedup over the reference cands[ref] (the
// geometric mean of its medians' ratios), marks the fastest Chosen if it
// is at least minGain ahead, else the reference, and returns its index.
func decide(cands []TuneCandidate, ref int) int {
	best := ref
	for i := range cands {
		logSum := 0.0
		for li := range cands[i].Ms {
			logSum += math.Log(cands[ref].Ms[li] / cands[i].Ms[li])
		}
		cands[i].Speedup = math.Exp(logSum / float64(len(cands[i].Ms)))
		if cands[i].Speedup > cands[best].Speedup {
			best = i
		}
	}
	if cands[best].Speedup < minGain {
		best = ref
	}
	cands[best].Chosen = true
	return best
}

// load is one workload of a sweep: run runs it once on an engine, out
// copies what the last run computed.
type load struct {
	name string
	run  func(*kernels.Engine)
	out  func() []float32
}

// withBase is list with the table's value added where it lacks it, sorted.
func withBase(list []int, base int) []int {
	out := slices.Clone(list)
	if !slices.Contains(out, base) {
		out = append(out, base)
	}
	slices.Sort(out)
	return out
}

// sweep times each setting's engine on every load, the settings
// interleaved over opts.Rounds in a rotating order, and returns the
// fastest (by the geometric mean of its medians against base's) if it is
// at least minGain ahead, else base. A setting whose outputs differ from
// base's by more than tuneTol is an error: the blocking broke a kernel.
func sweep(part string, settings []kernels.Blocking, base kernels.Blocking, loads []load,
	engine func(kernels.Blocking) (*kernels.Engine, error), opts TuneOptions) (kernels.Blocking, []TuneCandidate, error) {
	engines := make([]*kernels.Engine, len(settings))
	bi := slices.Index(settings, base)
	if bi < 0 {
		return base, nil, fmt.Errorf("%s: the reference setting %+v is not among the candidates", part, base)
	}
	for i, s := range settings {
		e, err := engine(s)
		if err != nil {
			return base, nil, fmt.Errorf("%s %+v: %w", part, s, err)
		}
		engines[i] = e
	}
	name := func(s kernels.Blocking) string {
		if part == "attention" {
			return fmt.Sprintf("rows %d", s.MC)
		}
		return fmt.Sprintf("kc %d mc %d", s.KC, s.MC)
	}
	cands := make([]TuneCandidate, len(settings))
	var loadNames []string
	for _, l := range loads {
		loadNames = append(loadNames, l.name)
	}
	// A first, untimed run of each: caches, pools, and the outputs the
	// others are held to.
	want := make([][]float32, len(loads))
	for li, l := range loads {
		l.run(engines[bi])
		want[li] = l.out()
	}
	for i, e := range engines {
		cands[i] = TuneCandidate{Part: part, Setting: name(settings[i]), Loads: loadNames, Reference: i == bi}
		for li, l := range loads {
			l.run(e)
			got := l.out()
			scale := 0.0
			for _, v := range want[li] {
				scale = math.Max(scale, math.Abs(float64(v)))
			}
			cands[i].MaxErr = math.Max(cands[i].MaxErr, nn.MaxAbsDiff(got, want[li])/math.Max(scale, 1e-30))
		}
		if cands[i].MaxErr > tuneTol {
			return base, cands, fmt.Errorf("%s %s: outputs %.3g from the table's setting's (tolerance %g)", part, cands[i].Setting, cands[i].MaxErr, tuneTol)
		}
	}
	times := make([][][]float64, len(settings))
	for i := range times {
		times[i] = make([][]float64, len(loads))
	}
	for r := 0; r < opts.Rounds; r++ {
		for j := range settings {
			i := (j + r) % len(settings)
			for li, l := range loads {
				t0 := time.Now()
				l.run(engines[i])
				times[i][li] = append(times[i][li], float64(time.Since(t0).Nanoseconds())/1e6)
			}
		}
	}
	for i := range settings {
		for li := range loads {
			slices.Sort(times[i][li])
			cands[i].Ms = append(cands[i].Ms, median(times[i][li]))
		}
	}
	best := decide(cands, bi)
	if opts.Log != nil {
		for _, c := range cands {
			mark := ""
			if c.Chosen {
				mark = "  <- chosen"
			}
			if c.Reference {
				mark += "  (reference)"
			}
			fmt.Fprintf(opts.Log, "%-20s %-16s", part, c.Setting)
			for li, ms := range c.Ms {
				fmt.Fprintf(opts.Log, "  %s %8.3f ms", c.Loads[li], ms)
			}
			fmt.Fprintf(opts.Log, "  %.3fx%s\n", c.Speedup, mark)
		}
	}
	return settings[best], cands, nil
}
