// Package nn holds the tensors, the compute backends and the scoped memory
// that the BERT model runs on.
//
// A Tensor is a shape, a dtype and storage that lives on one device. The
// Backend interface lists the operations BERT needs; a backend keeps its
// tensors on its own device and may run operations asynchronously (Sync
// waits), so nothing in the interface copies to the host behind the
// caller's back: Upload and Download are the only crossings. Every tensor
// belongs to a Scope; closing the scope frees it.
package nn

import (
	"fmt"
	"math"
	"math/bits"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/bertstream/bertstream/kernels"
)

// DType is a tensor's element type.
type DType uint8

const (
	F32 DType = iota + 1
	F16
	BF16
	I32
	I64
)

// Size is the number of bytes of one element.
func (d DType) Size() int {
	switch d {
	case F32, I32:
		return 4
	case F16, BF16:
		return 2
	case I64:
		return 8
	}
	return 0
}

func (d DType) String() string {
	switch d {
	case F32:
		return "F32"
	case F16:
		return "F16"
	case BF16:
		return "BF16"
	case I32:
		return "I32"
	case I64:
		return "I64"
	}
	return fmt.Sprintf("DType(%d)", uint8(d))
}

// ParseDType reads a dtype name as safetensors and the command line write
// it (case-insensitive: f32, F16, bf16, ...).
func ParseDType(s string) (DType, error) {
	switch strings.ToUpper(s) {
	case "F32", "FLOAT32", "FP32":
		return F32, nil
	case "F16", "FLOAT16", "FP16", "HALF":
		return F16, nil
	case "BF16", "BFLOAT16":
		return BF16, nil
	case "I32", "INT32":
		return I32, nil
	case "I64", "INT64":
		return I64, nil
	}
	return 0, fmt.Errorf("unknown dtype %q (want f32, f16, bf16, i32 or i64)", s)
}

// Storage is memory on one device, owned by the backend that made it.
type Storage interface {
	// Device names where the bytes live: "cpu", "cuda:0", ...
	Device() string
	// Bytes is the size of the allocation.
	Bytes() int64
	// Free releases the memory; it is called once, by the owning scope.
	Free()
}

// Tensor is a dense row-major array on one device.
type Tensor struct {
	shape []int
	dtype DType
	st    Storage
	scope *Scope
	freed bool
}

// NewTensor wraps storage that a backend allocated and registers it with
// scope s, which then owns it. Backends call this; users call Backend.New.
func NewTensor(s *Scope, st Storage, dt DType, shape ...int) *Tensor {
	t := &Tensor{shape: append([]int(nil), shape...), dtype: dt, st: st}
	s.own(t)
	return t
}

// Shape returns the dimensions; the slice must not be modified.
func (t *Tensor) Shape() []int { return t.shape }

// Dim returns dimension i; negative i counts from the end.
func (t *Tensor) Dim(i int) int {
	if i < 0 {
		i += len(t.shape)
	}
	return t.shape[i]
}

// Rank is the number of dimensions.
func (t *Tensor) Rank() int { return len(t.shape) }

// DType is the element type.
func (t *Tensor) DType() DType { return t.dtype }

// Len is the number of elements.
func (t *Tensor) Len() int { return NumElements(t.shape) }

// Storage is the memory behind the tensor.
func (t *Tensor) Storage() Storage { return t.st }

// Device names where the tensor lives.
func (t *Tensor) Device() string { return t.st.Device() }

// Rows is the product of all dimensions but the last: the number of rows
// when the tensor is read as a matrix of its last dimension.
func (t *Tensor) Rows() int {
	if len(t.shape) == 0 {
		return 1
	}
	return NumElements(t.shape[:len(t.shape)-1])
}

// Cols is the last dimension.
func (t *Tensor) Cols() int {
	if len(t.shape) == 0 {
		return 1
	}
	return t.shape[len(t.shape)-1]
}

func (t *Tensor) String() string {
	return fmt.Sprintf("%s%v@%s", t.dtype, t.shape, t.Device())
}

// Release frees t before its scope closes.
func (t *Tensor) Release() {
	if t.scope != nil {
		t.scope.release(t)
	}
}

