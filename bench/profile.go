package bench

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bertstream/bertstream/nn"
)

// Profiler is an nn.Backend that runs another and times every operation
// by kind and by region of the model (the model marks embeddings, each
// layer and the heads through nn.Region). It waits for the device after
// each operation, so on a GPU it measures operations one by one rather
// than the overlapped pipeline: use it to see where time goes, and plain
// runs for throughput.
type Profiler struct {
	nn.Backend
	region string
	// times[region][op] accumulates; order keeps regions as first seen.
	times map[string]map[string]time.Duration
	calls map[string]map[string]int
	order []string
}

// NewProfiler wraps be.
func NewProfiler(be nn.Backend) *Profiler {
	return &Profiler{Backend: be, region: "other", times: map[string]map[string]time.Duration{}, calls: map[string]map[string]int{}}
}

// Region implements nn.Regioner.
func (p *Profiler) Region(name string) { p.region = name }

// Reset forgets what was measured.
func (p *Profiler) Reset() {
	p.times, p.calls, p.order = map[string]map[string]time.Duration{}, map[string]map[string]int{}, nil
}

func (p *Profiler) time(op string, f func() error) error {
	start := time.Now()
	err := f()
	if serr := p.Backend.Sync(); err == nil {
		err = serr
	}
	d := time.Since(start)
	if p.times[p.region] == nil {
		p.times[p.region] = map[string]time.Duration{}
		p.calls[p.region] = map[string]int{}
		p.order = append(p.order, p.region)
	}
	p.times[p.region][op] += d
	p.calls[p.region][op]++
	return err
}

func (p *Profiler) Linear(out, x, w, bias *nn.Tensor, act nn.Act) error {
	op := "linear"
	if act != nn.ActNone {
		op = "linear+" + act.String()
	}
	return p.time(op, func() error { return p.Backend.Linear(out, x, w, bias, act) })
}

func (p *Profiler) LayerNorm(out, x, res, gamma, beta *nn.Tensor, eps float32) error {
	return p.time("layernorm", func() error { return p.Backend.LayerNorm(out, x, res, gamma, beta, eps) })
}

func (p *Profiler) Attention(out, qkv, seqs *nn.Tensor, maxLen, heads int, scale float32) error {
	return p.time("attention", func() error { return p.Backend.Attention(out, qkv, seqs, maxLen, heads, scale) })
}

func (p *Profiler) Embed(out, ids, types, positions, word, pos, typ, gamma, beta *nn.Tensor, eps float32) error {
	return p.time("embed", func() error { return p.Backend.Embed(out, ids, types, positions, word, pos, typ, gamma, beta, eps) })
}

func (p *Profiler) Gather(out, x, idx *nn.Tensor) error {
	return p.time("gather", func() error { return p.Backend.Gather(out, x, idx) })
}

func (p *Profiler) Scatter(out, x, idx *nn.Tensor) error {
	return p.time("scatter", func() error { return p.Backend.Scatter(out, x, idx) })
}

func (p *Profiler) Pool(out, x, seqs *nn.Tensor, pl nn.Pooling) error {
	return p.time("pool", func() error { return p.Backend.Pool(out, x, seqs, pl) })
}

// OpTime is the time one kind of operation took in one region, per pass.
type OpTime struct {
	Region string  `json:"region"`
	Op     string  `json:"op"`
	Ms     float64 `json:"ms"`
	Calls  int     `json:"calls"`
}

// Report returns the times per pass, averaged over passes forward passes,
// in region order, then by op name.
func (p *Profiler) Report(passes int) []OpTime {
	var out []OpTime
	for _, r := range p.order {
		ops := make([]string, 0, len(p.times[r]))
		for op := range p.times[r] {
			ops = append(ops, op)
		}
		sort.Strings(ops)
		for _, op := range ops {
			out = append(out, OpTime{Region: r, Op: op, Ms: p.times[r][op].Seconds() * 1e3 / float64(passes), Calls: p.calls[r][op] / passes})
		}
	}
	return out
}

// WriteProfile prints a table with one row per region and one column per
// op kind, in milliseconds per forward pass, with totals.
func WriteProfile(w io.Writer, times []OpTime) error {
	var regions, ops []string
	cell := map[[2]string]float64{}
	for _, t := range times {
		if _, ok := cell[[2]string{t.Region, ""}]; !ok {
			regions = append(regions, t.Region)
			cell[[2]string{t.Region, ""}] = 0
		}
		if _, ok := cell[[2]string{"", t.Op}]; !ok {
			ops = append(ops, t.Op)
			cell[[2]string{"", t.Op}] = 0
		}
		cell[[2]string{t.Region, t.Op}] += t.Ms
		cell[[2]string{t.Region, ""}] += t.Ms
		cell[[2]string{"", t.Op}] += t.Ms
	}
	sort.Strings(ops)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "ms per pass\t%s\ttotal\t\n", strings.Join(ops, "\t"))
	row := func(name, key string) {
		fmt.Fprintf(tw, "%s\t", name)
		for _, op := range ops {
			if key == "" {
				fmt.Fprintf(tw, "%.3f\t", cell[[2]string{"", op}])
			} else {
				fmt.Fprintf(tw, "%.3f\t", cell[[2]string{key, op}])
			}
		}
		total := 0.0
		if key == "" {
			for _, op := range ops {
				total += cell[[2]string{"", op}]
			}
		} else {
			total = cell[[2]string{key, ""}]
		}
		fmt.Fprintf(tw, "%.3f\t\n", total)
	}
	for _, r := range regions {
		row(r, r)
	}
	row("total", "")
	return tw.Flush()
}
