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
	Commit  string `json:"commit,omitempty"`
	Threads int    `json:"threads"`
	Rounds  int    `json:"rounds"`
	// Engines are the engines compared, in the table's column order.
	Engines []string `json:"engines"`
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

// Get is an engine's successful result for a shape.
func (r *Report) Get(engine string, s Shape) (Result, bool) {
	for _, res := range r.Results {
		if res.Engine == engine && res.Shape() == s && res.Err == "" {
			return res, true
		}
	}
	return Result{}, false
}

// Ratio is engine a's throughput over engine b's at shape s (above 1: a is
// faster). At a fixed batch this is also b's latency over a's.
func (r *Report) Ratio(a, b string, s Shape) (float64, bool) {
	ra, ok1 := r.Get(a, s)
	rb, ok2 := r.Get(b, s)
	if !ok1 || !ok2 {
		return 0, false
	}
	return ra.SeqPerS / rb.SeqPerS, true
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
	b.WriteString("| shape |")
	for _, e := range r.Engines {
		fmt.Fprintf(&b, " %s seq/s | %s ms |", Label(e), Label(e))
	}
	for _, p := range peers {
		fmt.Fprintf(&b, " %s / %s |", Label(Subject), Label(p))
	}
	b.WriteString("\n|---|")
	b.WriteString(strings.Repeat("--:|", 2*len(r.Engines)+len(peers)))
	b.WriteString("\n")
	for _, s := range r.Shapes() {
		fmt.Fprintf(&b, "| %s |", s)
		for _, e := range r.Engines {
			if res, ok := r.Get(e, s); ok {
				fmt.Fprintf(&b, " %s | %s |", num(res.SeqPerS), num(res.MsPerBatch))
			} else if r.failed(e, s) {
				b.WriteString(" error | error |")
			} else {
				b.WriteString(" — | — |")
			}
		}
		for _, p := range peers {
			if x, ok := r.Ratio(Subject, p, s); ok {
				fmt.Fprintf(&b, " %.2fx |", x)
			} else {
				b.WriteString(" — |")
			}
		}
		b.WriteString("\n")
	}
	if len(peers) > 0 {
		fmt.Fprintf(&b, "\nRatios are %s's sequences per second over the peer's: above 1.00x %s is faster (at a given batch, the same as the peer's latency over %s's).\n",
			Label(Subject), Label(Subject), Label(Subject))
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

func (r *Report) failed(engine string, s Shape) bool {
	for _, res := range r.Results {
		if res.Engine == engine && res.Shape() == s && res.Err != "" {
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
		k := Label(res.Engine) + ": " + strings.ReplaceAll(res.Err, "\n", " ")
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
// per engine.
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
		for j, e := range r.Engines {
			vals := make(plotter.Values, len(bs))
			for n, b := range bs {
				if res, ok := r.Get(e, Shape{Preset: k.preset, Batch: b, Seq: k.seq}); ok {
					vals[n] = res.SeqPerS
					top = max(top, res.SeqPerS)
				}
			}
			bar, err := plotter.NewBarChart(vals, barWidth)
			if err != nil {
				return fmt.Errorf("plotting %s: %w", e, err)
			}
			bar.Color = plotutil.Color(j)
			bar.LineStyle.Color = color.Black
			bar.LineStyle.Width = vg.Points(0.5)
			bar.Offset = barWidth * vg.Length(2*j-len(r.Engines)+1) / 2
			p.Add(bar)
			if i == 0 {
				p.Legend.Add(Label(e), bar)
			}
		}
		// Headroom above the tallest bar for the legend.
		p.Y.Max = top * (1.15 + 0.1*float64(len(r.Engines)))
		row[i] = p
	}
	width := vg.Length(len(panels)) * 3.6 * vg.Inch
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
