package torchbin

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
)

// dtypeSize is the element size in bytes of each supported dtype.
var dtypeSize = map[string]int{
	"F64": 8, "F32": 4, "F16": 2, "BF16": 2,
	"I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
}

// storageRef is a torch storage named by a persistent id. Its bytes are
// known when the pickle is read (zip format) or only after it (legacy
// format, where the storages follow the pickles), so tensors keep a
// reference and are materialized once every storage has data.
type storageRef struct {
	key   string
	dtype string
	numel int64 // as declared by the persistent id
	data  []byte
	// base and offset (in elements) describe a legacy storage view: this
	// storage is base's elements [offset, offset+numel).
	base   *storageRef
	offset int64
}

// bytes returns the storage's data, resolving a view through its base.
func (s *storageRef) bytes() ([]byte, error) {
	if s.base == nil {
		if s.data == nil && s.numel > 0 {
			return nil, fmt.Errorf("storage %q has no data", s.key)
		}
		return s.data, nil
	}
	b, err := s.base.bytes()
	if err != nil {
		return nil, err
	}
	es := int64(dtypeSize[s.dtype])
	lo, hi := s.offset*es, (s.offset+s.numel)*es
	if hi > int64(len(b)) {
		return nil, fmt.Errorf("storage view %q [%d, %d) lies outside storage %q of %d bytes",
			s.key, lo, hi, s.base.key, len(b))
	}
	return b[lo:hi:hi], nil
}

// tensorRef is the result of torch._utils._rebuild_tensor_v2: a strided
// view of a storage, not yet copied out.
type tensorRef struct {
	storage *storageRef
	offset  int64
	shape   []int
	stride  []int64
}

// maxElems bounds every element count and index so that byte sizes, which
// multiply by at most 8, never overflow an int64.
const maxElems = math.MaxInt64 / 16

// rebuildTensor implements
// _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
// backward_hooks[, metadata]); only the first four matter for inference.
func rebuildTensor(args []any) (*tensorRef, error) {
	if len(args) != 6 && len(args) != 7 {
		return nil, fmt.Errorf("takes 6 or 7 arguments, got %d", len(args))
	}
	st, ok := args[0].(*storageRef)
	if !ok {
		return nil, fmt.Errorf("storage is %s, not a storage", typeName(args[0]))
	}
	off, ok := args[1].(int64)
	if !ok || off < 0 || off > maxElems {
		return nil, fmt.Errorf("bad storage offset %v", args[1])
	}
	size, ok := args[2].(pyTuple)
	if !ok {
		return nil, fmt.Errorf("size is %s, not a tuple", typeName(args[2]))
	}
	stride, ok := args[3].(pyTuple)
	if !ok {
		return nil, fmt.Errorf("stride is %s, not a tuple", typeName(args[3]))
	}
	if len(size) != len(stride) {
		return nil, fmt.Errorf("size has %d dimensions, stride %d", len(size), len(stride))
	}
	t := &tensorRef{storage: st, offset: off, shape: make([]int, len(size)), stride: make([]int64, len(size))}
	numel := int64(1)
	for i := range size {
		n, ok := size[i].(int64)
		if !ok || n < 0 || n > maxElems {
			return nil, fmt.Errorf("bad size %v in dimension %d", size[i], i)
		}
		s, ok := stride[i].(int64)
		if !ok || s < 0 || s > maxElems {
			return nil, fmt.Errorf("bad stride %v in dimension %d", stride[i], i)
		}
		t.shape[i], t.stride[i] = int(n), s
		hi, lo := bits.Mul64(uint64(numel), uint64(n))
		if hi != 0 || lo > maxElems {
			return nil, fmt.Errorf("size %v has too many elements", size)
		}
		numel = int64(lo)
	}
	return t, nil
}

// numel returns the element count; rebuildTensor already bounded it.
func (t *tensorRef) numel() int64 {
	n := int64(1)
	for _, d := range t.shape {
		n *= int64(d)
	}
	return n
}

