//go:build cuda

// Package cuda is bertstream's NVIDIA GPU backend: an nn.Backend on one
// device, with the driver API through gorgonia.org/cu (device, primary
// context, one stream, a memory pool, the kernels of kernels/gpu loaded
// from their embedded PTX and launched as kernels/gpu configures them),
// cuBLAS and cuBLASLt loaded at run time through a small cgo shim, and
// F32, F16 or BF16 compute with F32 accumulation. Weights are uploaded
// once; activations stay on the device; Upload and Download are the only
// copies.
//
// It registers itself as "cuda" with nn. Without a usable device, Open
// returns an error wrapping ErrNoDevice.
package cuda

/*
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/bertstream/bertstream/kernels/gpu"
	"github.com/bertstream/bertstream/nn"
)

func init() {
	nn.Register("cuda", func(o nn.Options) (nn.Backend, error) {
		return Open(Config{Device: o.Device, Compute: o.Compute, CublasPath: os.Getenv(LibraryPathEnv)})
	})
}

// ErrNoDevice is wrapped by Open's error when this machine has no CUDA
// device the driver can use (no driver, cuInit failing, no GPU).
var ErrNoDevice = errors.New("no usable CUDA device")

// Config says which device to open and how.
type Config struct {
	// Device is the ordinal of the GPU.
	Device int
	// Compute is the activation dtype: F32 (zero means F32), F16 or BF16.
	Compute nn.DType
	// CublasPath is where cuBLAS is (see LibraryPathEnv); empty searches
	// the dynamic loader's path.
	CublasPath string
}

// Info describes an opened device.
type Info struct {
	Device        string // "cuda:0"
	Name          string // "NVIDIA H100 80GB HBM3"
	Capability    [2]int // compute capability, {9, 0} for an H100
	Memory        int64  // bytes
	Driver        int    // CUDA version the driver supports: 12040 for 12.4
	Cublas        string // the libcublas loaded
	CublasVersion int    // 120304 for 12.3.4
}

// workspaceBytes is cuBLAS's and cuBLASLt's scratch: 32 MiB is what
// NVIDIA recommends for Hopper, enough for split-K on every BERT shape.
const workspaceBytes = 32 << 20

// Backend is the GPU nn.Backend. Its methods are safe for concurrent use;
// they queue work on one stream in the order they are called.
type Backend struct {
	info    Info
	dt      nn.DType
	kt      gpu.Type // dt, as the kernels name it
	args    nn.Args
	dev     cu.Device
	ctx     cu.CUContext
	stream  cu.Stream
	modules []cu.Module
	fns     map[string]cu.Function
	pool    *pool
	ws      cu.DevicePtr
	blas    *blas

	mu     sync.Mutex
	closed bool
}

var _ nn.Backend = (*Backend)(nil)

// cuError names a CUDA driver result code that came through the shim.
func cuError(code C.int) string {
	return fmt.Sprintf("%s (CUresult %d)", C.GoString(C.bs_cu_error_string(code)), int(code))
}

// Open opens device c.Device.
func Open(c Config) (*Backend, error) {
	dt := c.Compute
	if dt == 0 {
		dt = nn.F32
	}
	if dt != nn.F32 && dt != nn.F16 && dt != nn.BF16 {
		return nil, fmt.Errorf("the CUDA backend computes in F32, F16 or BF16, not %s", dt)
	}
	if r := C.bs_cu_init_result(); r != 0 {
		return nil, fmt.Errorf("%w: cuInit: %s", ErrNoDevice, cuError(r))
	}
	count, err := cu.NumDevices()
	if err != nil {
		return nil, fmt.Errorf("%w: count devices: %v", ErrNoDevice, err)
	}
	if count == 0 {
		return nil, fmt.Errorf("%w: the driver sees no GPU", ErrNoDevice)
	}
	if c.Device < 0 || c.Device >= count {
		return nil, fmt.Errorf("no CUDA device %d: this machine has %d", c.Device, count)
	}
	b := &Backend{dt: dt, kt: kernelType(dt), fns: map[string]cu.Function{}}
	b.args = b.newArgs()
	b.info.Device = fmt.Sprintf("cuda:%d", c.Device)
	b.info.Driver = cu.Version()
	if b.dev, err = cu.GetDevice(c.Device); err != nil {
		return nil, fmt.Errorf("get %s: %w", b.info.Device, err)
	}
	if err := b.describe(); err != nil {
		return nil, err
	}
	if b.info.Capability[0] < 8 {
		return nil, fmt.Errorf("%s (%s) has compute capability %d.%d; the kernels need 8.0 (A100) or newer",
			b.info.Device, b.info.Name, b.info.Capability[0], b.info.Capability[1])
	}
	cublasPath, err := loadCublas(c.CublasPath, b.info.Driver/1000)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.info.Device, err)
	}
	b.info.Cublas = cublasPath

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if b.ctx, err = b.dev.RetainPrimaryCtx(); err != nil {
		return nil, fmt.Errorf("retain the primary context of %s: %w", b.info.Device, err)
	}
	b.pool = newPool(b.info.Device)
	if err := b.start(); err != nil {
		b.stop()
		return nil, fmt.Errorf("open %s: %w", b.info.Device, err)
	}
	return b, nil
}

func (b *Backend) describe() error {
	var err error
	if b.info.Name, err = b.dev.Name(); err != nil {
		return fmt.Errorf("name of %s: %w", b.info.Device, err)
	}
	if b.info.Memory, err = b.dev.TotalMem(); err != nil {
		return fmt.Errorf("memory of %s: %w", b.info.Device, err)
	}
	for i, a := range []cu.DeviceAttribute{cu.ComputeCapabilityMajor, cu.ComputeCapabilityMinor} {
		if b.info.Capability[i], err = b.dev.Attribute(a); err != nil {
			return fmt.Errorf("compute capability of %s: %w", b.info.Device, err)
		}
	}
	return nil
}

// start makes the stream, loads the kernels, and sets up the pool and
// cuBLAS; the primary context is current on this (locked) thread.
func (b *Backend) start() error {
	if err := cu.SetCurrentContext(b.ctx); err != nil {
		return fmt.Errorf("make the context current: %w", err)
	}
	var err error
	if b.stream, err = cu.MakeStream(cu.NonBlocking); err != nil {
		return fmt.Errorf("create a stream: %w", err)
	}
	for _, m := range gpu.Modules() {
		// The driver compiles the PTX for this GPU here (and caches the
		// result under ~/.nv/ComputeCache).
		mod, err := cu.LoadData(m.PTX)
		if err != nil {
			return fmt.Errorf("load the %s kernels (PTX for %s): %w", m.Name, gpu.Arch, err)
		}
		b.modules = append(b.modules, mod)
		// Every kernel that a launch may name is looked up now, so that a
		// PTX that lacks one fails Open rather than a forward pass.
		for _, name := range m.Kernels {
			if b.fns[name], err = mod.Function(name); err != nil {
				return fmt.Errorf("kernel %s in %s.ptx: %w", name, m.Name, err)
			}
		}
	}
	// The workspace lives as long as the backend, outside the pool.
	if b.ws, err = cu.MemAlloc(workspaceBytes); err != nil {
		return fmt.Errorf("allocate the cuBLAS workspace: %w", err)
	}
	if b.blas, err = newBlas(b.stream, b.ws, workspaceBytes, cudaType(b.dt)); err != nil {
		return err
	}
	b.info.CublasVersion = b.blas.version
	return nil
}

// stop releases what start made; the context is current.
func (b *Backend) stop() {
	if b.blas != nil {
		b.blas.close()
	}
	if b.stream != (cu.Stream{}) {
		b.stream.Synchronize()
	}
	if b.pool != nil {
		b.pool.release()
		b.pool.mu.Lock()
		b.pool.closed = true
		b.pool.mu.Unlock()
	}
	if b.ws != 0 {
		cu.MemFree(b.ws)
	}
	for _, m := range b.modules {
		m.Unload()
	}
	if b.stream != (cu.Stream{}) {
		b.stream.Destroy()
	}
	b.dev.ReleasePrimaryCtx()
}

// Close waits for queued work and releases the device. Tensors of the
// backend must not be used afterwards; closing their scopes is harmless.
func (b *Backend) Close() error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.leave()
	err := b.syncLocked()
	b.stop()
	b.closed = true
	return err
}

// Info describes the device.
func (b *Backend) Info() Info { return b.info }

// MemStats reports the device bytes held by live tensors and the bytes
// the pool keeps cached for reuse.
func (b *Backend) MemStats() (inUse, cached int64) { return b.pool.stats() }

var errClosed = errors.New("the CUDA backend is closed")

// enter makes the backend's context current on this goroutine's thread
// for the calls that follow, until leave; the driver keeps the current
// context per OS thread, and Go moves goroutines between threads.
func (b *Backend) enter() error {
	b.mu.Lock()
	runtime.LockOSThread()
	if b.closed {
		b.leave()
		return errClosed
	}
	if err := cu.SetCurrentContext(b.ctx); err != nil {
		b.leave()
		return fmt.Errorf("make the %s context current: %w", b.info.Device, err)
	}
	return nil
}

func (b *Backend) leave() {
	runtime.UnlockOSThread()
	b.mu.Unlock()
}

func (b *Backend) Name() string      { return "cuda" }
func (b *Backend) Device() string    { return b.info.Device }
func (b *Backend) Compute() nn.DType { return b.dt }

func (b *Backend) String() string {
	return fmt.Sprintf("%s %s (sm_%d%d, %s compute, %s)", b.info.Device, b.info.Name, b.info.Capability[0], b.info.Capability[1], b.dt, b.info.Cublas)
}

// Sync waits for queued work and reports a failure of the device.
func (b *Backend) Sync() error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.leave()
	return b.syncLocked()
}

func (b *Backend) syncLocked() error {
	if err := b.stream.Synchronize(); err != nil {
		return fmt.Errorf("%s: %w", b.info.Device, err)
	}
	return nil
}

// New allocates a tensor owned by s. When the device is out of memory
// the tensor carries the error, and the first operation given it reports
// it: nn.Backend.New has no error to return.
func (b *Backend) New(s *nn.Scope, dt nn.DType, shape ...int) *nn.Tensor {
	st := &storage{pool: b.pool, size: int64(nn.NumElements(shape) * dt.Size())}
	if err := b.enter(); err != nil {
		st.err = err
	} else {
		st.err = b.allocLocked(st)
		b.leave()
	}
	return nn.NewTensor(s, st, dt, shape...)
}

// allocLocked gives st its device memory; a tensor of no elements gets
// none.
func (b *Backend) allocLocked(st *storage) error {
	if st.size == 0 {
		return nil
	}
	var err error
	st.ptr, st.class, err = b.pool.alloc(st.size, b.syncLocked)
	return err
}

// scratch is device memory for the duration of one call (the F32 side of
// a conversion); done hands it back to the pool, and work queued after
// may reuse it while earlier work still reads it, in stream order.
func (b *Backend) scratch(bytes int64) (cu.DevicePtr, func(), error) {
	if bytes == 0 {
		return 0, func() {}, nil
	}
	ptr, c, err := b.pool.alloc(bytes, b.syncLocked)
	if err != nil {
		return 0, nil, err
	}
	return ptr, func() { b.pool.put(ptr, c) }, nil
}

// hostBytes is the address of a host byte slice, for a copy.
func hostBytes(p []byte) unsafe.Pointer { return unsafe.Pointer(&p[0]) }

// cudaType is the cuBLAS data type of a float dtype.
func cudaType(dt nn.DType) int {
	switch dt {
	case nn.F16:
		return cudaR16F
	case nn.BF16:
		return cudaR16BF
	}
	return cudaR32F
}

// kernelType is the kernels' name for a float dtype.
func kernelType(dt nn.DType) gpu.Type {
	switch dt {
	case nn.F16:
		return gpu.F16
	case nn.BF16:
		return gpu.BF16
	}
	return gpu.F32
}