// NumElements is the product of the dimensions (1 for a scalar).
func NumElements(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// CheckedElements is NumElements for shapes read from untrusted files: it
// reports a negative dimension or a product that overflows limit instead
// of wrapping around.
func CheckedElements(shape []int, limit int64) (int64, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension %d in shape %v", d, shape)
		}
		if d != 0 && n > limit/int64(d) {
			return 0, fmt.Errorf("shape %v holds more than %d elements", shape, limit)
		}
		n *= int64(d)
	}
	return n, nil
}

// SameShape reports whether two shapes are equal.
func SameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// HostStorage is memory in the Go heap: the CPU backend's tensors and the
// host side of uploads and downloads. Its words are 8-byte aligned so that
// any dtype can be viewed in place.
type HostStorage struct {
	buf []byte
	// Prepared holds what the CPU backend derived from the tensor once
	// (packed GEMM panels of a weight); it is dropped with the storage.
	Prepared any
	// words is the pooled allocation behind buf, returned to hostPool on
	// Free; nil for a storage of no bytes or a view.
	words []uint64
	// backing, when not nil, owns buf: the storage is a read-only view
	// (HostView) and Free drops its reference.
	backing *Backing
	// lazy, when not nil, stands for buf: F32 bytes that are made only
	// when read (and then kept), while the CPU backend packs a weight
	// straight from their source (FuseRows, HostConverted). backing is
	// then lazy's.
	lazy *lazyF32
}

// lazyF32 is the F32 bytes of read-only host tensors that are built only
// if something reads them: fused from several tensors, or converted from
// F16/BF16. Storages that share it hold references to its backing.
type lazyF32 struct {
	once sync.Once
	buf  []byte
	size int
	// rows returns the F32 rows in blocks, one after another, and what to
	// call once they are no longer needed (it returns the buffers it
	// built to the pool).
	rows func() ([][]float32, func())
	// fill, when not nil, writes the F32 values into dst, for bytes
	// without a buffer in between.
	fill func(dst []float32)
	// evict drops the pages of the source that can be read back.
	evict   func()
	backing *Backing
}

func (l *lazyF32) bytes() []byte {
	l.once.Do(func() {
		words := make([]uint64, (l.size+7)/8)
		if l.size == 0 {
			return
		}
		l.buf = unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), l.size)
		if l.fill != nil {
			l.fill(unsafe.Slice((*float32)(unsafe.Pointer(&words[0])), l.size/4))
		} else {
			parts, done := l.rows()
			at := 0
			for _, p := range parts {
				at += copy(l.buf[at:], f32Bytes(p))
			}
			done()
		}
		// The bytes are built: the source's pages are not needed.
		l.evict()
	})
	return l.buf
}

func f32Bytes(f []float32) []byte {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), 4*len(f))
}

// f32Rows returns the F32 rows of h in blocks, one after another, and what
// to call once they are no longer needed: a lazy storage's source,
// without building its bytes.
func (h *HostStorage) f32Rows() ([][]float32, func()) {
	if h.lazy != nil {
		return h.lazy.rows()
	}
	var f []float32
	if len(h.buf) >= 4 {
		f = unsafe.Slice((*float32)(unsafe.Pointer(&h.buf[0])), len(h.buf)/4)
	}
	return [][]float32{f}, func() {}
}

// evictSource drops the pages of h's bytes, or of a lazy storage's
// source, that a mapped file can read back.
func (h *HostStorage) evictSource() {
	switch {
	case h.lazy != nil:
		h.lazy.evict()
	case h.backing != nil:
		h.backing.Evict(h.buf)
	}
}

// share is a storage of the same read-only bytes as h (a view, a shared
// buffer or lazy bytes), holding a reference to their backing; nil when
// h's bytes are not read-only.
func (h *HostStorage) share() *HostStorage {
	switch {
	case h.lazy != nil:
		h.backing.refs.Add(1)
		return &HostStorage{lazy: h.lazy, backing: h.backing}
	case h.backing != nil:
		return shareHost(h.backing, h.buf)
	}
	return nil
}