// span returns one past the largest storage element index the tensor
// touches, or 0 if it is empty; ok is false when that index overflows.
func (t *tensorRef) span() (int64, bool) {
	last := t.offset
	for i, d := range t.shape {
		if d == 0 {
			return 0, true
		}
		hi, lo := bits.Mul64(uint64(d-1), uint64(t.stride[i]))
		if hi != 0 || lo > maxElems {
			return 0, false
		}
		last += int64(lo)
		if last > maxElems {
			return 0, false
		}
	}
	return last + 1, true
}

func (t *tensorRef) contiguous() bool {
	expect := int64(1)
	for i := len(t.shape) - 1; i >= 0; i-- {
		// The stride of a dimension of size 1 never matters.
		if t.shape[i] != 1 && t.stride[i] != expect {
			return false
		}
		expect *= int64(t.shape[i])
	}
	return true
}

// materialize turns a tensorRef into a Tensor. Contiguous little-endian
// data is sliced out of the storage without copying; anything else is
// copied, charging the bytes to *budget so a file cannot make us allocate
// far more than its own size through many strided views of one storage.
func materialize(name string, t *tensorRef, bigEndian bool, budget *int64) (Tensor, error) {
	st := t.storage
	es := int64(dtypeSize[st.dtype])
	data, err := st.bytes()
	if err != nil {
		return Tensor{}, fmt.Errorf("tensor %q: %w", name, err)
	}
	storageNumel := int64(len(data)) / es
	numel := t.numel()
	end, ok := t.span()
	if !ok || end > storageNumel {
		return Tensor{}, fmt.Errorf("tensor %q: shape %v with strides %v at offset %d reaches past the %d elements of storage %q",
			name, t.shape, t.stride, t.offset, storageNumel, st.key)
	}
	out := Tensor{Name: name, DType: st.dtype, Shape: append([]int{}, t.shape...)}
	if numel == 0 {
		out.Data = []byte{}
		return out, nil
	}
	if t.contiguous() && !bigEndian {
		lo, hi := t.offset*es, (t.offset+numel)*es
		out.Data = data[lo:hi:hi]
		return out, nil
	}
	if numel > storageNumel {
		// Only overlapping strides (broadcast views) can do this.
		return Tensor{}, fmt.Errorf("tensor %q: %d elements from a storage of %d: overlapping views are not supported",
			name, numel, storageNumel)
	}
	nbytes := numel * es
	if nbytes > *budget {
		return Tensor{}, fmt.Errorf("tensor %q: copying strided views would need more memory than the file holds", name)
	}
	*budget -= nbytes
	out.Data = make([]byte, nbytes)
	gather(out.Data, data, t, int(es))
	if bigEndian {
		swapBytes(out.Data, int(es))
	}
	return out, nil
}

// gather copies the elements of strided view t of src into dst in C order.
func gather(dst, src []byte, t *tensorRef, es int) {
	nd := len(t.shape)
	if nd == 0 {
		copy(dst, src[t.offset*int64(es):][:es])
		return
	}
	idx := make([]int, nd)
	pos := t.offset
	inner := t.shape[nd-1]
	innerStride := t.stride[nd-1]
	w := 0
	for {
		p := pos
		for j := 0; j < inner; j++ {
			copy(dst[w:w+es], src[p*int64(es):])
			w += es
			p += innerStride
		}
		// Advance the outer index like an odometer.
		d := nd - 2
		for ; d >= 0; d-- {
			idx[d]++
			pos += t.stride[d]
			if idx[d] < t.shape[d] {
				break
			}
			pos -= int64(idx[d]) * t.stride[d]
			idx[d] = 0
		}
		if d < 0 {
			return
		}
	}
}

// swapBytes reverses the byte order of each es-byte element in place.
func swapBytes(b []byte, es int) {
	switch es {
	case 2:
		for i := 0; i+1 < len(b); i += 2 {
			binary.LittleEndian.PutUint16(b[i:], binary.BigEndian.Uint16(b[i:]))
		}
	case 4:
		for i := 0; i+3 < len(b); i += 4 {
			binary.LittleEndian.PutUint32(b[i:], binary.BigEndian.Uint32(b[i:]))
		}
	case 8:
		for i := 0; i+7 < len(b); i += 8 {
			binary.LittleEndian.PutUint64(b[i:], binary.BigEndian.Uint64(b[i:]))
		}
	}
}
