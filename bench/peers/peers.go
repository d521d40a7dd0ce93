// Package peers compares bertstream's CPU throughput with other engines':
// it times `bertstream bench --json` and the ONNX Runtime and PyTorch peer
// scripts of this directory on the same shapes, threads and machine, each
// engine at each compute dtype it has (f32, bf16, int8), engines
// interleaved shape by shape (Compare), and writes the comparison as JSON,
// a markdown table and a bar plot (Report). bench/cmd/peers is its command
// (`make bench-peers`).
//
// It is apart from package bench so that the bertstream binary, which
// needs bench, links no plotting.
package peers

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Shape is one model size and input size of the comparison.
type Shape struct {
	Preset string `json:"preset"`
	Batch  int    `json:"batch"`
	Seq    int    `json:"seq"`
}

func (s Shape) String() string { return fmt.Sprintf("%s B=%d T=%d", s.Preset, s.Batch, s.Seq) }

// Grid is every preset x batch x seq, presets outermost so that a peer that
// keeps one model per preset loads each model once.
func Grid(presets []string, batches, seqs []int) []Shape {
	var out []Shape
	for _, p := range presets {
		for _, b := range batches {
			for _, t := range seqs {
				out = append(out, Shape{Preset: p, Batch: b, Seq: t})
			}
		}
	}
	return out
}

// ParseShapes reads a comma-separated list of PRESET:BxT, e.g. "base:8x128,base:1x128".
func ParseShapes(list string) ([]Shape, error) {
	var out []Shape
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		preset, bt, ok := strings.Cut(item, ":")
		b, t, ok2 := strings.Cut(bt, "x")
		if !ok || !ok2 || preset == "" {
			return nil, fmt.Errorf("shape %q: want PRESET:BxT, e.g. base:8x128", item)
		}
		batch, err1 := strconv.Atoi(b)
		seq, err2 := strconv.Atoi(t)
		if err1 != nil || err2 != nil || batch < 1 || seq < 1 {
			return nil, fmt.Errorf("shape %q: batch and sequence length must be positive integers", item)
		}
		out = append(out, Shape{Preset: preset, Batch: batch, Seq: seq})
	}
	return out, nil
}

// Result is one engine's timing of one shape, as the engines print it
// (`bertstream bench --json`, ort_peer.mjs, pytorch_peer.py), plus what the
// driver adds: the median of every round and any error.
type Result struct {
	Engine string `json:"engine"`
	// DType is the compute dtype, as `bertstream bench --dtype` names them
	// (f32, bf16, int8); NormDType gives results without one f32.
	DType      string  `json:"dtype,omitempty"`
	Version    string  `json:"version,omitempty"`
	Preset     string  `json:"preset"`
	Batch      int     `json:"batch"`
	Seq        int     `json:"seq"`
	Threads    int     `json:"threads,omitempty"`
	MsPerBatch float64 `json:"ms_per_batch"`
	MsP10      float64 `json:"ms_p10,omitempty"`
	MsP90      float64 `json:"ms_p90,omitempty"`
	SeqPerS    float64 `json:"seq_per_s"`
	Runs       int     `json:"runs,omitempty"`
	// RoundMs is the median of each round; the result is the round whose
	// median is lowest, since load from others on a shared machine only
	// ever slows a run down.
	RoundMs []float64 `json:"round_ms,omitempty"`
	// BusyBefore is the share of the machine's CPU time used in the second
	// before the timing, when the engines were idle: others' load.
	BusyBefore *float64 `json:"busy_before,omitempty"`
	// Extra keeps the other fields the engine printed: the BLAS library
	// PyTorch loaded, the operators ONNX Runtime fused, and so on.
	Extra map[string]json.RawMessage `json:"extra,omitempty"`
	Err   string                     `json:"error,omitempty"`
}

// Shape is the shape the result is for.
func (r Result) Shape() Shape { return Shape{Preset: r.Preset, Batch: r.Batch, Seq: r.Seq} }

// Variant is the engine and dtype the result is for.
func (r Result) Variant() Variant { return Variant{Engine: r.Engine, DType: NormDType(r.DType)} }