// HostConverted makes a host F32 tensor owned by s of the F16 or BF16
// elements data, a part of b, without converting them: the CPU backend
// packs a weight from a converted copy that it drops once packed, and the
// F32 bytes are made (once) only if something reads them. data must stay
// unchanged, as a mapped checkpoint does.
func HostConverted(s *Scope, b *Backing, data []byte, from DType, shape ...int) (*Tensor, error) {
	if from != F16 && from != BF16 {
		return nil, fmt.Errorf("HostConverted from %s: want F16 or BF16", from)
	}
	n := NumElements(shape)
	if 2*n != len(data) {
		return nil, fmt.Errorf("%s %v needs %d bytes, the view has %d", from, shape, 2*n, len(data))
	}
	if n > 0 && uintptr(unsafe.Pointer(&data[0]))%2 != 0 {
		return nil, fmt.Errorf("%s %v: data is not aligned to 2 bytes", from, shape)
	}
	var u []uint16
	if n > 0 {
		u = unsafe.Slice((*uint16)(unsafe.Pointer(&data[0])), n)
	}
	b.refs.Add(1)
	l := &lazyF32{size: 4 * n, backing: b, evict: func() { b.Evict(data) }}
	l.fill = func(dst []float32) {
		if from == F16 {
			kernels.F16ToF32(dst, u)
		} else {
			kernels.BF16ToF32(dst, u)
		}
	}
	l.rows = func() ([][]float32, func()) {
		words := getWords((n + 1) / 2)
		var f []float32
		if n > 0 {
			f = unsafe.Slice((*float32)(unsafe.Pointer(&words[0])), n)
		}
		l.fill(f)
		return [][]float32{f}, func() { putWords(words) }
	}
	return NewTensor(s, &HostStorage{lazy: l, backing: b}, F32, shape...), nil
}

// Backing is memory that host tensors view in place instead of holding
// a copy of: a memory-mapped checkpoint, or a buffer the loader filled
// once. The maker holds one reference and each view one more; the last
// Release closes it (unmaps the file), so a model that keeps viewing a
// mapped checkpoint keeps it mapped and nothing else does.
type Backing struct {
	refs  atomic.Int64
	close func() error
	evict func([]byte)
}

// NewBacking returns a backing holding its maker's reference. close
// (which may be nil) runs when the last reference is released; evict
// (which may be nil) drops the pages of a range from memory without
// losing their contents, as madvise(MADV_DONTNEED) does on a mapped
// file, which reads them back if they are touched again.
func NewBacking(close func() error, evict func([]byte)) *Backing {
	b := &Backing{close: close, evict: evict}
	b.refs.Store(1)
	return b
}

// Release drops one reference; the last closes the backing.
func (b *Backing) Release() error {
	switch n := b.refs.Add(-1); {
	case n == 0 && b.close != nil:
		return b.close()
	case n < 0:
		panic("nn: Backing released more often than acquired")
	}
	return nil
}

// Evict tells the backing that p, a part of it, is not needed for now:
// a mapped file's pages leave the process's resident set. Reading p again
// is still correct (it faults the pages back in); for memory that cannot
// be read back it does nothing.
func (b *Backing) Evict(p []byte) {
	if b.evict != nil && len(p) > 0 {
		b.evict(p)
	}
}

// HostView makes a host tensor owned by s that views data, a part of b,
// in place: no copy. data must hold exactly the tensor's bytes, aligned to
// its element size, and nobody may write to it (a mapped checkpoint is
// read-only). The CPU backend's Upload shares a view's bytes instead of
// copying them.
func HostView(s *Scope, b *Backing, data []byte, dt DType, shape ...int) (*Tensor, error) {
	if n := NumElements(shape) * dt.Size(); n != len(data) {
		return nil, fmt.Errorf("%s %v needs %d bytes, the view has %d", dt, shape, n, len(data))
	}
	if len(data) > 0 && uintptr(unsafe.Pointer(&data[0]))%uintptr(dt.Size()) != 0 {
		return nil, fmt.Errorf("%s %v: data is not aligned to %d bytes", dt, shape, dt.Size())
	}
	return NewTensor(s, shareHost(b, data), dt, shape...), nil
}

