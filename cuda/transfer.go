//go:build cuda

package cuda

import (
	"fmt"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/bertstream/bertstream/kernels/gpu"
	"github.com/bertstream/bertstream/nn"
)

// Upload copies a host tensor to the device, converting as the CPU
// backend's Upload does: float dtypes into one another on the device (the
// conversion kernels round bit for bit as the host's do), I64 ids to I32
// on the host, with a range check.
func (b *Backend) Upload(s *nn.Scope, src *nn.Tensor, dt nn.DType) (*nn.Tensor, error) {
	if _, ok := src.Storage().(*nn.HostStorage); !ok {
		return nil, fmt.Errorf("tensor %v is not in host memory", src)
	}
	raw := src.HostBytes()
	var ints []int32
	switch {
	case src.DType() == dt:
		if dt == nn.I32 {
			ints = append([]int32(nil), src.I32()...)
		}
	case dt == nn.I32 && src.DType() == nn.I64:
		ints = make([]int32, src.Len())
		for i, v := range src.I64() {
			if v != int64(int32(v)) {
				return nil, fmt.Errorf("value %d at index %d does not fit I32", v, i)
			}
			ints[i] = int32(v)
		}
		raw = unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(ints))), 4*len(ints))
	case dt == nn.I64 && src.DType() == nn.I32:
		wide := make([]int64, src.Len())
		for i, v := range src.I32() {
			wide[i] = int64(v)
		}
		raw = unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(wide))), 8*len(wide))
	case isFloat(dt) && isFloat(src.DType()) && (dt == nn.F32 || src.DType() == nn.F32):
	default:
		return nil, fmt.Errorf("no conversion from %s to %s", src.DType(), dt)
	}
	out := &storage{pool: b.pool, size: int64(src.Len() * dt.Size()), ints: ints}
	if err := b.enter(); err != nil {
		return nil, err
	}
	defer b.leave()
	if err := b.allocLocked(out); err != nil {
		return nil, fmt.Errorf("upload %v: %w", src, err)
	}
	if err := b.upload(out.ptr, raw, src.DType(), dt, int64(src.Len())); err != nil {
		out.Free()
		return nil, fmt.Errorf("upload %v as %s: %w", src, dt, err)
	}
	return nn.NewTensor(s, out, dt, src.Shape()...), nil
}

// upload copies n elements of raw (in dtype from) to dst (in dtype to).
func (b *Backend) upload(dst cu.DevicePtr, raw []byte, from, to nn.DType, n int64) error {
	if n == 0 {
		return nil
	}
	if from == to || !isFloat(from) {
		return cu.MemcpyHtoDAsync(dst, hostBytes(raw), int64(len(raw)), b.stream)
	}
	tmp, done, err := b.scratch(int64(len(raw)))
	if err != nil {
		return err
	}
	defer done()
	if err := cu.MemcpyHtoDAsync(tmp, hostBytes(raw), int64(len(raw)), b.stream); err != nil {
		return err
	}
	return b.convert(dst, to, tmp, from, n)
}

// convert launches the conversion kernel from F32 to F16/BF16 or back.
func (b *Backend) convert(dst cu.DevicePtr, to nn.DType, src cu.DevicePtr, from nn.DType, n int64) error {
	return b.launch(gpu.Convert(kernelType(from), kernelType(to), n), uint64(dst), uint64(src), i64(n))
}

// Download copies a device tensor into a new host tensor of dtype dt,
// after the work queued before it.
func (b *Backend) Download(s *nn.Scope, t *nn.Tensor, dt nn.DType) (*nn.Tensor, error) {
	st, err := b.tensor("tensor", t, t.DType())
	if err != nil {
		return nil, err
	}
	from := t.DType()
	n := int64(t.Len())
	var via nn.DType // the dtype the bytes cross in
	switch {
	case from == dt:
		via = dt
	case isFloat(dt) && isFloat(from) && (dt == nn.F32 || from == nn.F32):
		via = dt // converted on the device
	case (dt == nn.I32 && from == nn.I64) || (dt == nn.I64 && from == nn.I32):
		via = from // converted on the host
	default:
		return nil, fmt.Errorf("no conversion from %s to %s", from, dt)
	}
	hs := nn.NewHostStorage(int(n) * via.Size())
	if err := b.download(hs.Raw(), st.ptr, from, via, n); err != nil {
		return nil, fmt.Errorf("download %v: %w", t, err)
	}
	if via == dt {
		return nn.NewTensor(s, hs, dt, t.Shape()...), nil
	}
	tmp := nn.NewScope("cuda/download")
	defer tmp.Close()
	got := nn.NewTensor(tmp, hs, via, t.Shape()...)
	out := nn.NewHost(s, dt, t.Shape()...)
	if dt == nn.I64 {
		for i, v := range got.I32() {
			out.I64()[i] = int64(v)
		}
		return out, nil
	}
	for i, v := range got.I64() {
		if v != int64(int32(v)) {
			out.Release()
			return nil, fmt.Errorf("download %v: value %d at index %d does not fit I32", t, v, i)
		}
		out.I32()[i] = int32(v)
	}
	return out, nil
}

// download copies n elements from src (dtype from) into raw (dtype to)
// and waits for the copy.
func (b *Backend) download(raw []byte, src cu.DevicePtr, from, to nn.DType, n int64) error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.leave()
	if n == 0 {
		return nil
	}
	if from != to {
		tmp, done, err := b.scratch(int64(len(raw)))
		if err != nil {
			return err
		}
		defer done()
		if err := b.convert(tmp, to, src, from, n); err != nil {
			return err
		}
		src = tmp
	}
	if err := cu.MemcpyDtoHAsync(hostBytes(raw), src, int64(len(raw)), b.stream); err != nil {
		return err
	}
	return b.syncLocked()
}

func isFloat(dt nn.DType) bool { return dt == nn.F32 || dt == nn.F16 || dt == nn.BF16 }
