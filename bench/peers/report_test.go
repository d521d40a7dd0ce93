package peers

import (
	"bytes"
	"encoding/json"
	"image/png"
	"math"
	"path/filepath"
	"strings"
	"testing"
)

// A report as the driver writes it: three engines, two shapes; PyTorch
// failed on one shape and was not run on the other.
const fixedReport = `{
  "machine": {"cpu": "Test CPU", "cores": 2, "go": "go1.26", "date": "2026-01-02T03:04:05Z",
              "loadavg_start": "0.10 0.20 0.30", "loadavg_end": "1.00 0.50 0.40", "env": {"OPENBLAS_CORETYPE": "Haswell"}},
  "commit": "3fa9a2e-dirty",
  "threads": 2,
  "rounds": 3,
  "engines": ["bertstream", "onnxruntime", "pytorch"],
  "notes": ["PyTorch ran with OPENBLAS_CORETYPE=Haswell unset."],
  "results": [
    {"engine": "bertstream", "version": "dev", "preset": "base", "batch": 8, "seq": 128, "ms_per_batch": 400, "seq_per_s": 20, "round_ms": [410, 400, 420], "busy_before": 0.02},
    {"engine": "onnxruntime", "version": "1.23.2", "preset": "base", "batch": 8, "seq": 128, "ms_per_batch": 500, "seq_per_s": 16, "busy_before": 0.5, "extra": {"graph_ops": {"Attention": 12}}},
    {"engine": "pytorch", "version": "1.13.0", "preset": "base", "batch": 8, "seq": 128, "ms_per_batch": 1600, "seq_per_s": 5},
    {"engine": "bertstream", "version": "dev", "preset": "base", "batch": 1, "seq": 128, "ms_per_batch": 50, "seq_per_s": 20},
    {"engine": "onnxruntime", "version": "1.23.2", "preset": "base", "batch": 1, "seq": 128, "ms_per_batch": 40, "seq_per_s": 25},
    {"engine": "pytorch", "preset": "base", "batch": 1, "seq": 128, "error": "peer exited\nstderr: killed"},
    {"engine": "bertstream", "version": "dev", "preset": "base", "batch": 1, "seq": 32, "ms_per_batch": 12.5, "seq_per_s": 80},
    {"engine": "onnxruntime", "version": "1.23.2", "preset": "base", "batch": 1, "seq": 32, "ms_per_batch": 10, "seq_per_s": 100}
  ]
}`

func readFixed(t *testing.T) *Report {
	t.Helper()
	var r Report
	if err := json.Unmarshal([]byte(fixedReport), &r); err != nil {
		t.Fatal(err)
	}
	return &r
}

func TestRatio(t *testing.T) {
	r := readFixed(t)
	for _, c := range []struct {
		peer  string
		shape Shape
		want  float64
		ok    bool
	}{
		{"onnxruntime", Shape{"base", 8, 128}, 1.25, true},
		{"pytorch", Shape{"base", 8, 128}, 4, true},
		{"onnxruntime", Shape{"base", 1, 128}, 0.8, true},
		{"pytorch", Shape{"base", 1, 128}, 0, false}, // failed
		{"pytorch", Shape{"base", 1, 32}, 0, false},  // not run
	} {
		got, ok := r.Ratio(Subject, c.peer, c.shape)
		if ok != c.ok || math.Abs(got-c.want) > 1e-12 {
			t.Errorf("Ratio(%s, %s) = %v, %v; want %v, %v", c.peer, c.shape, got, ok, c.want, c.ok)
		}
	}
}

func TestMarkdown(t *testing.T) {
	md := readFixed(t).Markdown()
	for _, want := range []string{
		"Test CPU, 2 cores; 2 threads per engine",
		"best of 3 round(s)",
		"Load average at start / end: 0.10 0.20 0.30 / 1.00 0.50 0.40",
		"Engines: bertstream dev, ONNX Runtime 1.23.2, PyTorch 1.13.0.",
		"Others' load in the second before each timing kept (share of all CPU time busy, the engines idle): 2% to 50%.",
		"| shape | bertstream seq/s | bertstream ms | ONNX Runtime seq/s | ONNX Runtime ms | PyTorch seq/s | PyTorch ms | bertstream / ONNX Runtime | bertstream / PyTorch |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
		"| base B=8 T=128 | 20.0 | 400.0 | 16.0 | 500.0 | 5.00 | 1600 | 1.25x | 4.00x |\n",
		"| base B=1 T=128 | 20.0 | 50.0 | 25.0 | 40.0 | error | error | 0.80x | — |\n",
		"| base B=1 T=32 | 80.0 | 12.5 | 100.0 | 10.0 | — | — | 0.80x | — |\n",
		"- PyTorch ran with OPENBLAS_CORETYPE=Haswell unset.\n",
		"- PyTorch: peer exited stderr: killed (base B=1 T=128)\n",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestMarkdownCommitForUnversionedSubject(t *testing.T) {
	r := readFixed(t)
	for i := range r.Results {
		if r.Results[i].Engine == Subject {
			r.Results[i].Version = ""
		}
	}
	if md := r.Markdown(); !strings.Contains(md, "Engines: bertstream at 3fa9a2e-dirty, ONNX Runtime 1.23.2") {
		t.Errorf("markdown does not name the commit of an unversioned bertstream:\n%s", md)
	}
}

func TestMarkdownWithoutSubject(t *testing.T) {
	r := readFixed(t)
	r.Engines = []string{"onnxruntime", "pytorch"}
	md := r.Markdown()
	if strings.Contains(md, " / ") && strings.Contains(md, "bertstream / ") {
		t.Errorf("ratio columns without bertstream in the run:\n%s", md)
	}
	if !strings.Contains(md, "| base B=8 T=128 | 16.0 | 500.0 | 5.00 | 1600 |\n") {
		t.Errorf("row for the two peers missing:\n%s", md)
	}
}

func TestPlot(t *testing.T) {
	var buf bytes.Buffer
	if err := readFixed(t).Plot(&buf); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	// Two panels (T=128 and T=32), side by side.
	if b := img.Bounds(); b.Dx() <= b.Dy() {
		t.Errorf("plot is %v, want two panels side by side", b)
	}
	if err := (&Report{}).Plot(&buf); err == nil {
		t.Error("plotting an empty report succeeded")
	}
}

func TestWriteFilesRoundTrip(t *testing.T) {
	r := readFixed(t)
	dir := t.TempDir()
	if err := r.WriteFiles(dir, "cpu-peers"); err != nil {
		t.Fatal(err)
	}
	back, err := ReadReport(filepath.Join(dir, "cpu-peers.json"))
	if err != nil {
		t.Fatal(err)
	}
	// Extra's raw JSON comes back re-indented; compare compacted.
	got, _ := json.Marshal(back)
	want, _ := json.Marshal(r)
	if !bytes.Equal(got, want) {
		t.Errorf("report changed on the way through JSON:\n%s\n%s", got, want)
	}
}

func TestVersion(t *testing.T) {
	r := readFixed(t)
	for e, want := range map[string]string{"bertstream": "dev", "onnxruntime": "1.23.2", "pytorch": "1.13.0", "other": ""} {
		if got := r.Version(e); got != want {
			t.Errorf("Version(%s) = %q, want %q", e, got, want)
		}
	}
}
