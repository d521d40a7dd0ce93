// Command peers compares bertstream's CPU throughput with ONNX Runtime's and
// PyTorch's on the same shapes, threads and machine, each engine at each
// dtype it has (bertstream f32, bf16, int8; ONNX Runtime f32, int8; PyTorch
// f32), engines interleaved shape by shape, and writes
// bench/results/cpu-peers.{json,md,png}.
//
//	go run ./bench/cmd/peers                               # base, B 1,8,32 x T 32,128,384
//	go run ./bench/cmd/peers -shapes base:8x128,base:1x128 -rounds 3
//	go run ./bench/cmd/peers -dtypes f32                   # float32 only
//	go run ./bench/cmd/peers -engines onnxruntime,pytorch -presets nano
//	go run ./bench/cmd/peers -from bench/results/cpu-peers.json   # redraw table and plot
//
// `make bench-peers` installs the peers' prerequisites first (mk/bench.mk).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bertstream/bertstream/bench/peers"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		engines    = flag.String("engines", "bertstream,onnxruntime,pytorch", "engines to compare, in table order")
		dtypes     = flag.String("dtypes", "f32,bf16,int8", "compute dtypes, in table order; each engine runs those it has ("+dtypeList()+")")
		presets    = flag.String("presets", "base", "presets (nano, mini, micro, base, large), comma-separated")
		batches    = flag.String("batch", "1,8,32", "batch sizes")
		seqs       = flag.String("seq", "32,128,384", "sequence lengths")
		shapes     = flag.String("shapes", "", "PRESET:BxT list that replaces -presets/-batch/-seq, e.g. base:8x128,base:1x128")
		threads    = flag.Int("threads", 2, "threads per engine")
		rounds     = flag.Int("rounds", 1, "sweeps over all shapes; each result is the best round's median")
		warmup     = flag.Int("warmup", 2, "peers' untimed runs per shape")
		runs       = flag.Int("runs", 10, "peers' timed runs per shape (at least 3; fewer past -max-seconds)")
		maxSeconds = flag.Float64("max-seconds", 30, "peers stop timing a shape after this many seconds once they have 3 runs")
		torchMax   = flag.Int("pytorch-max-tokens", 0, "skip PyTorch on shapes with more than this many tokens (B*T); 0 runs them all")
		bin        = flag.String("bin", "bin/bertstream", "bertstream binary (`make build`)")
		peersDir   = flag.String("peers", "bench/peers", "directory of the peer scripts")
		python     = flag.String("python", "/usr/bin/python3", "Python that imports torch (Debian's python3-torch)")
		node       = flag.String("node", "node", "Node.js for the ONNX Runtime peer")
		opset      = flag.Int("opset", 12, "ONNX opset of the exported model (12: see bench/peers/export_onnx.py)")
		blasDir    = flag.String("blas-dir", "bench/peers/.cache/openblas/usr/lib/x86_64-linux-gnu/openblas-openmp",
			"directory of the libblas.so.3 PyTorch gets first on LD_LIBRARY_PATH; skipped if absent")
		blasCore = flag.String("openblas-coretype", "auto", "PyTorch's OPENBLAS_CORETYPE; auto picks from the CPU flags, none leaves it to OpenBLAS")
		outDir   = flag.String("out", "bench/results", "output directory")
		name     = flag.String("name", "cpu-peers", "output file name, without extension")
		from     = flag.String("from", "", "redraw the table and plot from this report instead of measuring")
		timeout  = flag.Duration("shape-timeout", 20*time.Minute, "longest one engine may take for one shape")
		quiet    = flag.Float64("quiet", 0.25, "before each timing, wait for a second in which the machine is at most this busy (0..1: others' load)...")
		quietMax = flag.Duration("quiet-wait", 2*time.Minute, "...but no longer than this")
	)
	flag.Parse()

	if *from != "" {
		r, err := peers.ReadReport(*from)
		if err != nil {
			return err
		}
		return r.WriteFiles(*outDir, *name)
	}

	var list []peers.Shape
	if *shapes != "" {
		var err error
		if list, err = peers.ParseShapes(*shapes); err != nil {
			return err
		}
	} else {
		bs, err := ints(*batches)
		if err != nil {
			return fmt.Errorf("-batch: %w", err)
		}
		ts, err := ints(*seqs)
		if err != nil {
			return fmt.Errorf("-seq: %w", err)
		}
		list = peers.Grid(strings.Split(*presets, ","), bs, ts)
	}

	cfg := peers.Config{Dir: *peersDir, Python: *python, Node: *node, Opset: *opset,
		Threads: *threads, Warmup: *warmup, Runs: *runs, MaxSeconds: *maxSeconds}
	switch *blasCore {
	case "auto":
		cfg.OpenBLASCore = peers.OpenBLASCore(peers.CPUFlags())
	case "none":
	default:
		cfg.OpenBLASCore = *blasCore
	}
	var notes []string
	if _, err := os.Stat(*blasDir); err == nil {
		cfg.BLASDir = *blasDir
	} else {
		notes = append(notes, fmt.Sprintf("PyTorch used the system's libblas.so.3 (%s is absent; `make bench-peers` unpacks Debian's OpenBLAS there).", *blasDir))
	}

	var es []peers.Engine
	names := strings.Split(*engines, ",")
	ds := strings.Split(*dtypes, ",")
	for _, d := range ds {
		if !slices.Contains(engineDTypes["bertstream"], d) {
			return fmt.Errorf("-dtypes: unknown dtype %q (have %s)", d, dtypeList())
		}
	}
	for _, e := range names {
		have, ok := engineDTypes[e]
		if !ok {
			return fmt.Errorf("-engines: unknown engine %q (have bertstream, onnxruntime, pytorch)", e)
		}
		for _, d := range ds {
			if !slices.Contains(have, d) {
				continue
			}
			switch e {
			case "bertstream":
				es = append(es, &peers.CommandEngine{EngineName: e, EngineDType: d, Path: *bin, Timeout: *timeout, Args: func(s peers.Shape) []string {
					return []string{"bench", "--preset", s.Preset, "--batch", strconv.Itoa(s.Batch), "--seq", strconv.Itoa(s.Seq),
						"--threads", strconv.Itoa(*threads), "--dtype", d, "--json"}
				}})
			case "onnxruntime":
				p, err := peers.NewORTPeer(cfg, d)
				if err != nil {
					return err
				}
				p.Timeout = *timeout
				es = append(es, p)
			case "pytorch":
				p := peers.NewPyTorchPeer(cfg)
				p.Timeout = *timeout
				es = append(es, p)
				if n := peers.PyTorchEnvNote(os.Environ()); n != "" {
					notes = append(notes, n)
				}
				if cfg.OpenBLASCore != "" {
					notes = append(notes, fmt.Sprintf("PyTorch ran with OPENBLAS_CORETYPE=%s, the newest kernel family this CPU's instructions cover: Debian's OpenBLAS 0.3.21 takes CPU models it does not know (Emerald Rapids among them) for Prescott and runs its SSE3 kernels.", cfg.OpenBLASCore))
				}
			}
		}
	}
	if len(es) == 0 {
		return fmt.Errorf("no engine of -engines %s has a dtype of -dtypes %s", *engines, *dtypes)
	}
	defer func() {
		for _, e := range es {
			e.Close()
		}
	}()
	skip := func(engine string, s peers.Shape) bool {
		return engine == "pytorch" && *torchMax > 0 && s.Batch*s.Seq > *torchMax
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	machine := peers.ReadMachine(time.Now())
	results := peers.Compare(ctx, es, list, peers.CompareOptions{Rounds: *rounds, Skip: skip,
		Quiet: peers.WaitQuiet(*quiet, *quietMax, os.Stderr), Log: os.Stderr})
	machine.LoadAvgEnd = peers.LoadAvg()

	notes = append(notes, engineNotes(results, cfg)...)
	if *torchMax > 0 && slices.Contains(names, "pytorch") {
		notes = append(notes, fmt.Sprintf("PyTorch was run only on shapes of at most %d tokens (B*T).", *torchMax))
	}
	r := &peers.Report{Machine: machine, Commit: commit(), Command: command(), Threads: *threads, Rounds: *rounds,
		Engines: names, DTypes: ds, Notes: notes, Results: results}
	if err := r.WriteFiles(*outDir, *name); err != nil {
		return err
	}
	fmt.Print(r.Markdown())
	fmt.Fprintf(os.Stderr, "wrote %s.{json,md,png}\n", filepath.Join(*outDir, *name))
	if ctx.Err() != nil {
		return ctx.Err()
	}
	for _, res := range results {
		if res.Err != "" {
			return errors.New("some shapes failed; see Errors in the report")
		}
	}
	return nil
}