// Variant is one engine at one compute dtype: a row of the comparison per shape.
type Variant struct {
	Engine string `json:"engine"`
	DType  string `json:"dtype"`
}

func (v Variant) String() string { return v.Engine + " " + v.DType }

// NormDType is the name of a dtype as `bertstream bench --dtype` takes it:
// lower case (bench prints INT8, BF16, F32), and f32 for none (float32
// engines, and reports from before dtypes).
func NormDType(d string) string {
	if d == "" {
		return "f32"
	}
	return strings.ToLower(d)
}

// resultFields are the JSON names of Result's own fields; the rest of an
// engine's output goes to Extra.
var resultFields = []string{"engine", "dtype", "version", "preset", "batch", "seq", "threads", "ms_per_batch",
	"ms_p10", "ms_p90", "seq_per_s", "runs", "round_ms", "busy_before", "extra", "error"}

// ParseResult reads one JSON object printed by an engine.
func ParseResult(line []byte) (Result, error) {
	var r Result
	if err := json.Unmarshal(line, &r); err != nil {
		return Result{}, fmt.Errorf("engine output %q: %w", clip(string(line), 200), err)
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(line, &all); err != nil {
		return Result{}, fmt.Errorf("engine output %q: %w", clip(string(line), 200), err)
	}
	for _, k := range resultFields {
		delete(all, k)
	}
	if len(all) > 0 {
		r.Extra = all
	}
	r.DType = NormDType(r.DType)
	if r.Preset == "" || r.Batch < 1 || r.Seq < 1 || !(r.MsPerBatch > 0) || !(r.SeqPerS > 0) {
		return Result{}, fmt.Errorf("engine output %q lacks preset, batch, seq, ms_per_batch or seq_per_s", clip(string(line), 200))
	}
	return r, nil
}

// Engine times shapes on one inference engine at one compute dtype.
type Engine interface {
	Name() string
	// DType is the compute dtype (NormDType's names): the same engine at
	// another dtype is another Engine.
	DType() string
	// Check says why the engine cannot run here (a missing binary, package
	// or model), before any time is spent on the others.
	Check(ctx context.Context) error
	Time(ctx context.Context, s Shape) (Result, error)
	Close() error
}

// FatalError is an engine failure that later shapes would repeat; the
// comparison stops asking that engine.
type FatalError struct{ Err error }

func (e *FatalError) Error() string { return e.Err.Error() }
func (e *FatalError) Unwrap() error { return e.Err }

// CompareOptions are Compare's settings beyond engines and shapes.
type CompareOptions struct {
	// Rounds are sweeps over all shapes; each result is the best round's.
	Rounds int
	// Skip, if not nil, leaves some shapes out for some engines (a slow
	// peer's largest shapes).
	Skip func(engine string, s Shape) bool
	// Quiet, if not nil, runs before each timing and returns how busy the
	// machine was (0..1) just before it, which goes into the result: the
	// engines are idle then, so it is others' load.
	Quiet func(ctx context.Context) float64
	Log   io.Writer
}

// Compare times every shape on every engine. Engines take turns shape by
// shape, in an order that rotates with the shape and the round, so that
// load from others on a shared machine hits them alike. It returns one
// result per engine and shape: the best round, or the error.
func Compare(ctx context.Context, engines []Engine, shapes []Shape, o CompareOptions) []Result {
	log := o.Log
	if log == nil {
		log = io.Discard
	}
	fatal := map[Variant]error{}
	for _, e := range engines {
		if err := e.Check(ctx); err != nil {
			fatal[variant(e)] = err
			fmt.Fprintf(log, "%s: %v\n", variant(e), err)
		}
	}
	best := map[resultKey]*Result{}
	// fail records err for the shape unless an earlier round succeeded.
	fail := func(k resultKey, err error) {
		if best[k] == nil || best[k].Err != "" {
			best[k] = &Result{Engine: k.v.Engine, DType: k.v.DType, Preset: k.shape.Preset, Batch: k.shape.Batch, Seq: k.shape.Seq, Err: err.Error()}
		}
	}
	for round := 0; round < max(o.Rounds, 1) && ctx.Err() == nil; round++ {
		for i, s := range shapes {
			for j := range engines {
				e := engines[(i+j+round)%len(engines)]
				k := resultKey{variant(e), s}
				if (o.Skip != nil && o.Skip(e.Name(), s)) || ctx.Err() != nil {
					continue
				}
				if err := fatal[k.v]; err != nil {
					fail(k, err)
					continue
				}
				var busy *float64
				if o.Quiet != nil {
					b := o.Quiet(ctx)
					busy = &b
				}
				r, err := timeShape(ctx, e, s)
				if err != nil {
					fmt.Fprintf(log, "%s %s: %v\n", k.v, s, err)
					if errors.As(err, new(*FatalError)) {
						fatal[k.v] = err
					}
					fail(k, err)
					continue
				}
				r.BusyBefore = busy
				fmt.Fprintf(log, "round %d  %-16s %-18s %9.1f ms  %8.2f seq/s\n", round+1, k.v, s, r.MsPerBatch, r.SeqPerS)
				prev := best[k]
				if prev == nil || prev.Err != "" {
					r.RoundMs = []float64{r.MsPerBatch}
					best[k] = &r
					continue
				}
				all := append(prev.RoundMs, r.MsPerBatch)
				if r.MsPerBatch < prev.MsPerBatch {
					r.RoundMs = all
					best[k] = &r
				} else {
					prev.RoundMs = all
				}
			}
		}
	}
	var out []Result
	for _, s := range shapes {
		for _, e := range engines {
			if r := best[resultKey{variant(e), s}]; r != nil {
				out = append(out, *r)
			}
		}
	}
	return out
}

type resultKey struct {
	v     Variant
	shape Shape
}

func variant(e Engine) Variant { return Variant{Engine: e.Name(), DType: NormDType(e.DType())} }

// CPUBusy is the share of all CPUs' time spent busy (not idle or waiting
// for I/O) over d, from /proc/stat.
func CPUBusy(ctx context.Context, d time.Duration) (float64, error) {
	read := func() (busy, total float64, err error) {
		b, err := os.ReadFile("/proc/stat")
		if err != nil {
			return 0, 0, err
		}
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		if len(f) < 6 || f[0] != "cpu" {
			return 0, 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
		}
		for i, v := range f[1:] {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("/proc/stat: %w", err)
			}
			total += n
			if i != 3 && i != 4 { // idle, iowait
				busy += n
			}
		}
		return busy, total, nil
	}
	b0, t0, err := read()
	if err != nil {
		return 0, err
	}
	select {
	case <-time.After(d):
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	b1, t1, err := read()
	if err != nil {
		return 0, err
	}
	if t1 <= t0 {
		return 0, nil
	}
	return (b1 - b0) / (t1 - t0), nil
}

// WaitQuiet returns a CompareOptions.Quiet that waits, up to maxWait, for
// a second in which the machine is at most threshold busy, and returns the
// last second's share; log hears about waits.
func WaitQuiet(threshold float64, maxWait time.Duration, log io.Writer) func(ctx context.Context) float64 {
	return func(ctx context.Context) float64 {
		deadline := time.Now().Add(maxWait)
		for waited := false; ; waited = true {
			busy, err := CPUBusy(ctx, time.Second)
			if err != nil || busy <= threshold || time.Now().After(deadline) {
				return busy
			}
			if !waited {
				fmt.Fprintf(log, "machine %.0f%% busy, waiting up to %v for %.0f%% or less\n", 100*busy, maxWait, 100*threshold)
			}
			select {
			case <-time.After(2 * time.Second):
			case <-ctx.Done():
				return busy
			}
		}
	}
}

// timeShape times one shape and checks that the engine answered for it.
func timeShape(ctx context.Context, e Engine, s Shape) (Result, error) {
	r, err := e.Time(ctx, s)
	if err != nil {
		return Result{}, err
	}
	if r.Shape() != s {
		return Result{}, fmt.Errorf("asked for %s, the engine answered for %s", s, r.Shape())
	}
	if r.Engine != "" && r.Engine != e.Name() {
		return Result{}, fmt.Errorf("the engine says it is %q", r.Engine)
	}
	// A float32-only engine names no dtype.
	r.DType = NormDType(r.DType)
	if want := NormDType(e.DType()); r.DType != want {
		return Result{}, fmt.Errorf("asked for %s, the engine answered in %s", want, r.DType)
	}
	r.Engine = e.Name()
	return r, nil
}

// CommandEngine runs one process per shape and reads the last JSON line it
// prints: the `bertstream bench --json` contract of DESIGN.md.
type CommandEngine struct {
	EngineName  string
	EngineDType string
	Path        string
	Args        func(Shape) []string
	// Timeout bounds one shape, the model's set-up included.
	Timeout time.Duration
}

func (c *CommandEngine) Name() string  { return c.EngineName }
func (c *CommandEngine) DType() string { return NormDType(c.EngineDType) }
func (c *CommandEngine) Close() error  { return nil }

func (c *CommandEngine) Check(context.Context) error {
	if _, err := os.Stat(c.Path); err != nil {
		return &FatalError{fmt.Errorf("%s: %w (run `make build`)", c.Path, err)}
	}
	return nil
}

func (c *CommandEngine) Time(ctx context.Context, s Shape) (Result, error) {
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, c.Path, c.Args(s)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if strings.Contains(msg, `unknown command "bench"`) {
			return Result{}, &FatalError{fmt.Errorf("%s has no bench command yet: `bertstream bench --json` (DESIGN.md) is not in this build", c.Path)}
		}
		return Result{}, fmt.Errorf("%s %s: %w: %s", c.Path, strings.Join(c.Args(s), " "), err, clip(msg, 2000))
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	last := strings.TrimSpace(lines[len(lines)-1])
	if !strings.HasPrefix(last, "{") {
		return Result{}, fmt.Errorf("%s %s printed no JSON object: %q", c.Path, strings.Join(c.Args(s), " "), clip(stdout.String(), 500))
	}
	return ParseResult([]byte(last))
}

// PeerEngine is a long-lived peer process per preset (ort_peer.mjs,
// pytorch_peer.py with --shapes -): it builds or loads the model once and
// answers one JSON line for each "BxT" line it reads.
type PeerEngine struct {
	EngineName  string
	EngineDType string
	// Command gives the process for a preset; Prepare, if set, runs first
	// (the ONNX export).
	Command func(preset string) *exec.Cmd
	Prepare func(ctx context.Context, preset string) error
	// Require lists what must be present for the engine to run, each with
	// the reason it is missing.
	Require func(ctx context.Context) error
	// Timeout bounds one shape, warm-up included.
	Timeout time.Duration

	proc *peerProc
}

type peerProc struct {
	preset string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *tailBuffer
	done   chan struct{}
}

func (p *PeerEngine) Name() string  { return p.EngineName }
func (p *PeerEngine) DType() string { return NormDType(p.EngineDType) }

func (p *PeerEngine) Check(ctx context.Context) error {
	if p.Require == nil {
		return nil
	}
	if err := p.Require(ctx); err != nil {
		return &FatalError{err}
	}
	return nil
}

func (p *PeerEngine) Time(ctx context.Context, s Shape) (Result, error) {
	if p.proc != nil && p.proc.preset != s.Preset {
		p.Close()
	}
	if p.proc == nil {
		if err := p.start(ctx, s.Preset); err != nil {
			return Result{}, err
		}
	}
	if _, err := fmt.Fprintf(p.proc.stdin, "%dx%d\n", s.Batch, s.Seq); err != nil {
		return Result{}, p.failed(fmt.Errorf("writing to the peer: %w", err))
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Minute
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case line, ok := <-p.proc.lines:
		if !ok {
			return Result{}, p.failed(errors.New("the peer exited"))
		}
		return ParseResult([]byte(line))
	case <-timer.C:
		return Result{}, p.failed(fmt.Errorf("no answer in %v", timeout))
	case <-ctx.Done():
		return Result{}, p.failed(ctx.Err())
	}
}

func (p *PeerEngine) start(ctx context.Context, preset string) error {
	if p.Prepare != nil {
		if err := p.Prepare(ctx, preset); err != nil {
			return fmt.Errorf("preparing %s: %w", preset, err)
		}
	}
	cmd := p.Command(preset)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("starting %s: %w", cmd, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("starting %s: %w", cmd, err)
	}
	proc := &peerProc{preset: preset, cmd: cmd, stdin: stdin, lines: make(chan string), stderr: &tailBuffer{max: 8 << 10}, done: make(chan struct{})}
	cmd.Stderr = proc.stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", cmd, err)
	}
	go func() {
		defer close(proc.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			if line := strings.TrimSpace(sc.Text()); strings.HasPrefix(line, "{") {
				select {
				case proc.lines <- line:
				case <-proc.done:
					return
				}
			}
		}
	}()
	p.proc = proc
	return nil
}

