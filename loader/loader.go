// Package loader turns a Hugging Face / PyTorch model directory into a
// bert.Model: it finds the checkpoint (safetensors, sharded safetensors,
// pytorch_model.bin in the zip or legacy format, sharded .bin), maps the
// tensor names of the layouts in the wild onto the model's, converts
// F16/BF16/F64 weights to F32 and hands them to the backend.
package loader

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/kernels"
	"github.com/bertstream/bertstream/loader/safetensors"
	"github.com/bertstream/bertstream/loader/torchbin"
	"github.com/bertstream/bertstream/nn"
)

// Options say where the pieces of a model are and where it runs.
type Options struct {
	// Backend is the compute backend; nil means the CPU backend.
	Backend nn.Backend
	// Config overrides DIR/config.json.
	Config string
	// Weights overrides the checkpoint search with one file (.safetensors,
	// .bin, or a sharded .index.json).
	Weights string
}

// Format names a checkpoint layout.
type Format string

const (
	SafeTensors        Format = "safetensors"
	SafeTensorsSharded Format = "safetensors (sharded)"
	TorchBin           Format = "pytorch .bin"
	TorchBinSharded    Format = "pytorch .bin (sharded)"
)

// candidates are tried in order, as transformers' from_pretrained does.
var candidates = []struct {
	file   string
	format Format
}{
	{"model.safetensors", SafeTensors},
	{"model.safetensors.index.json", SafeTensorsSharded},
	{"pytorch_model.bin", TorchBin},
	{"pytorch_model.bin.index.json", TorchBinSharded},
}

// FindWeights returns the checkpoint file of a model directory.
func FindWeights(dir string) (string, Format, error) {
	for _, c := range candidates {
		p := filepath.Join(dir, c.file)
		if _, err := os.Stat(p); err == nil {
			return p, c.format, nil
		}
	}
	names := make([]string, len(candidates))
	for i, c := range candidates {
		names[i] = c.file
	}
	return "", "", fmt.Errorf("%s: no checkpoint (looked for %s)", dir, strings.Join(names, ", "))
}

func formatOf(path string) (Format, error) {
	base := filepath.Base(path)
	switch {
	case strings.HasSuffix(base, ".safetensors.index.json"):
		return SafeTensorsSharded, nil
	case strings.HasSuffix(base, ".bin.index.json"):
		return TorchBinSharded, nil
	case strings.HasSuffix(base, ".safetensors"):
		return SafeTensors, nil
	case strings.HasSuffix(base, ".bin"), strings.HasSuffix(base, ".pt"), strings.HasSuffix(base, ".pth"):
		return TorchBin, nil
	}
	return "", fmt.Errorf("%s: cannot tell the checkpoint format from the name (want .safetensors, .bin or .index.json)", path)
}

// RawTensor is a checkpoint tensor as stored: its original name, dtype,
// shape and little-endian bytes.
type RawTensor struct {
	Name  string
	DType string
	Shape []int
	Data  []byte
}

// Checkpoint is the tensors of a checkpoint file (all shards).
type Checkpoint struct {
	Path    string
	Format  Format
	Tensors []RawTensor
	closers []func() error
}

// Close releases memory-mapped files.
func (c *Checkpoint) Close() error {
	var errs []error
	for _, f := range c.closers {
		errs = append(errs, f())
	}
	c.closers = nil
	return errors.Join(errs...)
}