// NewHostShared allocates a zeroed host tensor owned by s that, like a
// HostView, the CPU backend's Upload shares instead of copying: for a
// weight that is built once on the host (converted, concatenated) and not
// written after it is uploaded.
func NewHostShared(s *Scope, dt DType, shape ...int) *Tensor {
	return NewTensor(s, newSharedStorage(NumElements(shape)*dt.Size()), dt, shape...)
}

// newSharedStorage allocates n zeroed bytes that Upload shares.
func newSharedStorage(n int) *HostStorage {
	words := make([]uint64, (n+7)/8)
	var buf []byte
	if n > 0 {
		buf = unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), n)
	}
	b := NewBacking(nil, nil)
	defer b.Release()
	return shareHost(b, buf)
}

// shareHost is a storage viewing data of b, holding a reference to b.
func shareHost(b *Backing, data []byte) *HostStorage {
	if b.refs.Add(1) <= 1 {
		panic("nn: view of a released Backing")
	}
	return &HostStorage{buf: data, backing: b}
}

// hostPool keeps the buffers of freed host tensors by size class. A forward
// pass makes and frees the same activation shapes batch after batch, so in
// its steady state every allocation is served from here and the Go heap
// does not grow or churn. Buffers are kept by class, not by exact size:
// the shapes of a batch follow its longest input, and a server sees a new
// length every few batches; kept by exact size, each new shape would be a
// fresh allocation (page faults and zeroing by the kernel, which cost a
// third of the CPU time of a small model's batch), and the pool would fill
// with buffers of lengths that do not come back. Idle bytes are capped;
// beyond the cap freed buffers go to the garbage collector.
var hostPool = struct {
	sync.Mutex
	free map[int][][]uint64 // by capacity in words, a size class
	idle int64
}{free: map[int][][]uint64{}}

// MaxIdleHostBytes caps the memory hostPool keeps for reuse.
const MaxIdleHostBytes = 1 << 30

// wordClass is the capacity of the buffer that holds n words: n rounded up
// to four steps per doubling (5/8, 6/8, 7/8 and 8/8 of a power of two), so
// that a buffer is at most a quarter larger than asked for and serves every
// length within its step.
func wordClass(n int) int {
	s := bits.Len(uint(n-1)) - 3
	if s <= 0 {
		return n
	}
	return ((n-1)>>s + 1) << s
}

func getWords(n int) []uint64 {
	c := wordClass(n)
	hostPool.Lock()
	if l := hostPool.free[c]; len(l) > 0 {
		w := l[len(l)-1]
		l[len(l)-1] = nil
		hostPool.free[c] = l[:len(l)-1]
		hostPool.idle -= int64(8 * c)
		hostPool.Unlock()
		return w[:n]
	}
	hostPool.Unlock()
	return make([]uint64, n, c)
}

func putWords(w []uint64) {
	c := cap(w)
	hostPool.Lock()
	defer hostPool.Unlock()
	if hostPool.idle+int64(8*c) > MaxIdleHostBytes {
		return
	}
	hostPool.free[c] = append(hostPool.free[c], w[:c])
	hostPool.idle += int64(8 * c)
}

// NewHostStorage allocates n zeroed bytes.
func NewHostStorage(n int) *HostStorage {
	h := newHostStorage(n)
	clear(h.words)
	return h
}

// newHostStorage allocates n bytes whose contents are unspecified (reused
// buffers keep old values): for outputs that an operation overwrites.
func newHostStorage(n int) *HostStorage {
	h := &HostStorage{}
	if n > 0 {
		h.words = getWords((n + 7) / 8)
		h.buf = unsafe.Slice((*byte)(unsafe.Pointer(&h.words[0])), n)
	}
	return h
}

