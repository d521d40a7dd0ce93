package peers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image/color"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Subject is the engine the comparison is about: the report gives its
// throughput as a ratio to each other engine's.
const Subject = "bertstream"

// engineLabels are the names a reader knows the engines by.
var engineLabels = map[string]string{
	"bertstream":  "bertstream",
	"onnxruntime": "ONNX Runtime",
	"pytorch":     "PyTorch",
}

// Label is the display name of an engine.
func Label(engine string) string {
	if l, ok := engineLabels[engine]; ok {
		return l
	}
	return engine
}

// Machine is what the numbers were measured on. The load averages are
// there because the machine may be shared: a loaded run is slower.
type Machine struct {
	CPU          string            `json:"cpu"`
	Cores        int               `json:"cores"`
	Kernel       string            `json:"kernel,omitempty"`
	Go           string            `json:"go"`
	Date         string            `json:"date"`
	LoadAvgStart string            `json:"loadavg_start,omitempty"`
	LoadAvgEnd   string            `json:"loadavg_end,omitempty"`
	Env          map[string]string `json:"env,omitempty"`
}

// envPrefixes are the variables that change how the engines' math
// libraries run, recorded as the driver saw them.
var envPrefixes = []string{"OPENBLAS_", "OMP_", "MKL_", "GOMAXPROCS", "GOAMD64", "LD_LIBRARY_PATH"}

// ReadMachine describes this machine now.
func ReadMachine(now time.Time) Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), Date: now.Format(time.RFC3339), LoadAvgStart: LoadAvg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		for _, p := range envPrefixes {
			if strings.HasPrefix(k, p) {
				if m.Env == nil {
					m.Env = map[string]string{}
				}
				m.Env[k] = v
			}
		}
	}
	return m
}

// LoadAvg is the first three fields of /proc/loadavg, or "" where there is none.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// Report is one comparison run: cpu-peers.json, and the source of the
// markdown table and the plot.
type Report struct {
	Machine Machine `json:"machine"`
	// Commit is the source tree bertstream was built from (git describe).
	Commit string `json:"commit,omitempty"`
	// Command is the driver's command line, which reproduces the run.
	Command string `json:"command,omitempty"`
	Threads int    `json:"threads"`
	Rounds  int    `json:"rounds"`
	// Engines are the engines compared, in the table's column order.
	Engines []string `json:"engines"`
	// DTypes are the compute dtypes asked for, in the table's row order
	// (NormDType's names); reports from before dtypes have none: f32.
	DTypes  []string `json:"dtypes,omitempty"`
	Notes   []string `json:"notes,omitempty"`
	Results []Result `json:"results"`
}

// Version is the version an engine reported, or "".
func (r *Report) Version(engine string) string {
	for _, res := range r.Results {
		if res.Engine == engine && res.Version != "" {
			return res.Version
		}
	}
	return ""
}

