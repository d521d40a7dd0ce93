// Package torchbin reads PyTorch checkpoint files (pytorch_model.bin as
// written by torch.save) in pure Go: the zip format of PyTorch >= 1.6 and
// the legacy format before it. A sharded checkpoint is several such files
// and a pytorch_model.bin.index.json, which package loader reads, with the
// same rules as a sharded safetensors checkpoint's index.
//
// The pickles inside are read by a restricted unpickler that never imports
// or executes anything: the only globals it accepts are the handful a state
// dict needs (collections.OrderedDict, torch._utils._rebuild_tensor_v2,
// torch._utils._rebuild_parameter and the torch.*Storage classes), each
// reimplemented in Go. Any other global is refused with an error naming it.
package torchbin

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"path"
	"strconv"
	"strings"
	"unsafe"

	"github.com/bertstream/bertstream/loader/internal/mmap"
)

// Tensor is one named tensor of a checkpoint.
//
// DType names follow safetensors: "F64","F32","F16","BF16","I64","I32",
// "I16","I8","U8","BOOL".
//
// Data may share memory with the file's bytes and with other tensors of the
// same checkpoint (tied weights share one storage), so treat it as read-only.
type Tensor struct {
	Name  string
	DType string
	Shape []int
	Data  []byte // little-endian, contiguous row-major (C order), len == numel*size(dtype)
}

// Open reads a checkpoint file: the zip format (torch.save, PyTorch >= 1.6:
// archive/data.pkl + archive/data/<key>, any top-level folder name, also
// archive/byteorder) or the legacy format (magic number
// 0x1950a86a20f9469cfc6c, protocol version 1001, sys_info pickle, the data
// pickle with persistent ids, the storage key list pickle, then each storage
// as 8-byte LE element count + raw bytes).
//
// The file is memory-mapped: torch stores zip entries uncompressed, so the
// tensors of a zip checkpoint (and the contiguous ones of a legacy file)
// are read in place, not copied.
func Open(path string) (*File, error) {
	m, err := mmap.Open(path)
	if err != nil {
		return nil, fmt.Errorf("torchbin: %w", err)
	}
	ts, err := Read(path, m.Data)
	if err != nil {
		m.Close()
		return nil, err
	}
	return &File{Tensors: ts, m: m}, nil
}

// File is an opened checkpoint file.
type File struct {
	Tensors []Tensor
	m       *mmap.File
}

// Close releases the file's memory; Tensor data must not be used after.
func (f *File) Close() error { return f.m.Close() }

// Evict drops the pages of p, part of a tensor's Data, from memory; if
// they are read again they come back from the file. Data that was copied
// (decompressed, strided or byte-swapped) lives in the Go heap, where
// dropping pages would lose it: only ranges of the mapping are evicted.
func (f *File) Evict(p []byte) {
	if f.owns(p) {
		f.m.Evict(p)
	}
}

// owns reports whether p lies inside the mapping.
func (f *File) owns(p []byte) bool {
	if len(p) == 0 || len(f.m.Data) == 0 {
		return false
	}
	lo := uintptr(unsafe.Pointer(&f.m.Data[0]))
	at := uintptr(unsafe.Pointer(&p[0]))
	return at >= lo && at-lo+uintptr(len(p)) <= uintptr(len(f.m.Data))
}

// Read parses from memory (for fuzzing and tests); name is used in errors.
// The returned tensors may alias data.
func Read(name string, data []byte) ([]Tensor, error) {
	var (
		ts  []Tensor
		err error
	)
	switch {
	case bytes.HasPrefix(data, []byte("PK\x03\x04")):
		ts, err = readZip(data)
	case len(data) > 0 && data[0] == 0x80:
		ts, err = readLegacy(data)
	default:
		err = errors.New("not a PyTorch checkpoint (neither a zip archive nor a legacy pickle)")
	}
	if err != nil {
		return nil, fmt.Errorf("torchbin: %s: %w", name, err)
	}
	return ts, nil
}

// checkpoint is what both formats produce before tensors are materialized.
type checkpoint struct {
	root      any
	bigEndian bool
	// budget is how many bytes may still be spent copying strided tensors.
	budget int64
}

