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
	"unsafe"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/kernels"
	"github.com/bertstream/bertstream/loader/internal/mmap"
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
// shape and little-endian bytes, which alias the mapped file where the
// format allows.
type RawTensor struct {
	Name  string
	DType string
	Shape []int
	Data  []byte
	// backing owns Data: the mapped file, whose pages host tensors view.
	backing *nn.Backing
}

// Checkpoint is the tensors of a checkpoint file (all shards).
type Checkpoint struct {
	Path     string
	Format   Format
	Tensors  []RawTensor
	backings []*nn.Backing
}

// Close releases the checkpoint's hold on its mapped files. Host tensors
// that view them (HostTensors, and the weights a CPU model shares with
// them) keep them mapped until they are freed.
func (c *Checkpoint) Close() error {
	var errs []error
	for _, b := range c.backings {
		errs = append(errs, b.Release())
	}
	c.backings = nil
	return errors.Join(errs...)
}

// ReadCheckpoint reads the index of every tensor of a checkpoint file;
// the data stays in the mapped file until it is used.
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
	b := nn.NewBacking(f.Close, f.Evict)
	c.backings = append(c.backings, b)
	for _, t := range f.Tensors {
		c.Tensors = append(c.Tensors, RawTensor{t.Name, t.DType, t.Shape, t.Data, b})
	}
	return nil
}

