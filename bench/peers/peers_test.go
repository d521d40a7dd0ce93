package peers

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseShapes(t *testing.T) {
	got, err := ParseShapes("base:8x128, nano:1x32")
	if err != nil {
		t.Fatal(err)
	}
	want := []Shape{{"base", 8, 128}, {"nano", 1, 32}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for _, bad := range []string{"base", "8x128", "base:8", "base:0x128", "base:8x-1", ":8x128", "base:8x128,"} {
		if _, err := ParseShapes(bad); err == nil {
			t.Errorf("ParseShapes(%q) accepted", bad)
		}
	}
}

func TestGrid(t *testing.T) {
	got := Grid([]string{"nano", "base"}, []int{1, 8}, []int{32})
	want := []Shape{{"nano", 1, 32}, {"nano", 8, 32}, {"base", 1, 32}, {"base", 8, 32}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestParseResult(t *testing.T) {
	r, err := ParseResult([]byte(`{"engine":"pytorch","version":"1.13","preset":"base","batch":8,"seq":128,"threads":2,
		"ms_per_batch":1700,"ms_p10":1650,"ms_p90":1800,"seq_per_s":4.7,"runs":5,"blas":"/x/libopenblas.so","blas_core":"SkylakeX"}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.Engine != "pytorch" || r.Shape() != (Shape{"base", 8, 128}) || r.MsPerBatch != 1700 || r.SeqPerS != 4.7 || r.Runs != 5 {
		t.Errorf("parsed %+v", r)
	}
	if len(r.Extra) != 2 || string(r.Extra["blas_core"]) != `"SkylakeX"` {
		t.Errorf("extra fields %v, want blas and blas_core", r.Extra)
	}
	for _, bad := range []string{
		`not json`,
		`{"engine":"x","batch":8,"seq":128,"ms_per_batch":10,"seq_per_s":800}`,              // no preset
		`{"engine":"x","preset":"base","batch":8,"seq":128,"seq_per_s":800}`,                // no ms
		`{"engine":"x","preset":"base","batch":0,"seq":128,"ms_per_batch":1,"seq_per_s":1}`, // bad batch
	} {
		if _, err := ParseResult([]byte(bad)); err == nil {
			t.Errorf("ParseResult(%s) accepted", bad)
		}
	}
}

// fakeEngine answers from a table of medians per round and records the
// order it was asked in.
type fakeEngine struct {
	name     string
	dtype    string // "": a float32 engine that names no dtype
	answer   string // the dtype it answers with, if not dtype
	ms       func(s Shape, call int) float64
	checkErr error
	timeErr  error
	failFrom int // calls from this one on fail with timeErr; 0: all
	calls    *[]string
	n        int
}

func (f *fakeEngine) Name() string                    { return f.name }
func (f *fakeEngine) DType() string                   { return f.dtype }
func (f *fakeEngine) Close() error                    { return nil }
func (f *fakeEngine) Check(ctx context.Context) error { return f.checkErr }
func (f *fakeEngine) Time(ctx context.Context, s Shape) (Result, error) {
	*f.calls = append(*f.calls, strings.TrimSpace(f.name+" "+f.dtype)+" "+s.String())
	f.n++
	if f.timeErr != nil && f.n >= f.failFrom {
		return Result{}, f.timeErr
	}
	ms := f.ms(s, f.n)
	d := f.dtype
	if f.answer != "" {
		d = f.answer
	}
	return Result{Engine: f.name, DType: d, Preset: s.Preset, Batch: s.Batch, Seq: s.Seq, MsPerBatch: ms, SeqPerS: float64(s.Batch) / ms * 1000}, nil
}

func TestCompareInterleavesAndKeepsBestRound(t *testing.T) {
	var calls []string
	a := &fakeEngine{name: "a", calls: &calls, ms: func(s Shape, call int) float64 {
		return []float64{30, 10, 20, 40}[(call-1)%4]
	}}
	b := &fakeEngine{name: "b", calls: &calls, ms: func(Shape, int) float64 { return 50 }}
	shapes := []Shape{{"nano", 1, 8}, {"nano", 2, 8}}
	busy := 0.0
	quiet := func(context.Context) float64 { busy += 0.125; return busy }
	res := Compare(context.Background(), []Engine{a, b}, shapes, CompareOptions{Rounds: 2, Quiet: quiet})

	// Engines alternate shape by shape, the first one rotating.
	want := []string{"a nano B=1 T=8", "b nano B=1 T=8", "b nano B=2 T=8", "a nano B=2 T=8",
		"b nano B=1 T=8", "a nano B=1 T=8", "a nano B=2 T=8", "b nano B=2 T=8"}
	if !slices.Equal(calls, want) {
		t.Errorf("call order\n%v\nwant\n%v", calls, want)
	}
	if len(res) != 4 {
		t.Fatalf("%d results, want 4", len(res))
	}
	// a's calls: shape 1 got 30 then 20, shape 2 got 10 then 40.
	for _, r := range res {
		if r.Engine != "a" {
			continue
		}
		wantMs, wantRounds := 20.0, []float64{30, 20}
		if r.Batch == 2 {
			wantMs, wantRounds = 10, []float64{10, 40}
		}
		if r.MsPerBatch != wantMs || !slices.Equal(r.RoundMs, wantRounds) {
			t.Errorf("a %s: %v ms, rounds %v; want %v, %v", r.Shape(), r.MsPerBatch, r.RoundMs, wantMs, wantRounds)
		}
		// The best round's load: a's shape 1 was best in round 2 (the
		// sixth timing), shape 2 in round 1 (the fourth).
		wantBusy := 0.75
		if r.Batch == 2 {
			wantBusy = 0.5
		}
		if r.BusyBefore == nil || *r.BusyBefore != wantBusy {
			t.Errorf("a %s: busy before %v, want %v", r.Shape(), r.BusyBefore, wantBusy)
		}
	}
}

func TestCompareEngineFailures(t *testing.T) {
	var calls []string
	ok := &fakeEngine{name: "ok", calls: &calls, ms: func(Shape, int) float64 { return 5 }}
	missing := &fakeEngine{name: "missing", calls: &calls, checkErr: &FatalError{errors.New("not installed")}}
	broken := &fakeEngine{name: "broken", calls: &calls, timeErr: &FatalError{errors.New("no bench command")}}
	flaky := &fakeEngine{name: "flaky", calls: &calls, timeErr: errors.New("out of memory")}
	shapes := []Shape{{"nano", 1, 8}, {"nano", 2, 8}, {"nano", 4, 8}}
	skip := func(e string, s Shape) bool { return e == "ok" && s.Batch == 4 }
	res := Compare(context.Background(), []Engine{ok, missing, broken, flaky}, shapes, CompareOptions{Rounds: 1, Skip: skip})

	if missing.n != 0 {
		t.Errorf("an engine whose check failed was timed %d times", missing.n)
	}
	if broken.n != 1 {
		t.Errorf("an engine with a fatal error was timed %d times, want 1", broken.n)
	}
	if flaky.n != 3 {
		t.Errorf("an engine with a per-shape error was timed %d times, want 3", flaky.n)
	}
	count := map[string]int{}
	for _, r := range res {
		count[r.Engine]++
		if (r.Engine == "ok") != (r.Err == "") {
			t.Errorf("%s %s: error %q", r.Engine, r.Shape(), r.Err)
		}
	}
	if want := map[string]int{"ok": 2, "missing": 3, "broken": 3, "flaky": 3}; !reflect.DeepEqual(count, want) {
		t.Errorf("results per engine %v, want %v", count, want)
	}
}

func TestCompareKeepsSuccessOverLaterFailure(t *testing.T) {
	var calls []string
	e := &fakeEngine{name: "e", calls: &calls, ms: func(Shape, int) float64 { return 5 },
		timeErr: &FatalError{errors.New("machine gone")}, failFrom: 3}
	shapes := []Shape{{"nano", 1, 8}, {"nano", 2, 8}}
	res := Compare(context.Background(), []Engine{e}, shapes, CompareOptions{Rounds: 2})
	if len(res) != 2 || res[0].Err != "" || res[1].Err != "" || res[0].MsPerBatch != 5 {
		t.Errorf("round 1's results should stand after round 2 failed: %+v", res)
	}
	if e.n != 3 {
		t.Errorf("timed %d times, want 3 (none after the fatal error)", e.n)
	}
}

func TestCPUBusy(t *testing.T) {
	busy, err := CPUBusy(context.Background(), 50*time.Millisecond)
	if err != nil {
		t.Skip(err) // no /proc/stat
	}
	if busy < 0 || busy > 1 {
		t.Errorf("busy %v, want a share in [0, 1]", busy)
	}
}

func TestPyTorchEnv(t *testing.T) {
	env := []string{"PATH=/bin", "OPENBLAS_CORETYPE=Haswell", "OPENBLAS_L2_SIZE=1048576", "OMP_NUM_THREADS=8", "OMP_WAIT_POLICY=ACTIVE", "LD_LIBRARY_PATH=/opt/lib"}
	got := PyTorchEnv(env, 2, "/blas", "SkylakeX")
	want := []string{"PATH=/bin", "OPENBLAS_NUM_THREADS=2", "OMP_NUM_THREADS=2", "OMP_WAIT_POLICY=PASSIVE", "OPENBLAS_CORETYPE=SkylakeX", "LD_LIBRARY_PATH=/blas:/opt/lib"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	want = []string{"PATH=/bin", "OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1", "OMP_WAIT_POLICY=PASSIVE"}
	if got := PyTorchEnv([]string{"PATH=/bin", "OPENBLAS_L2_SIZE=1"}, 1, "", ""); !slices.Equal(got, want) {
		t.Errorf("without a BLAS directory or core: %v, want %v", got, want)
	}
	note := PyTorchEnvNote(env)
	if !strings.Contains(note, "sets OPENBLAS_CORETYPE=Haswell and OPENBLAS_L2_SIZE=1048576") || !strings.Contains(note, "ran without them") {
		t.Errorf("note %q does not name both variables", note)
	}
	if n := PyTorchEnvNote([]string{"PATH=/bin"}); n != "" {
		t.Errorf("note %q without the variables set", n)
	}
}

func TestOpenBLASCore(t *testing.T) {
	for _, c := range []struct {
		flags string
		want  string
	}{
		{"fpu sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_fp16", "SkylakeX"},
		{"fpu sse2 avx avx2 fma avx512f", "Haswell"}, // AVX-512 foundation alone: Knights Landing, not SkylakeX
		{"fpu sse2 avx avx2 fma", "Haswell"},
		{"fpu sse2 avx", ""},
	} {
		if got := OpenBLASCore(strings.Fields(c.flags)); got != c.want {
			t.Errorf("OpenBLASCore(%s) = %q, want %q", c.flags, got, c.want)
		}
	}
}

// TestHelperProcess is not a test: the tests below run the test binary as
// a fake engine, chosen by BENCH_HELPER.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv("BENCH_HELPER")
	if mode == "" {
		t.Skip("only a helper for the engine tests")
	}
	line := func(preset string, b, s int) string {
		return fmt.Sprintf(`{"engine":"fake","version":"0","preset":%q,"batch":%d,"seq":%d,"ms_per_batch":%d,"seq_per_s":%g,"graph_ops":{"Attention":12}}`,
			preset, b, s, b*s, 1000/float64(s))
	}
	switch mode {
	case "nobench":
		fmt.Fprintln(os.Stderr, `bertstream: unknown command "bench"`)
		os.Exit(2)
	case "bench": // one shot, flags after the test binary's own
		args := os.Args[slices.Index(os.Args, "--")+1:]
		var b, s int
		fmt.Sscanf(strings.Join(args, " "), "bench --preset nano --batch %d --seq %d", &b, &s)
		fmt.Println("loading model...")
		fmt.Println(line("nano", b, s))
	case "peer": // long-lived: a shape per stdin line; 13x13 crashes it
		fmt.Fprintln(os.Stderr, "peer ready")
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			var b, s int
			fmt.Sscanf(sc.Text(), "%dx%d", &b, &s)
			if b == 13 {
				fmt.Fprintln(os.Stderr, "peer: out of memory at 13x13")
				os.Exit(3)
			}
			fmt.Println(line(os.Getenv("BENCH_PRESET"), b, s))
		}
	}
	os.Exit(0)
}

func helper(t *testing.T, mode string) {
	t.Setenv("BENCH_HELPER", mode)
}

func TestCommandEngine(t *testing.T) {
	e := &CommandEngine{EngineName: "fake", Path: os.Args[0], Timeout: time.Minute, Args: func(s Shape) []string {
		return []string{"-test.run=^TestHelperProcess$", "--", "bench", "--preset", s.Preset, "--batch", fmt.Sprint(s.Batch), "--seq", fmt.Sprint(s.Seq)}
	}}
	helper(t, "bench")
	r, err := e.Time(context.Background(), Shape{"nano", 4, 16})
	if err != nil {
		t.Fatal(err)
	}
	if r.Shape() != (Shape{"nano", 4, 16}) || r.MsPerBatch != 64 {
		t.Errorf("got %+v", r)
	}

	helper(t, "nobench")
	_, err = e.Time(context.Background(), Shape{"nano", 4, 16})
	if !errors.As(err, new(*FatalError)) || !strings.Contains(err.Error(), "has no bench command yet") {
		t.Errorf("a binary without the bench command: %v, want a fatal error that says so", err)
	}

	missing := &CommandEngine{EngineName: "fake", Path: filepath.Join(t.TempDir(), "bertstream")}
	if err := missing.Check(context.Background()); !errors.As(err, new(*FatalError)) || !strings.Contains(err.Error(), "make build") {
		t.Errorf("a missing binary: %v", err)
	}
}

func TestPeerEngine(t *testing.T) {
	helper(t, "peer")
	starts := 0
	p := &PeerEngine{
		EngineName: "fake",
		Timeout:    time.Minute,
		Prepare:    func(ctx context.Context, preset string) error { starts++; return nil },
		Command: func(preset string) *exec.Cmd {
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
			cmd.Env = append(os.Environ(), "BENCH_PRESET="+preset)
			return cmd
		},
	}
	defer p.Close()
	ctx := context.Background()
	for _, s := range []Shape{{"nano", 1, 8}, {"nano", 2, 16}, {"mini", 1, 8}} {
		r, err := timeShape(ctx, p, s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if r.Shape() != s || r.Engine != "fake" || string(r.Extra["graph_ops"]) != `{"Attention":12}` {
			t.Errorf("%s: got %+v", s, r)
		}
	}
	if starts != 2 {
		t.Errorf("peer started %d times for two presets, want 2", starts)
	}

	_, err := p.Time(ctx, Shape{"mini", 13, 13})
	if err == nil || !strings.Contains(err.Error(), "out of memory at 13x13") {
		t.Errorf("a crashed peer: %v, want its stderr in the error", err)
	}
	if _, err := p.Time(ctx, Shape{"mini", 1, 8}); err != nil {
		t.Errorf("after a crash the peer should restart: %v", err)
	}
}

// TestPyTorchPeer runs the real PyTorch peer on the smallest preset, where
// Debian's torch is installed.
func TestPyTorchPeer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Python and torch")
	}
	c := Config{Dir: ".", CacheDir: t.TempDir(), Python: "/usr/bin/python3", Threads: 1, Warmup: 0, Runs: 1, MaxSeconds: 1}
	p := NewPyTorchPeer(c)
	if err := p.Check(context.Background()); err != nil {
		t.Skip(err)
	}
	defer p.Close()
	r, err := timeShape(context.Background(), p, Shape{"nano", 1, 8})
	if err != nil {
		t.Fatal(err)
	}
	var blas string
	var checkErr float64
	if err := json.Unmarshal(r.Extra["blas"], &blas); err != nil || r.Runs != 1 || r.Version == "" {
		t.Errorf("got %+v", r)
	}
	// The peer checked its outputs against export_onnx.py's reference.
	if err := json.Unmarshal(r.Extra["check_max_abs_err"], &checkErr); err != nil || checkErr > 1e-3 {
		t.Errorf("reference check: %s", r.Extra["check_max_abs_err"])
	}
	t.Logf("PyTorch %s, nano B=1 T=8: %.1f ms, BLAS %s, max abs error %.2g", r.Version, r.MsPerBatch, blas, checkErr)
}

func TestParseResultDType(t *testing.T) {
	for in, want := range map[string]string{`"dtype":"INT8",`: "int8", `"dtype":"bf16",`: "bf16", ``: "f32"} {
		r, err := ParseResult([]byte(`{"engine":"bertstream",` + in + `"preset":"base","batch":8,"seq":128,"ms_per_batch":100,"seq_per_s":80}`))
		if err != nil {
			t.Fatal(err)
		}
		if r.DType != want || r.Variant() != (Variant{"bertstream", want}) || r.Extra != nil {
			t.Errorf("dtype %q: got %+v, want %s", in, r, want)
		}
	}
}

// TestCompareDTypes: one engine at two dtypes is two variants, each with
// its results; an engine that answers in another dtype than asked fails.
func TestCompareDTypes(t *testing.T) {
	var calls []string
	f32 := &fakeEngine{name: "e", calls: &calls, ms: func(Shape, int) float64 { return 20 }}
	int8 := &fakeEngine{name: "e", dtype: "int8", calls: &calls, ms: func(Shape, int) float64 { return 10 }}
	liar := &fakeEngine{name: "l", dtype: "bf16", answer: "F32", calls: &calls, ms: func(Shape, int) float64 { return 5 }}
	shapes := []Shape{{"nano", 1, 8}}
	res := Compare(context.Background(), []Engine{f32, int8, liar}, shapes, CompareOptions{Rounds: 2})
	if want := []string{"e nano B=1 T=8", "e int8 nano B=1 T=8", "l bf16 nano B=1 T=8", "e int8 nano B=1 T=8", "l bf16 nano B=1 T=8", "e nano B=1 T=8"}; !slices.Equal(calls, want) {
		t.Errorf("calls %v, want %v", calls, want)
	}
	if len(res) != 3 {
		t.Fatalf("%d results, want 3: %+v", len(res), res)
	}
	for i, want := range []struct {
		v  Variant
		ms float64
	}{{Variant{"e", "f32"}, 20}, {Variant{"e", "int8"}, 10}, {Variant{"l", "bf16"}, 0}} {
		if r := res[i]; r.Variant() != want.v || r.MsPerBatch != want.ms || len(r.RoundMs) != 2*btoi(want.ms > 0) {
			t.Errorf("result %d: %+v, want %s at %v ms over 2 rounds", i, r, want.v, want.ms)
		}
	}
	if !strings.Contains(res[2].Err, "asked for bf16, the engine answered in f32") {
		t.Errorf("an engine answering in another dtype: %q", res[2].Err)
	}
}

func TestORTPeerDTypes(t *testing.T) {
	c := Config{Dir: "peers", Python: "python3", Node: "node", Opset: 12, Threads: 2, Warmup: 1, Runs: 3, MaxSeconds: 5}
	if _, err := NewORTPeer(c, "bf16"); err == nil || !strings.Contains(err.Error(), `no dtype "bf16"`) {
		t.Errorf("a bf16 ONNX Runtime peer: %v", err)
	}
	f32, err := NewORTPeer(c, "")
	if err != nil {
		t.Fatal(err)
	}
	int8, err := NewORTPeer(c, "INT8")
	if err != nil {
		t.Fatal(err)
	}
	if f32.DType() != "f32" || int8.DType() != "int8" {
		t.Errorf("dtypes %s, %s", f32.DType(), int8.DType())
	}
	args := strings.Join(f32.Command("base").Args, " ")
	if !strings.Contains(args, "--model peers/.cache/bert-base-opset12.onnx ") || strings.Contains(args, "--dtype") {
		t.Errorf("f32 peer: %s", args)
	}
	args = strings.Join(int8.Command("base").Args, " ")
	for _, want := range []string{"--model peers/.cache/bert-base-opset12-int8.onnx ", "--ref peers/.cache/bert-base.ref.json ",
		fmt.Sprintf("--dtype int8 --max-err %v --min-cosine %v", ORTInt8Check.MaxErr, ORTInt8Check.MinCosine)} {
		if !strings.Contains(args, want) {
			t.Errorf("int8 peer %s lacks %q", args, want)
		}
	}
}

// TestQuantizeONNX runs quantize_onnx.py on a two-layer graph made here and
// checks its output by the ONNX operators' definitions, in numpy: the
// weights per output column, and each style's graph computing what the
// float graph does within the quantization's error.
func TestQuantizeONNX(t *testing.T) {
	if out, err := exec.Command("/usr/bin/python3", "-c", "import onnx, numpy").CombinedOutput(); err != nil {
		t.Skipf("needs Python's onnx and numpy (apt-get install python3-onnx): %v: %s", err, out)
	}
	cmd := exec.Command("/usr/bin/python3", "testdata/quantize_check.py", t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	t.Logf("%s", out)
}

// TestORTInt8Peer quantizes the smallest preset and runs it on ONNX Runtime,
// which checks it against PyTorch's float32 outputs first.
func TestORTInt8Peer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Python, torch and Node")
	}
	c := Config{Dir: ".", CacheDir: t.TempDir(), Python: "/usr/bin/python3", Node: "node", Opset: 12, Threads: 1, Warmup: 0, Runs: 1, MaxSeconds: 1}
	p, err := NewORTPeer(c, "int8")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Check(context.Background()); err != nil {
		t.Skip(err)
	}
	defer p.Close()
	r, err := timeShape(context.Background(), p, Shape{"nano", 1, 8})
	if err != nil {
		t.Fatal(err)
	}
	var ops map[string]int
	var maxErr, cos float64
	if err := json.Unmarshal(r.Extra["graph_ops"], &ops); err != nil || ops["com.microsoft.DynamicQuantizeMatMul"] == 0 || ops["com.microsoft.MatMulIntegerToFloat"] == 0 {
		t.Errorf("ONNX Runtime fused no DynamicQuantizeMatMul or MatMulIntegerToFloat: %s", r.Extra["graph_ops"])
	}
	if json.Unmarshal(r.Extra["check_max_abs_err"], &maxErr) != nil || json.Unmarshal(r.Extra["check_cosine"], &cos) != nil ||
		maxErr > ORTInt8Check.MaxErr || cos < ORTInt8Check.MinCosine || maxErr == 0 {
		t.Errorf("reference check: max error %s, cosine %s", r.Extra["check_max_abs_err"], r.Extra["check_cosine"])
	}
	t.Logf("ONNX Runtime %s int8, nano B=1 T=8: %.1f ms, max abs error %.3g, cosine %.5f", r.Version, r.MsPerBatch, maxErr, cos)
}