// ReadReport reads a report written by WriteFiles.
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// Shapes are the shapes of the results, in their order.
func (r *Report) Shapes() []Shape {
	var out []Shape
	for _, res := range r.Results {
		if s := res.Shape(); !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// dtypes are the report's dtypes in row order: DTypes, then any other the
// results have.
func (r *Report) dtypes() []string {
	var out []string
	for _, d := range r.DTypes {
		if d = NormDType(d); !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	for _, res := range r.Results {
		if d := NormDType(res.DType); !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// variants are the engine-dtype pairs that have results, engines in
// column order, each one's dtypes in row order.
func (r *Report) variants() []Variant {
	var out []Variant
	for _, e := range r.Engines {
		for _, d := range r.dtypes() {
			v := Variant{e, d}
			if slices.ContainsFunc(r.Results, func(res Result) bool { return res.Variant() == v }) {
				out = append(out, v)
			}
		}
	}
	return out
}

// Get is a variant's successful result for a shape.
func (r *Report) Get(v Variant, s Shape) (Result, bool) {
	for _, res := range r.Results {
		if res.Variant() == v && res.Shape() == s && res.Err == "" {
			return res, true
		}
	}
	return Result{}, false
}

// Ratio is variant a's throughput over variant b's at shape s (above 1: a
// is faster). At a fixed batch this is also b's latency over a's.
func (r *Report) Ratio(a, b Variant, s Shape) (float64, bool) {
	ra, ok1 := r.Get(a, s)
	rb, ok2 := r.Get(b, s)
	if !ok1 || !ok2 {
		return 0, false
	}
	return ra.SeqPerS / rb.SeqPerS, true
}

// RoundRatios are the lowest and highest of Ratio taken round by round
// (each round's medians, the two timed side by side): the spread that load
// from others put on it. Only where both ran every round.
func (r *Report) RoundRatios(a, b Variant, s Shape) (lo, hi float64, ok bool) {
	ra, ok1 := r.Get(a, s)
	rb, ok2 := r.Get(b, s)
	// A round that failed leaves no entry, which would pair other rounds.
	if !ok1 || !ok2 || r.Rounds < 2 || len(ra.RoundMs) != r.Rounds || len(rb.RoundMs) != r.Rounds {
		return 0, 0, false
	}
	for i := range ra.RoundMs {
		x := rb.RoundMs[i] / ra.RoundMs[i]
		if i == 0 || x < lo {
			lo = x
		}
		if i == 0 || x > hi {
			hi = x
		}
	}
	return lo, hi, true
}

// Target is a ratio the comparison is held to: A's throughput over B's at
// Shape at least Bound, or with Latency, A's latency over B's at most Bound.
type Target struct {
	What    string
	A, B    Variant
	Shape   Shape
	Latency bool
	Bound   float64
}

// Targets are issue 13's "must show" ratios, on bert-base with 2 threads;
// the report states those whose shapes it has.
var Targets = []Target{
	{"f32 throughput, bertstream / ONNX Runtime", Variant{Subject, "f32"}, Variant{"onnxruntime", "f32"}, Shape{"base", 8, 128}, false, 1.2},
	{"f32 latency, bertstream / ONNX Runtime", Variant{Subject, "f32"}, Variant{"onnxruntime", "f32"}, Shape{"base", 1, 128}, true, 0.85},
	{"bf16 throughput, bertstream bf16 / f32", Variant{Subject, "bf16"}, Variant{Subject, "f32"}, Shape{"base", 8, 128}, false, 1.8},
	{"int8 throughput, bertstream / ONNX Runtime int8", Variant{Subject, "int8"}, Variant{"onnxruntime", "int8"}, Shape{"base", 8, 128}, false, 1.25},
	{"int8 latency, bertstream / ONNX Runtime int8", Variant{Subject, "int8"}, Variant{"onnxruntime", "int8"}, Shape{"base", 1, 128}, true, 1},
}

// targetLine states one target: its ratio in this report, the rounds'
// spread and whether it is met, or false where the report lacks a side.
func (r *Report) targetLine(t Target) (string, bool) {
	x, ok := r.Ratio(t.A, t.B, t.Shape)
	if !ok {
		return "", false
	}
	lo, hi, spread := r.RoundRatios(t.A, t.B, t.Shape)
	rel, met := "≥", x >= t.Bound
	if t.Latency {
		x, lo, hi = 1/x, 1/hi, 1/lo
		rel, met = "≤", x <= t.Bound
	}
	// Three decimals: two would show 1.1998 as 1.20 beside "target ≥ 1.20x: not met".
	line := fmt.Sprintf("%s, %s: %.3fx", t.What, t.Shape, x)
	if spread {
		line += fmt.Sprintf(" (rounds %.2f–%.2fx)", lo, hi)
	}
	verdict := "met"
	if !met {
		verdict = "not met"
	}
	return fmt.Sprintf("%s; target %s %.2fx: %s", line, rel, t.Bound, verdict), true
}

// Markdown is the report as a markdown page: the setup, one row per shape
// with each engine's seq/s and ms per batch and the subject's ratio to
// each other engine, then the notes and errors.
func (r *Report) Markdown() string {
	var b strings.Builder
	b.WriteString("# CPU throughput: bertstream and its peers\n\n")
	fmt.Fprintf(&b, "%s, %s, %d cores; %d threads per engine; each figure is the median of one engine's timed runs, the best of %d round(s), engines interleaved shape by shape. Load average at start / end: %s / %s.\n\n",
		r.Machine.Date, orDash(r.Machine.CPU), r.Machine.Cores, r.Threads, r.Rounds, orDash(r.Machine.LoadAvgStart), orDash(r.Machine.LoadAvgEnd))
	var versions []string
	for _, e := range r.Engines {
		v := r.Version(e)
		switch {
		case v == "" && e == Subject && r.Commit != "":
			v = "at " + r.Commit
		case v == "":
			v = "version unknown"
		}
		versions = append(versions, fmt.Sprintf("%s %s", Label(e), v))
	}
	fmt.Fprintf(&b, "Engines: %s.\n\n", strings.Join(versions, ", "))
	if lo, hi, ok := r.busyRange(); ok {
		fmt.Fprintf(&b, "Others' load in the second before each timing kept (share of all CPU time busy, the engines idle): %.0f%% to %.0f%%.\n\n", 100*lo, 100*hi)
	}

	peers := r.peers()
	// The subject's own f32 beside its other dtypes, where it ran them.
	vsF32 := slices.Contains(r.Engines, Subject) && slices.ContainsFunc(r.variants(), func(v Variant) bool {
		return v.Engine == Subject && v.DType != "f32"
	})
	b.WriteString("| shape | dtype |")
	for _, e := range r.Engines {
		fmt.Fprintf(&b, " %s seq/s | %s ms |", Label(e), Label(e))
	}
	for _, p := range peers {
		fmt.Fprintf(&b, " %s / %s |", Label(Subject), Label(p))
	}
	if vsF32 {
		fmt.Fprintf(&b, " %s / its f32 |", Label(Subject))
	}
	b.WriteString("\n|---|---|")
	b.WriteString(strings.Repeat("--:|", 2*len(r.Engines)+len(peers)+btoi(vsF32)))
	b.WriteString("\n")
	for _, s := range r.Shapes() {
		for _, d := range r.dtypes() {
			if !slices.ContainsFunc(r.Results, func(res Result) bool {
				return res.Shape() == s && res.Variant().DType == d && slices.Contains(r.Engines, res.Engine)
			}) {
				continue
			}
			fmt.Fprintf(&b, "| %s | %s |", s, d)
			for _, e := range r.Engines {
				v := Variant{e, d}
				if res, ok := r.Get(v, s); ok {
					fmt.Fprintf(&b, " %s | %s |", num(res.SeqPerS), num(res.MsPerBatch))
				} else if r.failed(v, s) {
					b.WriteString(" error | error |")
				} else {
					b.WriteString(" — | — |")
				}
			}
			for _, p := range peers {
				b.WriteString(ratioCell(r.Ratio(Variant{Subject, d}, Variant{p, d}, s)))
			}
			if vsF32 {
				if d == "f32" {
					b.WriteString(" — |")
				} else {
					b.WriteString(ratioCell(r.Ratio(Variant{Subject, d}, Variant{Subject, "f32"}, s)))
				}
			}
			b.WriteString("\n")
		}
	}
	if len(peers) > 0 {
		fmt.Fprintf(&b, "\nRatios are %s's sequences per second over the other's, at the same dtype (or over %s's own f32): above 1.00x %s is faster (at a given batch, the same as the other's latency over %s's).\n",
			Label(Subject), Label(Subject), Label(Subject), Label(Subject))
	}
	var targets []string
	for _, t := range Targets {
		if len(peers) == 0 {
			break
		}
		if line, ok := r.targetLine(t); ok {
			targets = append(targets, line)
		}
	}
	if len(targets) > 0 {
		b.WriteString("\nTargets (issue 13; latency ratios are bertstream's milliseconds over the other's; rounds: the ratio of each round's medians, timed side by side):\n\n")
		for _, t := range targets {
			fmt.Fprintf(&b, "- %s\n", t)
		}
	}
	if r.Command != "" {
		fmt.Fprintf(&b, "\nMeasured with `%s`.\n", r.Command)
	}
	if len(r.Notes) > 0 {
		b.WriteString("\nNotes:\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	if errs := r.errors(); len(errs) > 0 {
		b.WriteString("\nErrors:\n\n")
		for _, e := range errs {
			fmt.Fprintf(&b, "- %s\n", e)
		}
	}
	return b.String()
}

// busyRange is the lowest and highest BusyBefore of the results that have one.
func (r *Report) busyRange() (lo, hi float64, ok bool) {
	for _, res := range r.Results {
		if res.BusyBefore == nil {
			continue
		}
		b := *res.BusyBefore
		if !ok || b < lo {
			lo = b
		}
		if !ok || b > hi {
			hi = b
		}
		ok = true
	}
	return lo, hi, ok
}

// peers are the engines the subject is compared with, if it was run at all.
func (r *Report) peers() []string {
	if !slices.Contains(r.Engines, Subject) {
		return nil
	}
	var out []string
	for _, e := range r.Engines {
		if e != Subject {
			out = append(out, e)
		}
	}
	return out
}

func (r *Report) failed(v Variant, s Shape) bool {
	for _, res := range r.Results {
		if res.Variant() == v && res.Shape() == s && res.Err != "" {
			return true
		}
	}
	return false
}

// errors lists each engine's distinct errors once, with the shapes they hit.
func (r *Report) errors() []string {
	var keys []string
	shapes := map[string][]string{}
	for _, res := range r.Results {
		if res.Err == "" {
			continue
		}
		k := Label(res.Engine) + " " + NormDType(res.DType) + ": " + strings.ReplaceAll(res.Err, "\n", " ")
		if _, ok := shapes[k]; !ok {
			keys = append(keys, k)
		}
		shapes[k] = append(shapes[k], res.Shape().String())
	}
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = fmt.Sprintf("%s (%s)", k, strings.Join(shapes[k], ", "))
	}
	return out
}

func ratioCell(x float64, ok bool) string {
	if !ok {
		return " — |"
	}
	return fmt.Sprintf(" %.2fx |", x)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func num(x float64) string {
	switch {
	case x < 10:
		return fmt.Sprintf("%.2f", x)
	case x < 1000:
		return fmt.Sprintf("%.1f", x)
	default:
		return fmt.Sprintf("%.0f", x)
	}
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// Plot draws sequences per second as grouped bars: one panel per preset
// and sequence length (throughput differs by an order of magnitude
// between them, so each gets its own scale), batch sizes along x, one bar
// per engine and dtype.
func (r *Report) Plot(w io.Writer) error {
	type panelKey struct {
		preset string
		seq    int
	}
	var panels []panelKey
	batches := map[panelKey][]int{}
	for _, s := range r.Shapes() {
		k := panelKey{s.Preset, s.Seq}
		if _, ok := batches[k]; !ok {
			panels = append(panels, k)
		}
		if !slices.Contains(batches[k], s.Batch) {
			batches[k] = append(batches[k], s.Batch)
		}
	}
	if len(panels) == 0 {
		return fmt.Errorf("no results to plot")
	}
	row := make([]*plot.Plot, len(panels))
	variants := r.variants()
	barWidth := vg.Points(14)
	for i, k := range panels {
		bs := batches[k]
		slices.Sort(bs)
		p := plot.New()
		p.Title.Text = fmt.Sprintf("bert-%s, T=%d, %d threads", k.preset, k.seq, r.Threads)
		p.Y.Label.Text = "sequences / s"
		p.X.Label.Text = "batch"
		p.Y.Min = 0
		names := make([]string, len(bs))
		for j, b := range bs {
			names[j] = fmt.Sprint(b)
		}
		p.NominalX(names...)
		p.Legend.Top = true
		top := 0.0
		for j, v := range variants {
			vals := make(plotter.Values, len(bs))
			for n, b := range bs {
				if res, ok := r.Get(v, Shape{Preset: k.preset, Batch: b, Seq: k.seq}); ok {
					vals[n] = res.SeqPerS
					top = max(top, res.SeqPerS)
				}
			}
			bar, err := plotter.NewBarChart(vals, barWidth)
			if err != nil {
				return fmt.Errorf("plotting %s: %w", v, err)
			}
			bar.Color = plotutil.Color(j)
			bar.LineStyle.Color = color.Black
			bar.LineStyle.Width = vg.Points(0.5)
			bar.Offset = barWidth * vg.Length(2*j-len(variants)+1) / 2
			p.Add(bar)
			if i == 0 {
				p.Legend.Add(Label(v.Engine)+" "+v.DType, bar)
			}
		}
		// Headroom above the tallest bar for the legend.
		p.Y.Max = top * (1.15 + 0.1*float64(len(variants)))
		row[i] = p
	}
	// Each panel wide enough for its bars, a bar's width apart between batches.
	groups := 0
	for _, k := range panels {
		groups = max(groups, len(batches[k]))
	}
	width := vg.Length(len(panels)) * max(3.6*vg.Inch, vg.Length((len(variants)+1)*groups+2)*barWidth)
	img := vgimg.New(width, 3.4*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: len(panels), PadX: vg.Millimeter * 4, PadTop: vg.Millimeter * 2,
		PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align([][]*plot.Plot{row}, tiles, dc)
	for i, p := range row {
		p.Draw(canvases[0][i])
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(w); err != nil {
		return fmt.Errorf("writing the plot: %w", err)
	}
	return nil
}

// WriteFiles writes dir/name.json, dir/name.md and dir/name.png.
func (r *Report) WriteFiles(dir, name string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the report: %w", err)
	}
	var png bytes.Buffer
	if err := r.Plot(&png); err != nil {
		return err
	}
	for ext, data := range map[string][]byte{".json": append(js, '\n'), ".md": []byte(r.Markdown()), ".png": png.Bytes()} {
		path := filepath.Join(dir, name+ext)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	return nil
}