func (c *Checkpoint) addTorch(path string) error {
	f, err := torchbin.Open(path)
	if err != nil {
		return err
	}
	b := nn.NewBacking(f.Close, f.Evict)
	c.backings = append(c.backings, b)
	for _, t := range f.Tensors {
		c.Tensors = append(c.Tensors, RawTensor{t.Name, t.DType, t.Shape, t.Data, b})
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

// HostTensors gives the checkpoint's float tensors as host F32 tensors
// owned by s, keyed by canonical name. F32 data is viewed in place in the
// mapped file (nn.HostView), not copied; F16 and BF16 are converted when
// read (nn.HostConverted), F64 once into the Go heap. Integer buffers (position_ids) are skipped: they
// are not weights.
func (c *Checkpoint) HostTensors(s *nn.Scope) (map[string]*nn.Tensor, error) {
	return c.floats(s, toF32)
}

// floats makes a host tensor with conv for each float tensor, keyed by
// canonical name.
func (c *Checkpoint) floats(s *nn.Scope, conv converter) (map[string]*nn.Tensor, error) {
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
		h, err := conv(s, t)
		if err != nil {
			return nil, fmt.Errorf("%s: tensor %s: %w", c.Path, t.Name, err)
		}
		out[name] = h
	}
	return out, nil
}

// checkSize returns the number of elements of t, checking that its data
// holds them.
func checkSize(t RawTensor) (int64, error) {
	n, err := nn.CheckedElements(t.Shape, 1<<40)
	if err != nil {
		return 0, err
	}
	size := map[string]int64{"F32": 4, "F16": 2, "BF16": 2, "F64": 8}[t.DType]
	if n*size != int64(len(t.Data)) {
		return 0, fmt.Errorf("%s %v needs %d bytes, has %d", t.DType, t.Shape, n*size, len(t.Data))
	}
	return n, nil
}

func toF32(s *nn.Scope, t RawTensor) (*nn.Tensor, error) {
	n, err := checkSize(t)
	if err != nil {
		return nil, err
	}
	if t.DType == "F32" && t.backing != nil && aligned(t.Data, 4) {
		return nn.HostView(s, t.backing, t.Data, nn.F32, t.Shape...)
	}
	if (t.DType == "F16" || t.DType == "BF16") && t.backing != nil && aligned(t.Data, 2) {
		// Converted when used: the CPU backend packs a weight from a
		// converted copy that it drops after, so F32 is never held twice.
		from := map[string]nn.DType{"F16": nn.F16, "BF16": nn.BF16}[t.DType]
		return nn.HostConverted(s, t.backing, t.Data, from, t.Shape...)
	}
	// Converted (or, misaligned, copied) once into a tensor that the CPU
	// backend's Upload shares rather than copying again.
	h := nn.NewHostShared(s, nn.F32, t.Shape...)
	dst := h.F32()
	switch t.DType {
	case "F32":
		copy(h.HostBytes(), t.Data)
	case "F16", "BF16":
		var u []uint16
		if aligned(t.Data, 2) {
			u = unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(t.Data))), n)
		} else {
			u = make([]uint16, n)
			for i := range u {
				u[i] = uint16(t.Data[2*i]) | uint16(t.Data[2*i+1])<<8
			}
		}
		if t.DType == "F16" {
			kernels.F16ToF32(dst, u)
		} else {
			kernels.BF16ToF32(dst, u)
		}
		if t.backing != nil {
			t.backing.Evict(t.Data)
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

// aligned reports whether b starts at a multiple of n bytes, so that it
// can be viewed as n-byte elements. The machines this runs on are little
// endian, as the checkpoint formats are.
func aligned(b []byte, n uintptr) bool {
	return len(b) == 0 || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%n == 0
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
	return load(dir, opts, be, func(*Checkpoint) converter { return toF32 })
}

// converter makes the host tensor of a checkpoint tensor.
type converter func(*nn.Scope, RawTensor) (*nn.Tensor, error)

// Info is what Inspect finds in a model directory.
type Info struct {
	Arch    string
	Config  bert.Config
	Labels  []string
	Heads   []string // of pooler, mlm, nsp, sequence-classifier, token-classifier
	Ignored []string // checkpoint tensors the model does not use
	Format  Format
}

// Inspect checks the model in dir as Load does (the config, every
// tensor's name, dtype, shape and byte size, the heads) without reading
// the weights: the model is built from stand-ins of the checkpoint's
// shapes that view one buffer of zeros, and closed. It costs the
// checkpoint's header, not its size.
func Inspect(dir string, opts Options) (*Info, error) {
	var zeros *nn.Backing
	defer func() {
		if zeros != nil {
			zeros.Release()
		}
	}()
	var zerr error
	m, err := load(dir, opts, unprepared{}, func(ck *Checkpoint) converter {
		var most int64
		for _, t := range ck.Tensors {
			// Twice the bytes: an F16 tensor's stand-in is F32.
			most = max(most, 2*int64(len(t.Data)))
		}
		z, err := mmap.Zeros(int(most))
		if err != nil {
			zerr = err
			return func(*nn.Scope, RawTensor) (*nn.Tensor, error) { return nil, err }
		}
		zeros = nn.NewBacking(z.Close, nil)
		buf := z.Data
		return func(s *nn.Scope, t RawTensor) (*nn.Tensor, error) {
			n, err := checkSize(t)
			if err != nil {
				return nil, err
			}
			return nn.HostView(s, zeros, buf[:4*n], nn.F32, t.Shape...)
		}
	})
	if zerr != nil {
		return nil, zerr
	}
	if err != nil {
		return nil, err
	}
	defer m.Close()
	info := &Info{Arch: m.Arch, Config: m.Config, Labels: m.Labels, Ignored: m.Ignored, Format: m.Format}
	for _, h := range []struct {
		name string
		ok   bool
	}{{"pooler", m.HasPooler()}, {"mlm", m.HasMLM()}, {"nsp", m.HasNSP()}, {"sequence-classifier", m.HasClassifier()}, {"token-classifier", m.HasTokenClassifier()}} {
		if h.ok {
			info.Heads = append(info.Heads, h.name)
		}
	}
	return info, nil
}

// unprepared is the CPU backend without the packing of weights, for
// models that only Inspect builds.
type unprepared struct{ nn.CPU }

func (unprepared) PrepareWeight(*nn.Tensor) error { return nil }

func load(dir string, opts Options, be nn.Backend, conv func(*Checkpoint) converter) (*Model, error) {
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
	ts, err := ck.floats(host, conv(ck))
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