// failed ends the peer process and wraps err with what it printed on
// stderr, read once it has exited so that its last words are in.
func (p *PeerEngine) failed(err error) error {
	proc := p.proc
	p.Close()
	if proc != nil {
		if tail := strings.TrimSpace(proc.stderr.String()); tail != "" {
			return fmt.Errorf("%w; its stderr ends with:\n%s", err, tail)
		}
	}
	return err
}

// Close ends the peer process: closing its stdin ends its loop, and a peer
// stuck in a run is killed.
func (p *PeerEngine) Close() error {
	if p.proc == nil {
		return nil
	}
	proc := p.proc
	p.proc = nil
	close(proc.done)
	proc.stdin.Close()
	exited := make(chan error, 1)
	go func() { exited <- proc.cmd.Wait() }()
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		proc.cmd.Process.Kill()
		<-exited
	}
	return nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = slices.Clone(t.buf[over:])
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// Config says where the Python and Node peers are and how to run them.
type Config struct {
	Dir        string // bench/peers
	CacheDir   string // exported ONNX models and reference outputs; Dir/.cache if empty
	Python     string // an interpreter that imports torch (Debian's /usr/bin/python3)
	Node       string
	Opset      int
	Threads    int
	Warmup     int
	Runs       int
	MaxSeconds float64
	// BLASDir, if not empty, goes first on PyTorch's LD_LIBRARY_PATH: the
	// directory of an optimized libblas.so.3 (Debian's OpenBLAS, OpenMP
	// build, unpacked there by mk/bench.mk) for Debian's torch, which
	// otherwise gets the reference BLAS.
	BLASDir string
	// OpenBLASCore, if not empty, is PyTorch's OPENBLAS_CORETYPE.
	OpenBLASCore string
}

