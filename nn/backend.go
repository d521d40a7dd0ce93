package nn

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/bertstream/bertstream/kernels"
)

// Act and Pooling are the kernels' names for activations and poolings.
type (
	Act     = kernels.Act
	Pooling = kernels.Pooling
)

const (
	ActNone     = kernels.ActNone
	ActGELU     = kernels.ActGELU
	ActGELUTanh = kernels.ActGELUTanh
	ActReLU     = kernels.ActReLU
	ActTanh     = kernels.ActTanh

	PoolCLS  = kernels.PoolCLS
	PoolMean = kernels.PoolMean
	PoolMax  = kernels.PoolMax
)

// Backend runs BERT's operations on one device. Tensors passed to a
// backend must live on its device; outputs are written into tensors the
// caller allocated with New (so that a forward pass can reuse buffers).
// Activations are row-major; a tensor of shape [..., n] is read as a
// matrix of n columns. Operations may run asynchronously: their errors
// are about arguments (shapes, dtypes, devices); Sync reports failures of
// the device itself and waits for all queued work.
type Backend interface {
	// Name is the registry name ("cpu", "cuda").
	Name() string
	// Device names where this backend's tensors live ("cpu", "cuda:0").
	Device() string
	// Compute is the dtype activations are computed in.
	Compute() DType

	// New allocates a tensor owned by s; its contents are unspecified.
	New(s *Scope, dt DType, shape ...int) *Tensor
	// Upload copies a host tensor into a new tensor on the device, owned
	// by s, converting between float dtypes when dt differs from src's.
	// A host backend may share a read-only source (a view of a mapped
	// checkpoint) instead of copying it; the result is then read-only too.
	Upload(s *Scope, src *Tensor, dt DType) (*Tensor, error)
	// Download copies a device tensor into a new host tensor owned by s,
	// converted to dt (F32 for float tensors, usually).
	Download(s *Scope, t *Tensor, dt DType) (*Tensor, error)
	// Sync waits for queued work and reports a device failure.
	Sync() error

	// PrepareWeight readies w ([n,k], PyTorch Linear layout) for Linear,
	// once, at load (packing it into the layout the backend's GEMM reads
	// fastest); w must not change afterwards.
	PrepareWeight(w *Tensor) error
	// Linear computes out[m,n] = act(x[m,k] * w[n,k]^T + bias[n]); bias
	// may be nil.
	Linear(out, x, w, bias *Tensor, act Act) error
	// LayerNorm computes out = LayerNorm(x + res)*gamma + beta over the
	// last dimension: the residual add fused in front of the norm; res
	// may be nil, out may be x or res.
	LayerNorm(out, x, res, gamma, beta *Tensor, eps float32) error
	// Attention is fused multi-head self-attention over packed sequences:
	// qkv [n, 3H] holds the query, key and value projections of n tokens,
	// seqs [B+1] (I32) the offsets of B sequences among them (seqs[0] = 0,
	// non-decreasing, seqs[B] = n; no sequence longer than maxLen). Every
	// token is real (padding was removed) and attends only within its
	// sequence. out [n, H] gets softmax(scale*q k^T) v per head.
	Attention(out, qkv, seqs *Tensor, maxLen, heads int, scale float32) error
	// Embed computes the embeddings of n tokens: ids, positions and types
	// [n] (I32; types may be nil, all zero) select rows of word, pos and
	// typ, summed, then LayerNorm into out [n, H].
	Embed(out, ids, types, positions, word, pos, typ, gamma, beta *Tensor, eps float32) error
	// Gather copies rows idx (I32, on the device) of x [n, H] into out
	// [len(idx), H].
	Gather(out, x, idx *Tensor) error
	// Scatter is Gather's inverse, which puts packed rows back into a
	// padded batch: row i of x [m, H] goes to row idx[i] of out [n, H], and
	// the rows of out that no index names become zero. The indices must be
	// distinct.
	Scatter(out, x, idx *Tensor) error
	// Pool reduces the rows of each sequence of x [n, H] (offsets seqs
	// [B+1] as for Attention) to out [B, H].
	Pool(out, x, seqs *Tensor, p Pooling) error
}

// ErrUnsupported is wrapped by the error of an operation a backend does not
// implement, so that callers and the conformance suite can tell it apart
// from bad arguments.
var ErrUnsupported = errors.New("operation not supported by this backend")

// Factory opens a backend; opts come from the command line (device index,
// compute dtype) and are backend-specific.
type Factory func(opts Options) (Backend, error)

// Options configure a backend when it is opened.
type Options struct {
	// Device is the device index for GPU backends.
	Device int
	// Compute is the activation dtype; zero means the backend's default.
	Compute DType
	// Threads caps the CPU threads used; zero means all.
	Threads int
	// Kernels names the CPU kernel version (kernels.Versions: "avx512",
	// "avx2", "go") and BF16Kernels the CPU's BF16 micro-kernel
	// (kernels.BF16Versions); empty means the fastest this CPU runs.
	Kernels, BF16Kernels string
	// Int8 quantizes the linear layers to INT8: weights per output
	// channel at load, activations per token at run time, int32 sums (the
	// CPU backend; Int8Kernels names its micro-kernel, kernels.Int8Versions).
	// Other backends refuse it.
	Int8        bool
	Int8Kernels string
	// BLAS is the SGEMM of the CPU's F32 linear layers: "native" or
	// "gonum"; empty means the environment's BERTSTREAM_BLAS, else native.
	BLAS string
	// Tuning, when not nil, is a blocking measured on this CPU (see
	// kernels.ReadMeasured) that the CPU backend runs instead of the
	// table's.
	Tuning *kernels.Measured
}

var (
	registryMu sync.Mutex
	registry   = map[string]Factory{}
)

// Register makes a backend available by name. Backends call it from init.
func Register(name string, f Factory) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[name]; dup {
		panic("nn: backend registered twice: " + name)
	}
	registry[name] = f
}

// Backends lists the registered names.
func Backends() []string {
	registryMu.Lock()
	defer registryMu.Unlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Open opens the named backend.
func Open(name string, opts Options) (Backend, error) {
	registryMu.Lock()
	f, ok := registry[name]
	registryMu.Unlock()
	if !ok {
		return nil, fmt.Errorf("no backend %q (have %s)", name, strings.Join(Backends(), ", "))
	}
	if opts.Int8 && name != "cpu" {
		return nil, fmt.Errorf("open backend %q: INT8 linear layers are a CPU backend option", name)
	}
	b, err := f(opts)
	if err != nil {
		return nil, fmt.Errorf("open backend %q: %w", name, err)
	}
	return b, nil
}

// Regioner is implemented by backends that attribute work to named parts
// of a model (a profiler wrapping another backend): the model calls Region
// before each part ("embeddings", "layer 3", "heads").
type Regioner interface {
	Region(name string)
}

// Region tells be, if it keeps regions, that the work that follows belongs
// to name.
func Region(be Backend, name string) {
	if r, ok := be.(Regioner); ok {
		r.Region(name)
	}
}

// RowFuser is a backend that makes a weight of the rows of several host
// tensors ([ni, k] each) without concatenating them first, uploading them
// as Upload does: the CPU backend packs attention's fused query, key and
// value projections straight from the checkpoint's three tensors.
type RowFuser interface {
	FuseRows(s *Scope, parts ...*Tensor) (*Tensor, error)
}

// Packer is a backend whose PrepareWeight may leave work for a weight's
// first use (the CPU backend's packing); Pack does it now, and may run
// while Linear uses the weight.
type Packer interface {
	Pack(w *Tensor) error
}