func (h *HostStorage) Device() string { return "cpu" }
func (h *HostStorage) Bytes() int64 {
	if h.lazy != nil {
		return int64(h.lazy.size)
	}
	return int64(len(h.buf))
}
func (h *HostStorage) Free() {
	if h.words != nil {
		putWords(h.words)
	}
	if h.backing != nil {
		// Unmapping fails only on a bad address, which a view cannot hold.
		_ = h.backing.Release()
	}
	h.buf, h.words, h.backing, h.lazy = nil, nil, nil, nil
	h.Prepared = nil
}

// Raw is the storage's bytes.
func (h *HostStorage) Raw() []byte {
	if h.lazy != nil {
		return h.lazy.bytes()
	}
	return h.buf
}

func hostBytes(t *Tensor) []byte {
	h, ok := t.st.(*HostStorage)
	if !ok {
		panic(fmt.Sprintf("nn: tensor %v is not in host memory", t))
	}
	if t.freed {
		panic(fmt.Sprintf("nn: tensor %v used after its scope closed", t))
	}
	return h.Raw()
}

func view[T any](t *Tensor, want DType) []T {
	if t.dtype != want {
		panic(fmt.Sprintf("nn: tensor %v viewed as %s", t, want))
	}
	b := hostBytes(t)
	n := t.Len()
	if n == 0 {
		return nil
	}
	var zero T
	if uintptr(len(b)) < uintptr(n)*unsafe.Sizeof(zero) {
		panic(fmt.Sprintf("nn: tensor %v larger than its storage", t))
	}
	return unsafe.Slice((*T)(unsafe.Pointer(&b[0])), n)
}

// F32 views a host F32 tensor's elements. It panics on another dtype or
// device: that is a programming error, not bad input.
func (t *Tensor) F32() []float32 { return view[float32](t, F32) }

// U16 views a host F16 or BF16 tensor's raw 16-bit elements.
func (t *Tensor) U16() []uint16 {
	if t.dtype == BF16 {
		return view[uint16](&Tensor{shape: t.shape, dtype: F16, st: t.st}, F16)
	}
	return view[uint16](t, F16)
}

// I32 views a host I32 tensor's elements.
func (t *Tensor) I32() []int32 { return view[int32](t, I32) }

// I64 views a host I64 tensor's elements.
func (t *Tensor) I64() []int64 { return view[int64](t, I64) }

// HostBytes returns the raw little-endian bytes of a host tensor.
func (t *Tensor) HostBytes() []byte {
	return hostBytes(t)[:t.Len()*t.dtype.Size()]
}

// NewHost allocates a zeroed host tensor owned by s.
func NewHost(s *Scope, dt DType, shape ...int) *Tensor {
	return NewTensor(s, NewHostStorage(NumElements(shape)*dt.Size()), dt, shape...)
}

// newHostUninit allocates a host tensor whose contents are unspecified.
func newHostUninit(s *Scope, dt DType, shape ...int) *Tensor {
	return NewTensor(s, newHostStorage(NumElements(shape)*dt.Size()), dt, shape...)
}

// HostF32 makes a host F32 tensor owned by s holding a copy of data.
func HostF32(s *Scope, data []float32, shape ...int) (*Tensor, error) {
	if NumElements(shape) != len(data) {
		return nil, fmt.Errorf("%d values do not fill shape %v", len(data), shape)
	}
	t := NewHost(s, F32, shape...)
	copy(t.F32(), data)
	return t, nil
}

// HostI32 makes a host I32 tensor owned by s holding a copy of data.
func HostI32(s *Scope, data []int32, shape ...int) (*Tensor, error) {
	if NumElements(shape) != len(data) {
		return nil, fmt.Errorf("%d values do not fill shape %v", len(data), shape)
	}
	t := NewHost(s, I32, shape...)
	copy(t.I32(), data)
	return t, nil
}

// MaxAbsDiff is the largest |a-b| over two host F32 tensors of one shape;
// NaN anywhere makes it +Inf so that a comparison cannot pass by accident.
func MaxAbsDiff(a, b []float32) float64 {
	var m float64
	for i := range a {
		d := math.Abs(float64(a[i]) - float64(b[i]))
		if math.IsNaN(d) {
			return math.Inf(1)
		}
		m = math.Max(m, d)
	}
	return m
}