// parseStoragePID checks the common head of a storage persistent id,
// ('storage', storage_type, key, location, numel, ...), and returns the
// dtype, key and numel.
func parseStoragePID(pid any, wantLen int) (dtype, key string, numel int64, err error) {
	t, ok := pid.(pyTuple)
	if !ok {
		return "", "", 0, fmt.Errorf("persistent id is %s, not a tuple", typeName(pid))
	}
	if len(t) == 0 || t[0] != "storage" {
		return "", "", 0, fmt.Errorf("persistent id %s is not a storage", describeTuple(t))
	}
	if len(t) != wantLen {
		return "", "", 0, fmt.Errorf("storage persistent id has %d fields, want %d", len(t), wantLen)
	}
	g, ok := t[1].(*pyGlobal)
	if !ok || g.module != "torch" || storageClass[g.name] == "" {
		return "", "", 0, fmt.Errorf("storage type is %s, not a torch storage class", describe(t[1]))
	}
	key, ok = t[2].(string)
	if !ok {
		return "", "", 0, fmt.Errorf("storage key is %s, not a string", typeName(t[2]))
	}
	numel, ok = t[4].(int64)
	if !ok || numel < 0 || numel > maxElems {
		return "", "", 0, fmt.Errorf("storage %q: bad element count %v", key, t[4])
	}
	return storageClass[g.name], key, numel, nil
}

func describeTuple(t pyTuple) string {
	parts := make([]string, len(t))
	for i, v := range t {
		switch x := v.(type) {
		case string:
			parts[i] = strconv.Quote(x)
		case int64, bool, float64:
			parts[i] = fmt.Sprint(x)
		default:
			parts[i] = describe(v)
		}
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// storages keeps one storageRef per key, so tensors that share a storage
// (tied weights) share its data.
type storages map[string]*storageRef

func (s storages) get(dtype, key string, numel int64) (*storageRef, error) {
	if st, ok := s[key]; ok {
		if st.dtype != dtype || st.numel != numel {
			return nil, fmt.Errorf("storage %q is declared both as %d %s and as %d %s",
				key, st.numel, st.dtype, numel, dtype)
		}
		return st, nil
	}
	st := &storageRef{key: key, dtype: dtype, numel: numel}
	s[key] = st
	return st, nil
}

func readZip(data []byte) ([]Tensor, error) {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("zip: %w", err)
	}
	files := map[string]*zip.File{}
	prefix := ""
	for _, f := range zr.File {
		files[f.Name] = f
		dir, base := path.Split(f.Name)
		if base == "data.pkl" && strings.Count(f.Name, "/") == 1 {
			if prefix != "" {
				return nil, fmt.Errorf("zip has two data.pkl: in %q and %q", prefix, dir)
			}
			prefix = dir
		}
	}
	if prefix == "" {
		return nil, errors.New("zip has no <archive>/data.pkl")
	}
	pkl, err := zipEntry(files[prefix+"data.pkl"], data, -1)
	if err != nil {
		return nil, err
	}
	ck := checkpoint{budget: int64(len(data))}
	if f, ok := files[prefix+"byteorder"]; ok {
		b, err := zipEntry(f, data, 16)
		if err != nil {
			return nil, err
		}
		switch string(b) {
		case "little":
		case "big":
			ck.bigEndian = true
		default:
			return nil, fmt.Errorf("%s: unknown byte order %q", f.Name, b)
		}
	}
	sts := storages{}
	load := func(pid any) (any, error) {
		dtype, key, numel, err := parseStoragePID(pid, 5)
		if err != nil {
			return nil, err
		}
		st, err := sts.get(dtype, key, numel)
		if err != nil || st.data != nil {
			return st, err
		}
		name := prefix + "data/" + key
		f, ok := files[name]
		if !ok {
			return nil, fmt.Errorf("storage %q: no entry %s", key, name)
		}
		want := numel * int64(dtypeSize[dtype])
		if f.UncompressedSize64 != uint64(want) {
			return nil, fmt.Errorf("storage %q: %s holds %d bytes, %d %s elements need %d",
				key, name, f.UncompressedSize64, numel, dtype, want)
		}
		if st.data, err = zipEntry(f, data, want); err != nil {
			return nil, err
		}
		return st, nil
	}
	ck.root, _, err = unpickle(pkl, load)
	if err != nil {
		return nil, fmt.Errorf("%sdata.pkl: %w", prefix, err)
	}
	return ck.tensors()
}

// zipEntry returns an entry's bytes: a slice of the archive for stored
// entries (torch writes them uncompressed), a decompressed copy otherwise.
// limit (when >= 0) is the most bytes the caller accepts.
func zipEntry(f *zip.File, data []byte, limit int64) ([]byte, error) {
	size := f.UncompressedSize64
	if limit >= 0 && size > uint64(limit) {
		return nil, fmt.Errorf("%s: %d bytes, expected at most %d", f.Name, size, limit)
	}
	if f.Method == zip.Store {
		off, err := f.DataOffset()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.Name, err)
		}
		if f.CompressedSize64 != size || off < 0 || uint64(off) > uint64(len(data)) || size > uint64(len(data))-uint64(off) {
			return nil, fmt.Errorf("%s: stored entry of %d bytes at offset %d lies outside the file", f.Name, size, off)
		}
		return data[off : off+int64(size) : off+int64(size)], nil
	}
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name, err)
	}
	defer rc.Close()
	// Read through a limit rather than trusting the declared size for
	// the allocation: memory grows only as data really decompresses.
	b, err := io.ReadAll(io.LimitReader(rc, int64(min(size, uint64(len(data))*1032))+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name, err)
	}
	if uint64(len(b)) != size {
		return nil, fmt.Errorf("%s: decompressed to %d bytes, header says %d", f.Name, len(b), size)
	}
	return b, nil
}

