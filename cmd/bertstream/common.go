package main

import (
	"flag"
	"fmt"
	"strings"

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
}

func (b *backendFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&b.device, "device", "cpu", "compute backend: cpu or cuda")
	fs.StringVar(&b.dtype, "dtype", "", "compute dtype: f32 (default), f16 or bf16 (GPU), or int8 (CPU: INT8 linear layers, quantized per channel and per token)")
	fs.IntVar(&b.threads, "threads", 0, "CPU threads (0: all)")
	fs.IntVar(&b.gpu, "gpu", 0, "GPU index for --device cuda")
}

func (b *backendFlags) open() (nn.Backend, error) {
	opts := nn.Options{Device: b.gpu, Threads: b.threads, Kernels: b.kernels}
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
