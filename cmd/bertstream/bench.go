package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bertstream/bertstream/bench"
	"github.com/bertstream/bertstream/kernels"
)

func init() {
	register(&command{name: "bench", summary: "time a model preset with random weights, or validate and time the kernels", run: runBench})
}

func runBench(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench", "bench --preset nano|mini|micro|base|large --batch B --seq T [--threads N] [--device cpu|cuda] [--dtype f32|f16|bf16|int8] [--json]\n       bertstream bench --kernels all|FAMILY,... [--threads N] [--json]\n       bertstream bench --load [--model DIR | --preset P [--checkpoint-dtype f32|f16|bf16] [--save DIR]] [--batch 32 --seq 128] [--runs N] [--threads N] [--ort-model M.onnx] [--json]", stderr)
	presets := fs.String("preset", "base", "model preset(s), comma-separated")
	batches := fs.String("batch", "8", "batch size(s), comma-separated")
	seqs := fs.String("seq", "128", "sequence length(s), comma-separated")
	minLen := fs.Int("min-len", 0, "mixed lengths: each sequence gets a length uniform in [min-len, seq], padded to seq")
	runs := fs.Int("runs", 10, "timed forward passes per shape (the median is reported)")
	warmup := fs.Int("warmup", 2, "untimed passes first")
	asJSON := fs.Bool("json", false, "print one JSON object per shape (or per kernel version)")
	profile := fs.Bool("profile", false, "time every operation by kind and layer")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile (pprof) of the timed runs to this file")
	memProfile := fs.String("memprofile", "", "write a heap profile (pprof) after the runs to this file")
	kernelList := fs.String("kernels", "", "instead of a model: validate and time kernel families ("+strings.Join(bench.KernelFamilies, ", ")+", or all)")
	load := fs.Bool("load", false, "instead of throughput: time start-up (predict, inspect, load, first answer) and measure peak and serving RSS of --model, or of a random --preset model")
	modelDir := fs.String("model", "", "--load: the model directory (default: a random model of --preset)")
	ckDType := fs.String("checkpoint-dtype", "f32", "--load of a random model: its checkpoint's dtype, f32, f16 or bf16")
	save := fs.String("save", "", "--load of a random model: write it to this directory and keep it")
	loadChild := fs.String("load-child", "", "internal to --load: the serving child's model directory")
	ortModel := fs.String("ort-model", "", "--load: also time ONNX Runtime's start-up on this export of the same shape (bench/peers/export_onnx.py), each run beside predict's")
	ortScript := fs.String("ort-script", "bench/peers/ort_start.mjs", "--load --ort-model: the node script that creates the session and answers once")
	version := fs.String("kernel-version", "", "CPU kernel version to use ("+strings.Join(kernels.Versions(), ", ")+"; default the fastest)")
	var bf backendFlags
	bf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	bf.kernels = *version
	if *load {
		bs, err := intList("--batch", *batches)
		if err != nil {
			return err
		}
		ts, err := intList("--seq", *seqs)
		if err != nil {
			return err
		}
		// A bad --tuning fails here, not in the first child.
		if err := bf.resolveTuning(); err != nil {
			return err
		}
		return runLoadBench(*modelDir, *presets, *ckDType, *save, *runs, bf.threads, bs[0], ts[0], bf.tuning, ortPeer{*ortModel, *ortScript}, *asJSON, stdout, stderr)
	}
	be, err := bf.open()
	if err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	if *memProfile != "" {
		defer func() {
			if err := writeHeapProfile(*memProfile); err != nil {
				fmt.Fprintf(stderr, "bertstream bench: --memprofile: %v\n", err)
			}
		}()
	}

	if *loadChild != "" {
		bs, err := intList("--batch", *batches)
		if err != nil {
			return err
		}
		ts, err := intList("--seq", *seqs)
		if err != nil {
			return err
		}
		return runLoadChild(*loadChild, be, bs[0], ts[0], stdout)
	}

	if *kernelList != "" {
		var fams []string
		if *kernelList != "all" {
			fams = strings.Split(*kernelList, ",")
		}
		threads := bf.threads
		if threads <= 0 {
			threads = runtime.GOMAXPROCS(0)
		}
		peak, err := bench.MeasurePeak(threads, time.Second)
		if err != nil {
			fmt.Fprintf(stderr, "bertstream bench: no FMA peak, %% of peak left out: %v\n", err)
		}
		if err := bf.resolveTuning(); err != nil {
			return err
		}
		res, err := bench.RunKernels(fams, threads, peak.GFLOPS, 300*time.Millisecond, bf.measured)
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			for _, r := range res {
				if err := enc.Encode(r); err != nil {
					return err
				}
			}
			return nil
		}
		fmt.Fprintf(stdout, "FMA peak: %.1f GFLOP/s (%s, %d threads); blocking: %s", peak.GFLOPS, peak.ISA, peak.Threads, kernels.Default().Config().Tuning)
		if bf.measured != nil {
			fmt.Fprintf(stdout, ", and @measured: %s", bf.tuningFrom)
		}
		fmt.Fprintln(stdout)
		// The families whose share is of another peak than the FMA one
		// say which, once each.
		said := map[string]bool{}
		for _, r := range res {
			if r.PeakISA != "" && !said[r.Family] {
				said[r.Family] = true
				unit := "GFLOP/s"
				if strings.HasSuffix(r.Family, "-int8") {
					unit = "GOP/s (integer)"
				}
				fmt.Fprintf(stdout, "%s: %s, %% of the %s dot-product peak, %.1f\n", r.Family, unit, r.PeakISA, r.Peak)
			}
		}
		fmt.Fprintln(stdout)
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "family\tshape\tversion\tmax err\tms\tGFLOP/s\tGB/s\t% peak")
		for _, r := range res {
			if !r.Valid {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%.2g\tINVALID\t\t\t\n", r.Family, r.Shape, r.Version, r.MaxErr)
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.2g\t%.3f\t%s\t%.1f\t%s\n", r.Family, r.Shape, r.Version, r.MaxErr, r.Ms,
				blankZero("%.1f", r.GFLOPS), r.GBps, blankZero("%.1f", r.PeakPct))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		return nil
	}

	ps := strings.Split(*presets, ",")
	bs, err := intList("--batch", *batches)
	if err != nil {
		return err
	}
	ts, err := intList("--seq", *seqs)
	if err != nil {
		return err
	}
	var tw *tabwriter.Writer
	if !*asJSON {
		tw = tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "preset\tbatch\tseq\ttokens\tms/batch (p10-p90)\tseq/s\ttokens/s\tGFLOP/s")
	}
	for _, p := range ps {
		for _, b := range bs {
			for _, t := range ts {
				r, err := bench.RunModel(be, bench.ModelOptions{Preset: p, Batch: b, Seq: t, MinLen: *minLen, Runs: *runs, Warmup: *warmup, Profile: *profile})
				if err != nil {
					return fmt.Errorf("%s B=%d T=%d: %w", p, b, t, err)
				}
				if *asJSON {
					if err := json.NewEncoder(stdout).Encode(r); err != nil {
						return err
					}
					continue
				}
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.2f (%.2f-%.2f)\t%.2f\t%.0f\t%.1f\n", r.Preset, r.Batch, r.Seq, r.Tokens, r.MsPerBatch, r.MsP10, r.MsP90, r.SeqPerS, r.TokensPerS, r.GFLOPS)
				if r.Profile != nil {
					tw.Flush()
					fmt.Fprintln(stdout)
					if err := bench.WriteProfile(stdout, r.Profile); err != nil {
						return err
					}
					fmt.Fprintln(stdout)
				}
			}
		}
	}
	if tw != nil {
		return tw.Flush()
	}
	return nil
}

func blankZero(format string, v float64) string {
	if v == 0 {
		return ""
	}
	return fmt.Sprintf(format, v)
}

func intList(flag, s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%s: %q is not a positive integer", flag, f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New(flag + ": empty")
	}
	return out, nil
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
