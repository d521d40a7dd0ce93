// Package safetensors reads and writes the safetensors format: an 8-byte
// little-endian header length, a JSON header mapping tensor names to
// dtype, shape and byte range, then the raw little-endian data.
//
// The header is untrusted: every offset, size and shape is checked against
// the file before anything is allocated for it.
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
)

// MaxHeader bounds the JSON header; real headers are a few hundred KiB
// even for models with thousands of tensors.
const MaxHeader = 100 << 20

// Tensor is one entry of a file. Data aliases the file's bytes (memory
// mapped when opened with Open): it is valid until the File is closed.
type Tensor struct {
	Name  string
	DType string // "F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL", ...
	Shape []int
	Data  []byte
}

// File is a parsed safetensors file.
type File struct {
	Tensors  []Tensor // in file order
	Metadata map[string]string
	release  func() error
}

// Close releases the file's memory; Tensor data must not be used after.
func (f *File) Close() error {
	if f.release == nil {
		return nil
	}
	r := f.release
	f.release = nil
	return r()
}

// Get returns the named tensor.
func (f *File) Get(name string) (Tensor, bool) {
	for _, t := range f.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return Tensor{}, false
}

// DTypeSize is the element size of a safetensors dtype, 0 if unknown.
func DTypeSize(dt string) int {
	switch dt {
	case "F64", "I64", "U64":
		return 8
	case "F32", "I32", "U32":
		return 4
	case "F16", "BF16", "I16", "U16":
		return 2
	case "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2":
		return 1
	}
	return 0
}

// Open memory-maps path and parses it.
func Open(path string) (*File, error) {
	data, release, err := mapFile(path)
	if err != nil {
		return nil, err
	}
	f, err := Parse(data)
	if err != nil {
		release()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f.release = release
	return f, nil
}

type entry struct {
	DType   string  `json:"dtype"`
	Shape   []int64 `json:"shape"`
	Offsets []int64 `json:"data_offsets"`
}

// Parse validates and indexes a whole safetensors file held in data.
// Tensor data aliases data.
func Parse(data []byte) (*File, error) {
	if len(data) < 8 {
		return nil, fmt.Errorf("safetensors: %d bytes is too short for the 8-byte header length", len(data))
	}
	n := binary.LittleEndian.Uint64(data[:8])
	if n > MaxHeader {
		return nil, fmt.Errorf("safetensors: header length %d exceeds the %d-byte limit", n, MaxHeader)
	}
	if n > uint64(len(data)-8) {
		return nil, fmt.Errorf("safetensors: header length %d runs past the end of the %d-byte file", n, len(data))
	}
	hdr := data[8 : 8+n]
	body := data[8+n:]
	if len(bytes.TrimSpace(hdr)) == 0 || bytes.TrimSpace(hdr)[0] != '{' {
		return nil, fmt.Errorf("safetensors: header is not a JSON object")
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &raw); err != nil {
		return nil, fmt.Errorf("safetensors: header: %w", err)
	}
	f := &File{}
	type span struct {
		name       string
		begin, end int64
	}
	var spans []span
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &f.Metadata); err != nil {
				return nil, fmt.Errorf("safetensors: __metadata__ must map strings to strings: %w", err)
			}
			continue
		}
		var e entry
		dec := json.NewDecoder(bytes.NewReader(msg))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			return nil, fmt.Errorf("safetensors: tensor %q: %w", name, err)
		}
		size := DTypeSize(e.DType)
		if size == 0 {
			return nil, fmt.Errorf("safetensors: tensor %q: unknown dtype %q", name, e.DType)
		}
		if len(e.Offsets) != 2 {
			return nil, fmt.Errorf("safetensors: tensor %q: data_offsets has %d entries, want 2", name, len(e.Offsets))
		}
		begin, end := e.Offsets[0], e.Offsets[1]
		if begin < 0 || end < begin || end > int64(len(body)) {
			return nil, fmt.Errorf("safetensors: tensor %q: data_offsets [%d, %d] outside the %d data bytes", name, begin, end, len(body))
		}
		shape := make([]int, len(e.Shape))
		empty := false
		for i, d := range e.Shape {
			if d < 0 || d > 1<<62 {
				return nil, fmt.Errorf("safetensors: tensor %q: invalid dimension %d in shape %v", name, d, e.Shape)
			}
			shape[i] = int(d)
			empty = empty || d == 0
		}
		numel := int64(0)
		if !empty {
			numel = 1
			for _, d := range e.Shape {
				// numel*d > the byte count means the shape cannot fit; checking
				// before multiplying keeps a hostile shape from overflowing.
				if numel > (end-begin)/d {
					return nil, fmt.Errorf("safetensors: tensor %q: shape %v needs more than its %d bytes", name, e.Shape, end-begin)
				}
				numel *= d
			}
		}
		if numel*int64(size) != end-begin {
			return nil, fmt.Errorf("safetensors: tensor %q: %s %v needs %d bytes, data_offsets give %d", name, e.DType, e.Shape, numel*int64(size), end-begin)
		}
		spans = append(spans, span{name, begin, end})
		f.Tensors = append(f.Tensors, Tensor{Name: name, DType: e.DType, Shape: shape, Data: body[begin:end:end]})
	}
	sort.Slice(spans, func(i, j int) bool {
		if spans[i].begin != spans[j].begin {
			return spans[i].begin < spans[j].begin
		}
		return spans[i].end < spans[j].end
	})
	for i := 1; i < len(spans); i++ {
		if spans[i].begin < spans[i-1].end {
			return nil, fmt.Errorf("safetensors: tensors %q and %q overlap (bytes %d..%d and %d..%d)", spans[i-1].name, spans[i].name, spans[i-1].begin, spans[i-1].end, spans[i].begin, spans[i].end)
		}
	}
	order := map[string]int64{}
	for _, s := range spans {
		order[s.name] = s.begin
	}
	sort.SliceStable(f.Tensors, func(i, j int) bool {
		a, b := order[f.Tensors[i].Name], order[f.Tensors[j].Name]
		if a != b {
			return a < b
		}
		return f.Tensors[i].Name < f.Tensors[j].Name
	})
	return f, nil
}