func (c Config) cacheDir() string {
	if c.CacheDir != "" {
		return c.CacheDir
	}
	return filepath.Join(c.Dir, ".cache")
}

func (c Config) timing() []string {
	return []string{"--threads", strconv.Itoa(c.Threads), "--warmup", strconv.Itoa(c.Warmup),
		"--runs", strconv.Itoa(c.Runs), "--max-seconds", strconv.FormatFloat(c.MaxSeconds, 'f', -1, 64)}
}

// ONNXModel is where export_onnx.py puts a preset's model.
func (c Config) ONNXModel(preset string) string {
	return filepath.Join(c.cacheDir(), fmt.Sprintf("bert-%s-opset%d.onnx", preset, c.Opset))
}

// ONNXModelInt8 is where quantize_onnx.py puts the dynamically quantized
// ONNXModel.
func (c Config) ONNXModelInt8(preset string) string {
	return strings.TrimSuffix(c.ONNXModel(preset), ".onnx") + "-int8.onnx"
}

// Reference is where export_onnx.py puts a preset's reference outputs,
// which both peers check their engine against before timing.
func (c Config) Reference(preset string) string {
	return filepath.Join(c.cacheDir(), fmt.Sprintf("bert-%s.ref.json", preset))
}

// export runs export_onnx.py, which does nothing when its files are up to date.
func (c Config) export(ctx context.Context, preset string, args ...string) error {
	return c.python(ctx, append([]string{filepath.Join(c.Dir, "export_onnx.py"), "--preset", preset,
		"--opset", strconv.Itoa(c.Opset), "--out", c.cacheDir()}, args...)...)
}