// ReadCheckpoint reads every tensor of a checkpoint file.
func ReadCheckpoint(path string) (*Checkpoint, error) {
	format, err := formatOf(path)
	if err != nil {
		return nil, err
	}
	c := &Checkpoint{Path: path, Format: format}
	switch format {
	case SafeTensors:
		err = c.addSafetensors(path)
	case SafeTensorsSharded:
		err = c.addShards(path, c.addSafetensors)
	case TorchBin:
		err = c.addTorch(path)
	case TorchBinSharded:
		err = c.addShards(path, c.addTorch)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	seen := map[string]bool{}
	for _, t := range c.Tensors {
		if seen[t.Name] {
			c.Close()
			return nil, fmt.Errorf("%s: tensor %s appears twice", path, t.Name)
		}
		seen[t.Name] = true
	}
	return c, nil
}

func (c *Checkpoint) addSafetensors(path string) error {
	f, err := safetensors.Open(path)
	if err != nil {
		return err
	}
	c.closers = append(c.closers, f.Close)
	for _, t := range f.Tensors {
		c.Tensors = append(c.Tensors, RawTensor(t))
	}
	return nil
}

func (c *Checkpoint) addTorch(path string) error {
	ts, err := torchbin.Open(path)
	if err != nil {
		return err
	}
	for _, t := range ts {
		c.Tensors = append(c.Tensors, RawTensor(t))
	}
	return nil
}

// canonicalName maps the tensor names of the BERT checkpoints in the wild
// onto the BertForPreTraining layout the model reads: encoder tensors
// with or without the "bert." prefix, and TF-era LayerNorm gamma/beta.
func canonicalName(name string) string {
	if strings.HasSuffix(name, ".gamma") {
		name = strings.TrimSuffix(name, ".gamma") + ".weight"
	} else if strings.HasSuffix(name, ".beta") {
		name = strings.TrimSuffix(name, ".beta") + ".bias"
	}
	for _, p := range []string{"embeddings.", "encoder.", "pooler."} {
		if strings.HasPrefix(name, p) {
			return "bert." + name
		}
	}
	return name
}

func isFloat(dt string) bool {
	return dt == "F32" || dt == "F16" || dt == "BF16" || dt == "F64"
}

// HostTensors converts the checkpoint's float tensors to host F32 tensors
// owned by s, keyed by canonical name. Integer buffers (position_ids) are
// skipped: they are not weights.
func (c *Checkpoint) HostTensors(s *nn.Scope) (map[string]*nn.Tensor, error) {
	out := map[string]*nn.Tensor{}
	from := map[string]string{}
	for _, t := range c.Tensors {
		if !isFloat(t.DType) {
			continue
		}
		name := canonicalName(t.Name)
		if prev, dup := from[name]; dup {
			return nil, fmt.Errorf("%s: tensors %s and %s both map to %s", c.Path, prev, t.Name, name)
		}
		from[name] = t.Name
		h, err := toF32(s, t)
		if err != nil {
			return nil, fmt.Errorf("%s: tensor %s: %w", c.Path, t.Name, err)
		}
		out[name] = h
	}
	return out, nil
}

func toF32(s *nn.Scope, t RawTensor) (*nn.Tensor, error) {
	n, err := nn.CheckedElements(t.Shape, 1<<40)
	if err != nil {
		return nil, err
	}
	size := map[string]int64{"F32": 4, "F16": 2, "BF16": 2, "F64": 8}[t.DType]
	if n*size != int64(len(t.Data)) {
		return nil, fmt.Errorf("%s %v needs %d bytes, has %d", t.DType, t.Shape, n*size, len(t.Data))
	}
	h := nn.NewHost(s, nn.F32, t.Shape...)
	dst := h.F32()
	switch t.DType {
	case "F32":
		copy(h.HostBytes(), t.Data)
	case "F16", "BF16":
		u := make([]uint16, n)
		for i := range u {
			u[i] = uint16(t.Data[2*i]) | uint16(t.Data[2*i+1])<<8
		}
		if t.DType == "F16" {
			kernels.F16ToF32(dst, u)
		} else {
			kernels.BF16ToF32(dst, u)
		}
	case "F64":
		for i := range dst {
			var bits uint64
			for j := 7; j >= 0; j-- {
				bits = bits<<8 | uint64(t.Data[8*i+j])
			}
			dst[i] = float32(math.Float64frombits(bits))
		}
	}
	return h, nil
}

// Model is a loaded model directory.
type Model struct {
	*bert.Model
	Dir        string
	Checkpoint string
	Format     Format
}

// Load reads the model in dir onto opts.Backend (the CPU when nil).
func Load(dir string, opts Options) (*Model, error) {
	be := opts.Backend
	if be == nil {
		be = nn.CPU{}
	}
	cfgPath := opts.Config
	if cfgPath == "" {
		cfgPath = filepath.Join(dir, "config.json")
	}
	cfg, err := bert.ReadConfig(cfgPath)
	if err != nil {
		return nil, explainLFS(filepath.Dir(cfgPath), err)
	}
	weights := opts.Weights
	if weights == "" {
		if weights, _, err = FindWeights(dir); err != nil {
			return nil, err
		}
	}
	ck, err := ReadCheckpoint(weights)
	if err != nil {
		return nil, explainLFS(filepath.Dir(weights), err)
	}
	defer ck.Close()
	host := nn.NewScope("host-weights")
	defer host.Close()
	ts, err := ck.HostTensors(host)
	if err != nil {
		return nil, err
	}
	m, err := bert.New(cfg, be, ts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", weights, ck.fileNames(err))
	}
	for _, t := range ck.Tensors {
		if !isFloat(t.DType) {
			m.Ignored = append(m.Ignored, t.Name)
		}
	}
	sort.Strings(m.Ignored)
	return &Model{Model: m, Dir: dir, Checkpoint: weights, Format: ck.Format}, nil
}