// legacyMagic is the number torch's legacy format starts with.
var legacyMagic, _ = new(big.Int).SetString("1950a86a20f9469cfc6c", 16)

const legacyProtocol = 1001

func readLegacy(data []byte) ([]Tensor, error) {
	pos := 0
	next := func(what string, load func(any) (any, error)) (any, error) {
		v, n, err := unpickle(data[pos:], load)
		if err != nil {
			return nil, fmt.Errorf("%s pickle at byte %d: %w", what, pos, err)
		}
		pos += n
		return v, nil
	}
	magic, err := next("magic number", nil)
	if err != nil {
		return nil, err
	}
	if b, ok := magic.(*big.Int); !ok || b.Cmp(legacyMagic) != 0 {
		return nil, fmt.Errorf("not a legacy PyTorch checkpoint: magic number %v", magic)
	}
	proto, err := next("protocol version", nil)
	if err != nil {
		return nil, err
	}
	if proto != int64(legacyProtocol) {
		return nil, fmt.Errorf("unsupported legacy protocol version %v, want %d", proto, legacyProtocol)
	}
	sysInfo, err := next("sys_info", nil)
	if err != nil {
		return nil, err
	}
	// sys_info describes the writing machine, but torch writes legacy
	// storages (counts and data) little-endian whatever its byte order, so
	// nothing in it changes how the rest is read.
	if _, ok := sysInfo.(*pyDict); !ok {
		return nil, fmt.Errorf("sys_info is %s, not a dict", typeName(sysInfo))
	}
	ck := checkpoint{budget: int64(len(data))}

	sts := storages{}
	load := func(pid any) (any, error) {
		dtype, key, numel, err := parseStoragePID(pid, 6)
		if err != nil {
			return nil, err
		}
		root, err := sts.get(dtype, key, numel)
		if err != nil {
			return nil, err
		}
		view := pid.(pyTuple)[5]
		if _, ok := view.(pyNone); ok {
			return root, nil
		}
		// Pre-1.0 torch could save a view of a storage:
		// (view_key, offset, view_size), in elements of the root.
		vt, ok := view.(pyTuple)
		if !ok || len(vt) != 3 {
			return nil, fmt.Errorf("storage %q: view metadata is %s, not a 3-tuple", key, typeName(view))
		}
		vkey, ok1 := vt[0].(string)
		voff, ok2 := vt[1].(int64)
		vsize, ok3 := vt[2].(int64)
		if !ok1 || !ok2 || !ok3 || voff < 0 || vsize < 0 || voff > numel || vsize > numel-voff {
			return nil, fmt.Errorf("storage %q: bad view metadata %s for %d elements", key, describeTuple(vt), numel)
		}
		if v, ok := sts[vkey]; ok {
			if v.base != root || v.offset != voff || v.numel != vsize {
				return nil, fmt.Errorf("storage view %q is declared twice differently", vkey)
			}
			return v, nil
		}
		v := &storageRef{key: vkey, dtype: dtype, numel: vsize, base: root, offset: voff}
		sts[vkey] = v
		return v, nil
	}
	ck.root, err = next("data", load)
	if err != nil {
		return nil, err
	}
	keysV, err := next("storage keys", nil)
	if err != nil {
		return nil, err
	}
	keys, ok := keysV.(*pyList)
	if !ok {
		return nil, fmt.Errorf("storage keys are %s, not a list", typeName(keysV))
	}
	for _, kv := range keys.items {
		key, ok := kv.(string)
		if !ok {
			return nil, fmt.Errorf("storage key is %s, not a string", typeName(kv))
		}
		st, ok := sts[key]
		if !ok || st.base != nil {
			return nil, fmt.Errorf("storage %q is listed but no tensor uses it", key)
		}
		if st.data != nil {
			return nil, fmt.Errorf("storage %q is listed twice", key)
		}
		if len(data)-pos < 8 {
			return nil, fmt.Errorf("storage %q at byte %d: truncated element count", key, pos)
		}
		n := binary.LittleEndian.Uint64(data[pos:])
		pos += 8
		if n != uint64(st.numel) {
			return nil, fmt.Errorf("storage %q at byte %d: holds %d elements, the pickle says %d", key, pos-8, n, st.numel)
		}
		nbytes := uint64(st.numel) * uint64(dtypeSize[st.dtype])
		if nbytes > uint64(len(data)-pos) {
			return nil, fmt.Errorf("storage %q at byte %d: %d bytes declared, %d left in the file", key, pos, nbytes, len(data)-pos)
		}
		st.data = data[pos : pos+int(nbytes) : pos+int(nbytes)]
		pos += int(nbytes)
	}
	for key, st := range sts {
		if st.base == nil && st.data == nil {
			return nil, fmt.Errorf("storage %q is used but not in the storage key list", key)
		}
	}
	if pos != len(data) {
		return nil, fmt.Errorf("%d unexpected bytes after the last storage", len(data)-pos)
	}
	return ck.tensors()
}