// python runs a script of the peers and returns its output as the error if it fails.
func (c Config) python(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, c.Python, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", cmd, err, clip(strings.TrimSpace(string(out)), 2000))
	}
	return nil
}

// ORTInt8Check bounds the INT8 ONNX Runtime model's distance to PyTorch's
// float32 outputs, checked before timing: per-tensor uint8 activations
// measured 0.33 at most and cosine 0.9982 on bert-base's random weights, so
// these catch a broken graph (a wrong scale is off by far more), not
// quantization's own error.
var ORTInt8Check = struct{ MaxErr, MinCosine float64 }{MaxErr: 1, MinCosine: 0.995}

// NewORTPeer is ONNX Runtime (onnxruntime-node, CPU) on the model that
// export_onnx.py exports, which it runs first; with dtype int8, on that
// model quantized by quantize_onnx.py.
func NewORTPeer(c Config, dtype string) (*PeerEngine, error) {
	int8 := false
	switch NormDType(dtype) {
	case "f32":
	case "int8":
		int8 = true
	default:
		return nil, fmt.Errorf("the ONNX Runtime peer has no dtype %q (f32, int8)", dtype)
	}
	return &PeerEngine{
		EngineName:  "onnxruntime",
		EngineDType: NormDType(dtype),
		Require: func(ctx context.Context) error {
			if _, err := exec.LookPath(c.Node); err != nil {
				return fmt.Errorf("node not found (%w): install Node.js to run the ONNX Runtime peer", err)
			}
			if _, err := os.Stat(filepath.Join(c.Dir, "node_modules", "onnxruntime-node")); err != nil {
				return fmt.Errorf("onnxruntime-node is not installed in %s: run `npm ci --ignore-scripts` there (or `make bench-peers`)", c.Dir)
			}
			if int8 {
				if err := requireModule(ctx, c.Python, "onnx", "python3-onnx", "quantizing the ONNX model"); err != nil {
					return err
				}
			}
			return requireModule(ctx, c.Python, "torch", "python3-torch", "exporting the ONNX model")
		},
		Prepare: func(ctx context.Context, preset string) error {
			if err := c.export(ctx, preset); err != nil {
				return err
			}
			if !int8 {
				return nil
			}
			return c.python(ctx, filepath.Join(c.Dir, "quantize_onnx.py"), "--in", c.ONNXModel(preset), "--out", c.ONNXModelInt8(preset))
		},
		Command: func(preset string) *exec.Cmd {
			model, check := c.ONNXModel(preset), []string(nil)
			if int8 {
				model = c.ONNXModelInt8(preset)
				check = []string{"--dtype", "int8", "--max-err", fmt.Sprint(ORTInt8Check.MaxErr), "--min-cosine", fmt.Sprint(ORTInt8Check.MinCosine)}
			}
			args := append([]string{filepath.Join(c.Dir, "ort_peer.mjs"), "--model", model,
				"--ref", c.Reference(preset), "--preset", preset, "--shapes", "-", "--ops"}, c.timing()...)
			return exec.Command(c.Node, append(args, check...)...)
		},
	}, nil
}