// engineDTypes are the compute dtypes each engine is run at; bertstream's
// are all of them.
var engineDTypes = map[string][]string{
	"bertstream":  {"f32", "bf16", "int8"},
	"onnxruntime": {"f32", "int8"},
	"pytorch":     {"f32"},
}

func dtypeList() string {
	var out []string
	for _, e := range []string{"bertstream", "onnxruntime", "pytorch"} {
		out = append(out, e+" "+strings.Join(engineDTypes[e], "/"))
	}
	return strings.Join(out, ", ")
}

// command is how the driver was run, as `make bench-peers` or `go run` would
// run it again.
func command() string {
	args := []string{"go run ./bench/cmd/peers"}
	for _, a := range os.Args[1:] {
		if strings.ContainsAny(a, " '\"$") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		args = append(args, a)
	}
	return strings.Join(args, " ")
}

// engineNotes says how the peers ran, from what they reported: the BLAS
// library PyTorch loaded and the operators ONNX Runtime's optimizer left.
func engineNotes(results []peers.Result, cfg peers.Config) []string {
	var notes []string
	seen := map[string]bool{}
	for _, r := range results {
		key := r.Variant().String() + " " + r.Preset
		if r.Err != "" || seen[key] {
			continue
		}
		seen[key] = true
		switch {
		case r.Engine == "onnxruntime" && r.Variant().DType == "int8":
			var cos float64
			json.Unmarshal(r.Extra["check_cosine"], &cos)
			notes = append(notes, fmt.Sprintf("ONNX Runtime %s int8, %s: the same model quantized dynamically by quantize_onnx.py as ONNX Runtime's quantize_dynamic does it (each MatMul's weight int8 per output column, symmetric; its input uint8 per tensor at run time); same session settings; %s, cosine similarity %.5f. Operators after ONNX Runtime's optimizations: %s.",
				r.Version, r.Preset, checked(r, "PyTorch's float32"), cos, string(r.Extra["graph_ops"])))
			continue
		}
		switch r.Engine {
		case "pytorch":
			var blas, core string
			json.Unmarshal(r.Extra["blas"], &blas)
			json.Unmarshal(r.Extra["blas_core"], &core)
			if core != "" {
				blas += ", OpenBLAS kernel " + core
			}
			notes = append(notes, fmt.Sprintf("PyTorch %s, %s: eager, torch.inference_mode, float32; BLAS %s; OMP_WAIT_POLICY=PASSIVE; %s.",
				r.Version, r.Preset, blas, checked(r, "the reference (PyTorch on the system's BLAS)")))
		case "onnxruntime":
			notes = append(notes, fmt.Sprintf("ONNX Runtime %s (onnxruntime-node, CPU execution provider), %s: model from torch.onnx.export opset %d with dynamic batch and sequence axes; graph optimization 'all', intra-op threads %d, inter-op 1, sequential; each shape timed with spinning and with blocking intra-op threads, runs alternating, the faster reported (\"spinning\" in the JSON); %s. Operators after ONNX Runtime's optimizations: %s.",
				r.Version, r.Preset, cfg.Opset, cfg.Threads, checked(r, "PyTorch's"), string(r.Extra["graph_ops"])))
		}
	}
	return notes
}

// checked says how far a peer's outputs were from the reference.
func checked(r peers.Result, ref string) string {
	var e float64
	if err := json.Unmarshal(r.Extra["check_max_abs_err"], &e); err != nil {
		return "outputs not checked"
	}
	return fmt.Sprintf("outputs within %.2g of %s before timing", e, ref)
}

// commit names the source tree, for a bertstream that reports no version.
func commit() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func ints(list string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}
