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

// A report as the driver writes it: three engines, three shapes, three
// dtypes; PyTorch failed on one shape and was not run on the other; the
// float32 results name no dtype, as before dtypes.
const fixedReport = `{
  "machine": {"cpu": "Test CPU", "cores": 2, "go": "go1.26", "date": "2026-01-02T03:04:05Z",
              "loadavg_start": "0.10 0.20 0.30", "loadavg_end": "1.00 0.50 0.40", "env": {"OPENBLAS_CORETYPE": "Haswell"}},
  "commit": "3fa9a2e-dirty",
  "command": "go run ./bench/cmd/peers -rounds 3",
  "threads": 2,
  "rounds": 3,
  "engines": ["bertstream", "onnxruntime", "pytorch"],
  "dtypes": ["f32", "bf16", "int8"],
  "notes": ["PyTorch ran with OPENBLAS_CORETYPE=Haswell unset."],
  "results": [
    {"engine": "bertstream", "version": "dev", "preset": "base", "batch": 8, "seq": 128, "ms_per_batch": 400, "seq_per_s": 20, "round_ms": [410, 400, 420], "busy_before": 0.02},
    {"engine": "onnxruntime", "version": "1.23.2", "preset": "base", "batch": 8, "seq": 128, "ms_per_batch": 500, "seq_per_s": 16, "round_ms": [492.0, 500, 630], "busy_before": 0.5, "extra": {"graph_ops": {"Attention": 12}}},
    {"engine": "bertstream", "dtype": "bf16", "version": "dev", "preset": "base", "batch": 8, "seq": 128, "ms_per_batch": 200, "seq_per_s": 40},
    {"engine": "bertstream", "dtype": "int8", "version": "dev", "preset": "base", "batch": 8, "seq": 128, "ms_per_batch": 160, "seq_per_s": 50, "round_ms": [160, 170, 200]},
    {"engine": "onnxruntime", "dtype": "int8", "version": "1.23.2", "preset": "base", "batch": 8, "seq": 128, "ms_per_batch": 250, "seq_per_s": 32, "round_ms": [250, 255, 200]},
    {"engine": "pytorch", "version": "1.13.0", "preset": "base", "batch": 8, "seq": 128, "ms_per_batch": 1600, "seq_per_s": 5},
    {"engine": "bertstream", "version": "dev", "preset": "base", "batch": 1, "seq": 128, "ms_per_batch": 50, "seq_per_s": 20},
    {"engine": "onnxruntime", "version": "1.23.2", "preset": "base", "batch": 1, "seq": 128, "ms_per_batch": 40, "seq_per_s": 25},
    {"engine": "bertstream", "dtype": "int8", "version": "dev", "preset": "base", "batch": 1, "seq": 128, "ms_per_batch": 30, "seq_per_s": 33.333333333333336},
    {"engine": "onnxruntime", "dtype": "int8", "preset": "base", "batch": 1, "seq": 128, "error": "outputs differ"},
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
	bs := func(d string) Variant { return Variant{Subject, d} }
	for _, c := range []struct {
		a, b  Variant
		shape Shape
		want  float64
		ok    bool
	}{
		{bs("f32"), Variant{"onnxruntime", "f32"}, Shape{"base", 8, 128}, 1.25, true},
		{bs("f32"), Variant{"pytorch", "f32"}, Shape{"base", 8, 128}, 4, true},
		{bs("f32"), Variant{"onnxruntime", "f32"}, Shape{"base", 1, 128}, 0.8, true},
		{bs("int8"), Variant{"onnxruntime", "int8"}, Shape{"base", 8, 128}, 50.0 / 32, true},
		{bs("bf16"), bs("f32"), Shape{"base", 8, 128}, 2, true},
		{bs("int8"), Variant{"onnxruntime", "int8"}, Shape{"base", 1, 128}, 0, false}, // failed
		{bs("f32"), Variant{"pytorch", "f32"}, Shape{"base", 1, 128}, 0, false},       // failed
		{bs("f32"), Variant{"pytorch", "f32"}, Shape{"base", 1, 32}, 0, false},        // not run
		{bs("bf16"), Variant{"onnxruntime", "bf16"}, Shape{"base", 8, 128}, 0, false}, // no such variant
	} {
		got, ok := r.Ratio(c.a, c.b, c.shape)
		if ok != c.ok || math.Abs(got-c.want) > 1e-12 {
			t.Errorf("Ratio(%s, %s, %s) = %v, %v; want %v, %v", c.a, c.b, c.shape, got, ok, c.want, c.ok)
		}
	}
}

func TestRoundRatios(t *testing.T) {
	r := readFixed(t)
	s := Shape{"base", 8, 128}
	// Round by round ONNX Runtime's ms over bertstream's: 492/410, 500/400, 630/420.
	lo, hi, ok := r.RoundRatios(Variant{Subject, "f32"}, Variant{"onnxruntime", "f32"}, s)
	if !ok || math.Abs(lo-1.2) > 1e-12 || math.Abs(hi-1.5) > 1e-12 {
		t.Errorf("RoundRatios = %v, %v, %v; want 1.2, 1.5, true", lo, hi, ok)
	}
	// bf16 has no rounds recorded.
	if _, _, ok := r.RoundRatios(Variant{Subject, "bf16"}, Variant{Subject, "f32"}, s); ok {
		t.Error("RoundRatios without rounds on one side")
	}
	// Two rounds each, of three: which rounds they were is lost.
	for i := range r.Results {
		if len(r.Results[i].RoundMs) == 3 {
			r.Results[i].RoundMs = r.Results[i].RoundMs[1:]
		}
	}
	if _, _, ok := r.RoundRatios(Variant{Subject, "f32"}, Variant{"onnxruntime", "f32"}, s); ok {
		t.Error("RoundRatios paired rounds of variants that missed one")
	}
}

func TestTargets(t *testing.T) {
	md := readFixed(t).Markdown()
	for _, want := range []string{
		"- f32 throughput, bertstream / ONNX Runtime, base B=8 T=128: 1.250x (rounds 1.20–1.50x); target ≥ 1.20x: met\n",
		"- f32 latency, bertstream / ONNX Runtime, base B=1 T=128: 1.250x; target ≤ 0.85x: not met\n",
		"- bf16 throughput, bertstream bf16 / f32, base B=8 T=128: 2.000x; target ≥ 1.80x: met\n",
		// Round by round 250/160, 255/170, 200/200.
		"- int8 throughput, bertstream / ONNX Runtime int8, base B=8 T=128: 1.562x (rounds 1.00–1.56x); target ≥ 1.25x: met\n",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	// ONNX Runtime int8 failed at B=1: no int8 latency line.
	if strings.Contains(md, "int8 latency") {
		t.Errorf("a target stated without one side's result:\n%s", md)
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
		"| shape | dtype | bertstream seq/s | bertstream ms | ONNX Runtime seq/s | ONNX Runtime ms | PyTorch seq/s | PyTorch ms | bertstream / ONNX Runtime | bertstream / PyTorch | bertstream / its f32 |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
		"| base B=8 T=128 | f32 | 20.0 | 400.0 | 16.0 | 500.0 | 5.00 | 1600 | 1.25x | 4.00x | — |\n" +
			"| base B=8 T=128 | bf16 | 40.0 | 200.0 | — | — | — | — | — | — | 2.00x |\n" +
			"| base B=8 T=128 | int8 | 50.0 | 160.0 | 32.0 | 250.0 | — | — | 1.56x | — | 2.50x |\n" +
			"| base B=1 T=128 | f32 | 20.0 | 50.0 | 25.0 | 40.0 | error | error | 0.80x | — | — |\n" +
			"| base B=1 T=128 | int8 | 33.3 | 30.0 | error | error | — | — | — | — | 1.67x |\n" +
			"| base B=1 T=32 | f32 | 80.0 | 12.5 | 100.0 | 10.0 | — | — | 0.80x | — | — |\n",
		"Measured with `go run ./bench/cmd/peers -rounds 3`.",
		"- PyTorch ran with OPENBLAS_CORETYPE=Haswell unset.\n",
		"- PyTorch f32: peer exited stderr: killed (base B=1 T=128)\n",
		"- ONNX Runtime int8: outputs differ (base B=1 T=128)\n",
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
	if strings.Contains(md, "bertstream / ") || strings.Contains(md, "Targets") {
		t.Errorf("ratio columns or targets without bertstream in the run:\n%s", md)
	}
	if !strings.Contains(md, "| base B=8 T=128 | f32 | 16.0 | 500.0 | 5.00 | 1600 |\n") {
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

// TestOldReport reads a report from before dtypes: every result is f32.
func TestOldReport(t *testing.T) {
	r := readFixed(t)
	r.DTypes = nil
	var kept []Result
	for _, res := range r.Results {
		if res.DType == "" {
			kept = append(kept, res)
		}
	}
	r.Results = kept
	md := r.Markdown()
	if !strings.Contains(md, "| base B=8 T=128 | f32 | 20.0 | 400.0 | 16.0 | 500.0 | 5.00 | 1600 | 1.25x | 4.00x |\n") || strings.Contains(md, "its f32") {
		t.Errorf("an f32-only report:\n%s", md)
	}
	if got := r.variants(); len(got) != 3 || got[1] != (Variant{"onnxruntime", "f32"}) {
		t.Errorf("variants %v", got)
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