// NewPyTorchPeer is PyTorch eager on the CPU, in the environment of PyTorchEnv.
func NewPyTorchPeer(c Config) *PeerEngine {
	return &PeerEngine{
		EngineName: "pytorch",
		Require: func(ctx context.Context) error {
			return requireModule(ctx, c.Python, "torch", "python3-torch", "the PyTorch peer")
		},
		// The reference comes from a process with the system's BLAS, so that
		// the BLAS the peer gets is checked too.
		Prepare: func(ctx context.Context, preset string) error { return c.export(ctx, preset, "--ref-only") },
		Command: func(preset string) *exec.Cmd {
			args := append([]string{filepath.Join(c.Dir, "pytorch_peer.py"), "--preset", preset,
				"--ref", c.Reference(preset), "--shapes", "-"}, c.timing()...)
			cmd := exec.Command(c.Python, args...)
			cmd.Env = PyTorchEnv(os.Environ(), c.Threads, c.BLASDir, c.OpenBLASCore)
			return cmd
		},
	}
}

// OpenBLASOverrides are the variables set on this project's machines for
// old OpenBLAS builds; they also slow a current OpenBLAS down.
var OpenBLASOverrides = []string{"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"}

// pytorchEnvSet are the variables PyTorchEnv sets itself.
var pytorchEnvSet = []string{"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY"}

