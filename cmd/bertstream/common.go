package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/bertstream/bertstream/kernels"
	"github.com/bertstream/bertstream/nn"
)

// backendFlags are the flags of every command that runs a model.
type backendFlags struct {
	device  string
	dtype   string
	threads int
	gpu     int
	// kernels is the CPU kernel version (bench's --kernel-version); empty:
	// the fastest.
	kernels string
	tuning  string
	stderr  io.Writer
	// measured and tuningFrom are the CPU blocking once resolved (see
	// resolveTuning): nil and "table" for the table's.
	measured   *kernels.Measured
	tuningFrom string
}

func (b *backendFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&b.device, "device", "cpu", "compute backend: cpu or cuda")
	fs.StringVar(&b.dtype, "dtype", "", "compute dtype: f32 (default), f16 or bf16 (GPU), or int8 (CPU: INT8 linear layers, quantized per channel and per token)")
	fs.IntVar(&b.threads, "threads", 0, "CPU threads (0: all)")
	fs.IntVar(&b.gpu, "gpu", 0, "GPU index for --device cuda")
	fs.StringVar(&b.tuning, "tuning", "", "CPU blocking: a file of `bertstream tune`, or \"table\" for the built-in table (default $BERTSTREAM_TUNING, else this CPU's file from `bertstream tune` if there is one, else the table)")
	b.stderr = fs.Output()
}

// resolveTuning resolves --tuning once (see measuredTuning) into
// b.measured and b.tuningFrom.
func (b *backendFlags) resolveTuning() error {
	if b.tuningFrom != "" {
		return nil
	}
	m, from, err := measuredTuning(b.tuning, b.stderr)
	if err != nil {
		return err
	}
	b.measured, b.tuningFrom = m, from
	return nil
}

// blocking names the CPU blocking resolveTuning found: the table's entry
// for this CPU, or the measured one and the entry it was measured against.
func (b *backendFlags) blocking() string {
	if b.measured != nil {
		return kernels.MeasuredName + " (against " + b.measured.Base + ")"
	}
	return kernels.Tunings()[0]
}

// measuredTuning resolves --tuning: a file, "table", or when empty
// $BERTSTREAM_TUNING, then the file `bertstream tune` writes for this CPU
// by default if it exists. It returns nil for the table, and where the
// tuning came from. A file named by the flag or the variable must be
// right; the default one is a cache, which a newer build may no longer
// read (a kernel renamed): it is then ignored with a warning, not a
// server that fails to start.
func measuredTuning(flagValue string, warn io.Writer) (*kernels.Measured, string, error) {
	path, from := flagValue, "--tuning"
	if path == "" {
		path, from = os.Getenv("BERTSTREAM_TUNING"), "BERTSTREAM_TUNING"
	}
	if path == "table" {
		return nil, "table", nil
	}
	if path != "" {
		m, err := kernels.ReadMeasured(path)
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", from, err)
		}
		return m, path, nil
	}
	def, err := kernels.TuningFile()
	if err != nil {
		// No cache directory ($HOME unset, as under some service
		// managers): `bertstream tune` could not have written there.
		return nil, "table", nil
	}
	m, err := kernels.ReadMeasured(def)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, "table", nil // never tuned: the table's entry
	case err != nil:
		fmt.Fprintf(warn, "bertstream: this CPU's tuning file: %v; running the table's blocking (rerun `bertstream tune`)\n", err)
		return nil, "table", nil
	}
	return m, def, nil
}

func (b *backendFlags) open() (nn.Backend, error) {
	opts := nn.Options{Device: b.gpu, Threads: b.threads, Kernels: b.kernels}
	if b.device == "cpu" {
		if err := b.resolveTuning(); err != nil {
			return nil, err
		}
		opts.Tuning = b.measured
	}
	if strings.EqualFold(b.dtype, "int8") {
		opts.Int8 = true
	} else if b.dtype != "" {
		dt, err := nn.ParseDType(b.dtype)
		if err != nil {
			return nil, fmt.Errorf("--dtype: %w", err)
		}
		opts.Compute = dt
	}
	return nn.Open(b.device, opts)
}