// tensors finds the state dict in the unpickled root and materializes its
// tensors in insertion order. The root is the state dict itself, or a dict
// wrapping it under "state_dict" or "model" (as training checkpoints do).
func (ck *checkpoint) tensors() ([]Tensor, error) {
	root, ok := ck.root.(*pyDict)
	if !ok {
		return nil, fmt.Errorf("checkpoint holds %s, not a state dict", typeName(ck.root))
	}
	sd := root
	if !hasTensor(root) {
		for _, k := range []string{"state_dict", "model"} {
			if v, ok := root.get(k); ok {
				if d, ok := v.(*pyDict); ok {
					sd = d
					break
				}
			}
		}
	}
	var out []Tensor
	for i, k := range sd.keys {
		tr, ok := sd.vals[i].(*tensorRef)
		if !ok {
			continue
		}
		name, ok := k.(string)
		if !ok {
			return nil, fmt.Errorf("state dict key %v of a tensor is %s, not a string", k, typeName(k))
		}
		t, err := materialize(name, tr, ck.bigEndian, &ck.budget)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	if len(out) == 0 {
		return nil, errors.New("no tensors in the state dict")
	}
	return out, nil
}

func hasTensor(d *pyDict) bool {
	for _, v := range d.vals {
		if _, ok := v.(*tensorRef); ok {
			return true
		}
	}
	return false
}