// PyTorchEnv is the PyTorch peer's environment: env without
// OpenBLASOverrides; OpenMP and BLAS threads set to threads; OpenMP threads
// that block rather than spin when idle (spinning workers stall every one
// of eager PyTorch's many small parallel regions as soon as anything else
// runs on the cores: 60x slower at B=1 on a busy 2-core machine);
// OPENBLAS_CORETYPE set to core if not empty; and blasDir first on
// LD_LIBRARY_PATH.
func PyTorchEnv(env []string, threads int, blasDir, core string) []string {
	var out []string
	ldPath := ""
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case slices.Contains(OpenBLASOverrides, k), slices.Contains(pytorchEnvSet, k):
		case k == "LD_LIBRARY_PATH":
			ldPath = v
		default:
			out = append(out, kv)
		}
	}
	n := strconv.Itoa(threads)
	out = append(out, "OPENBLAS_NUM_THREADS="+n, "OMP_NUM_THREADS="+n, "OMP_WAIT_POLICY=PASSIVE")
	if core != "" {
		out = append(out, "OPENBLAS_CORETYPE="+core)
	}
	if blasDir != "" {
		ldPath = strings.TrimSuffix(blasDir+":"+ldPath, ":")
	}
	if ldPath != "" {
		out = append(out, "LD_LIBRARY_PATH="+ldPath)
	}
	return out
}

// PyTorchEnvNote says which of OpenBLASOverrides env sets, which the
// PyTorch peer ran without (or with its own OPENBLAS_CORETYPE), or "".
func PyTorchEnvNote(env []string) string {
	var set []string
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if slices.Contains(OpenBLASOverrides, k) {
			set = append(set, k+"="+v)
		}
	}
	if len(set) == 0 {
		return ""
	}
	return "This machine sets " + strings.Join(set, " and ") + " (for old OpenBLAS builds); the PyTorch peer ran without them, and the other engines with them."
}

// OpenBLASCore is the OPENBLAS_CORETYPE for a CPU with these /proc/cpuinfo
// flags: Debian's OpenBLAS 0.3.21 does not recognise recent Intel models
// (Emerald Rapids, model 207, among them) and falls back to its SSE3
// Prescott kernels, so the peer names the newest kernel family that the
// CPU's instructions cover.
func OpenBLASCore(flags []string) string {
	switch {
	case slices.Contains(flags, "avx512f") && slices.Contains(flags, "avx512bw") && slices.Contains(flags, "avx512vl"):
		return "SkylakeX"
	case slices.Contains(flags, "avx2") && slices.Contains(flags, "fma"):
		return "Haswell"
	}
	return ""
}

// CPUFlags are the flags of the first processor in /proc/cpuinfo.
func CPUFlags() []string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "flags" {
			return strings.Fields(v)
		}
	}
	return nil
}

// requireModule says why python cannot import module, which Debian's
// package pkg installs.
func requireModule(ctx context.Context, python, module, pkg, what string) error {
	out, err := exec.CommandContext(ctx, python, "-c", "import "+module).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s cannot import %s, needed for %s (`apt-get install %s`, or `make bench-peers`): %v: %s",
			python, module, what, pkg, err, clip(strings.TrimSpace(string(out)), 500))
	}
	return nil
}