// Write writes tensors (in the given order) as a safetensors file.
func Write(w io.Writer, tensors []Tensor, metadata map[string]string) error {
	hdr := map[string]any{}
	if len(metadata) > 0 {
		hdr["__metadata__"] = metadata
	}
	var off int64
	for _, t := range tensors {
		size := DTypeSize(t.DType)
		if size == 0 {
			return fmt.Errorf("safetensors: tensor %q: unknown dtype %q", t.Name, t.DType)
		}
		numel := int64(1)
		for _, d := range t.Shape {
			numel *= int64(d)
		}
		if numel*int64(size) != int64(len(t.Data)) {
			return fmt.Errorf("safetensors: tensor %q: %s %v needs %d bytes, has %d", t.Name, t.DType, t.Shape, numel*int64(size), len(t.Data))
		}
		if _, dup := hdr[t.Name]; dup {
			return fmt.Errorf("safetensors: tensor %q written twice", t.Name)
		}
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		hdr[t.Name] = map[string]any{"dtype": t.DType, "shape": shape, "data_offsets": []int64{off, off + int64(len(t.Data))}}
		off += int64(len(t.Data))
	}
	js, err := json.Marshal(hdr)
	if err != nil {
		return err
	}
	// Pad the header with spaces so the data starts 8-byte aligned, as
	// the reference implementation does; readers may then view it in place.
	for (8+len(js))%8 != 0 {
		js = append(js, ' ')
	}
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(js)))
	if _, err := w.Write(lenBuf[:]); err != nil {
		return err
	}
	if _, err := w.Write(js); err != nil {
		return err
	}
	for _, t := range tensors {
		if _, err := w.Write(t.Data); err != nil {
			return err
		}
	}
	return nil
}

// WriteFile writes tensors to path.
func WriteFile(path string, tensors []Tensor, metadata map[string]string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := Write(f, tensors, metadata); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Close()
}
