// Package safetensors reads and writes the safetensors format: an 8-byte
// little-endian header length, a JSON header mapping tensor names to
// dtype, shape and byte range, then the raw little-endian data.
//
// The header is untrusted: every offset, size and shape is checked against
// the file before anything is allocated for it, and nothing is allocated in
// proportion to a number the header claims, only to the header's own size.
package safetensors

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/bertstream/bertstream/bert/text"
	"github.com/bertstream/bertstream/loader/internal/mmap"
)

// MaxHeader bounds the JSON header; real headers are a few hundred KiB
// even for models with thousands of tensors.
const MaxHeader = 100 << 20

// metadataKey is the header key that holds the file's string metadata
// instead of a tensor.
const metadataKey = "__metadata__"

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
	Tensors  []Tensor // in file order: by offset, empty tensors at one offset by name
	Metadata map[string]string
	m        *mmap.File // nil for Parse
}

// Close releases the file's memory; Tensor data must not be used after.
func (f *File) Close() error {
	if f.m == nil {
		return nil
	}
	return f.m.Close()
}

// Evict drops the pages of p, part of a tensor's Data, from memory; if
// they are read again they come back from the file. For a file parsed
// from memory it does nothing.
func (f *File) Evict(p []byte) {
	if f.m != nil {
		f.m.Evict(p)
	}
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

// byteSize is the number of bytes a tensor of dtype and shape holds. The
// product is checked before every multiplication, so a hostile shape is
// refused instead of wrapping around to a small, plausible size. A zero
// dimension empties the tensor, but the other dimensions still reach
// callers that size loops by them, so they must multiply out too.
func byteSize(dtype string, shape []int) (int, error) {
	size := DTypeSize(dtype)
	if size == 0 {
		return 0, fmt.Errorf("unknown dtype %q", dtype)
	}
	n, empty := size, false
	for i, d := range shape {
		switch {
		case d < 0:
			return 0, fmt.Errorf("shape %s: dimension %d is negative (%d)", list(shape), i, d)
		case d == 0:
			empty = true
		case n > math.MaxInt/d:
			return 0, fmt.Errorf("shape %s: the %s byte count overflows int", list(shape), dtype)
		default:
			n *= d
		}
	}
	if empty {
		return 0, nil
	}
	return n, nil
}

// Open memory-maps path and parses it.
func Open(path string) (*File, error) {
	m, err := mmap.Open(path)
	if err != nil {
		return nil, err
	}
	f, err := Parse(m.Data)
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f.m = m
	return f, nil
}

// span is a tensor with the byte range of the data section it claims.
type span struct {
	Tensor
	begin, end int
}

// Parse validates and indexes a whole safetensors file held in data.
// Tensor data aliases data.
//
// It accepts what the reference implementation (huggingface/safetensors)
// accepts, and also refuses what that one lets through by accident of its
// JSON library: repeated keys, where the last one silently wins. Like the
// reference, it requires the tensors to tile the data section exactly,
// from its first byte to its last: a hole or trailing bytes could carry
// data that no reader looks at, and an overlap would make one write show
// through two tensors.
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
	body := data[8+n:]
	spans, md, err := parseHeader(data[8:8+n], len(body))
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	slices.SortFunc(spans, func(a, b span) int {
		return cmp.Or(cmp.Compare(a.begin, b.begin), cmp.Compare(a.end, b.end), strings.Compare(a.Name, b.Name))
	})
	if err := checkTiling(spans, len(body)); err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	f := &File{Tensors: make([]Tensor, len(spans)), Metadata: md}
	for i, s := range spans {
		f.Tensors[i] = s.Tensor
		// Capped, so that an append to one tensor's data copies instead of
		// writing into the next tensor (or faulting on a read-only mapping).
		f.Tensors[i].Data = body[s.begin:s.end:s.end]
	}
	return f, nil
}

// checkTiling checks that spans, sorted by offset, cover the dataLen bytes
// of the data section back to back, as the format requires.
func checkTiling(spans []span, dataLen int) error {
	at := 0
	for i, s := range spans {
		switch {
		case s.begin > at && i == 0:
			return fmt.Errorf("tensor %q starts at data byte %d: bytes [0, %d) belong to no tensor", s.Name, s.begin, s.begin)
		case s.begin > at:
			p := spans[i-1]
			return fmt.Errorf("bytes [%d, %d) between tensor %q [%d, %d] and tensor %q [%d, %d] belong to no tensor", at, s.begin, p.Name, p.begin, p.end, s.Name, s.begin, s.end)
		case s.begin < at:
			p := spans[i-1]
			return fmt.Errorf("tensor %q [%d, %d] overlaps tensor %q [%d, %d]", p.Name, p.begin, p.end, s.Name, s.begin, s.end)
		}
		at = s.end
	}
	if at != dataLen {
		return fmt.Errorf("the tensors end at data byte %d but the data section has %d bytes: %d trailing bytes belong to no tensor", at, dataLen, dataLen-at)
	}
	return nil
}

// parseHeader reads the JSON header: one object whose members are tensor
// entries and at most one __metadata__. It checks each entry against
// itself and the dataLen bytes of the data section; spans come back in
// header order.
//
// The grammar is small enough to read directly, and encoding/json does not
// fit it: it keeps the last of two equal keys without a word (two tensors
// of one name mean different things to different readers), takes null for
// 0 or "", and costs dozens of allocations per tensor, several times the
// header's size for a long array. Reading by hand stops at the first byte
// of a value of the wrong kind, builds only what it returns, and never
// nests deeper than three objects.
func parseHeader(hdr []byte, dataLen int) ([]span, map[string]string, error) {
	// The format says UTF-8. A name with bad bytes would read one way
	// here (Go strings keep them) and another in readers that turn them
	// into U+FFFD, as encoding/json does: one file, two sets of names.
	if !utf8.Valid(hdr) {
		return nil, nil, fmt.Errorf("header is not valid UTF-8 (bad byte at header byte %d)", text.IndexInvalidUTF8(hdr))
	}
	h := &header{b: hdr}
	if k := h.kind(); k != "an object" {
		return nil, nil, fmt.Errorf("header: found %s, want a JSON object", k)
	}
	// Every entry names data_offsets, so their count sizes spans well (an
	// entry that escapes the name only costs an append).
	spans := make([]span, 0, bytes.Count(hdr, []byte(`"data_offsets"`)))
	var md map[string]string
	seen := map[string]bool{}
	err := h.object(func(key string) error {
		if seen[key] {
			return h.errorf("key %q appears twice", key)
		}
		seen[key] = true
		if key == metadataKey {
			var err error
			if md, err = h.metadata(); err != nil {
				return fmt.Errorf("%s: %w", metadataKey, err)
			}
			return nil
		}
		s, err := h.entry(dataLen)
		if err != nil {
			return fmt.Errorf("tensor %q: %w", key, err)
		}
		s.Name = key
		spans = append(spans, s)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if h.skipSpace(); h.i != len(h.b) {
		return nil, nil, h.errorf("header: found %q after the object, want only white space", clip(h.b[h.i:]))
	}
	return spans, md, nil
}

// header reads JSON from b, from offset i on.
type header struct {
	b []byte
	i int
}

// errorf is an error that says where in the header it happened.
func (h *header) errorf(format string, args ...any) error {
	return fmt.Errorf(format+" (header byte %d)", append(args, h.i)...)
}

// skipSpace skips JSON white space.
func (h *header) skipSpace() {
	for h.i < len(h.b) {
		switch h.b[h.i] {
		case ' ', '\t', '\n', '\r':
			h.i++
		default:
			return
		}
	}
}

// kind skips white space and names the kind of JSON value that starts at
// the next byte.
func (h *header) kind() string {
	h.skipSpace()
	if h.i == len(h.b) {
		return "the end of the header"
	}
	switch h.b[h.i] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return "a number"
	case '}', ']', ',', ':':
		return fmt.Sprintf("%q", h.b[h.i])
	}
	r, _ := utf8.DecodeRune(h.b[h.i:])
	return fmt.Sprintf("%q, not JSON", r)
}

// punct skips white space and reads the next byte, which must be one of
// want; it returns which.
func (h *header) punct(want string) (byte, error) {
	h.skipSpace()
	if h.i == len(h.b) || strings.IndexByte(want, h.b[h.i]) < 0 {
		return 0, h.errorf("found %s, want one of %q", h.kind(), want)
	}
	h.i++
	return h.b[h.i-1], nil
}

// object reads a JSON object, calling member for each key with h at its
// value, which member must read. member must also refuse a key it has seen
// before: it knows what it has read, where a set kept here would cost an
// allocation for each of the file's small objects.
func (h *header) object(member func(key string) error) error {
	if k := h.kind(); k != "an object" {
		return h.errorf("found %s, want a JSON object", k)
	}
	h.i++
	if h.skipSpace(); h.i < len(h.b) && h.b[h.i] == '}' {
		h.i++
		return nil
	}
	for {
		key, err := h.str()
		if err != nil {
			return fmt.Errorf("object key: %w", err)
		}
		if _, err := h.punct(":"); err != nil {
			return fmt.Errorf("after key %q: %w", key, err)
		}
		if err := member(key); err != nil {
			return err
		}
		c, err := h.punct(",}")
		if err != nil {
			return fmt.Errorf("after the value of %q: %w", key, err)
		}
		if c == '}' {
			return nil
		}
	}
}

// str reads a JSON string.
func (h *header) str() (string, error) {
	if k := h.kind(); k != "a string" {
		return "", h.errorf("found %s, want a string", k)
	}
	start := h.i
	escaped := false
	for h.i++; h.i < len(h.b); h.i++ {
		switch c := h.b[h.i]; {
		case c == '"':
			h.i++
			quoted := h.b[start:h.i]
			if !escaped {
				return string(quoted[1 : len(quoted)-1]), nil
			}
			// Escapes are rare in headers; encoding/json knows them all,
			// \u surrogate pairs included, and refuses bad ones.
			var s string
			if err := json.Unmarshal(quoted, &s); err != nil {
				return "", fmt.Errorf("string at header byte %d: %w", start, err)
			}
			return s, nil
		case c == '\\':
			escaped = true
			h.i++ // the escaped byte cannot end the string
		case c < 0x20:
			return "", h.errorf("control character %#02x inside a string", c)
		}
	}
	return "", fmt.Errorf("string at header byte %d runs to the end of the header", start)
}

// ints reads a JSON array of integers that fit in an int; 1.0 and 1e3 are
// not integers here, as in the reference implementation.
func (h *header) ints() ([]int, error) {
	if k := h.kind(); k != "an array" {
		return nil, h.errorf("found %s, want an array of integers", k)
	}
	h.i++
	if h.skipSpace(); h.i < len(h.b) && h.b[h.i] == ']' {
		h.i++
		return []int{}, nil
	}
	// Size the slice by the commas before the closing bracket: grown by
	// appends, a long array would cost several times its size in garbage.
	size := 1
	if end := bytes.IndexByte(h.b[h.i:], ']'); end >= 0 {
		size += bytes.Count(h.b[h.i:h.i+end], []byte(","))
	}
	ints := make([]int, 0, size)
	for {
		if k := h.kind(); k != "a number" {
			return nil, h.errorf("element %d: found %s, want an integer", len(ints), k)
		}
		start := h.i
		for h.i < len(h.b) && inNumber(h.b[h.i]) {
			h.i++
		}
		tok := h.b[start:h.i]
		if !isJSONInt(tok) {
			return nil, fmt.Errorf("element %d (%s) is not an integer (header byte %d)", len(ints), clip(tok), start)
		}
		n, err := strconv.Atoi(string(tok))
		if err != nil {
			return nil, fmt.Errorf("element %d (%s) is not in [%d, %d] (header byte %d)", len(ints), clip(tok), math.MinInt, math.MaxInt, start)
		}
		ints = append(ints, n)
		c, err := h.punct(",]")
		if err != nil {
			return nil, fmt.Errorf("after element %d: %w", len(ints)-1, err)
		}
		if c == ']' {
			return ints, nil
		}
	}
}

// inNumber reports whether c can be part of a JSON number.
func inNumber(c byte) bool {
	return '0' <= c && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'
}

// isJSONInt reports whether tok is an integer in JSON's grammar: no sign
// but a leading minus, no leading zeros, no fraction or exponent.
func isJSONInt(tok []byte) bool {
	if len(tok) > 0 && tok[0] == '-' {
		tok = tok[1:]
	}
	if len(tok) == 0 || tok[0] == '0' && len(tok) > 1 {
		return false
	}
	for _, c := range tok {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// entryFields are the fields of a tensor entry, all required.
var entryFields = [...]string{"dtype", "shape", "data_offsets"}

// entry reads one tensor's {"dtype", "shape", "data_offsets"} and checks
// it against itself and the dataLen bytes of the data section.
func (h *header) entry(dataLen int) (span, error) {
	var s span
	var offsets []int
	var have [len(entryFields)]bool
	err := h.object(func(field string) error {
		i := slices.Index(entryFields[:], field)
		switch {
		case i < 0:
			return h.errorf("unknown field %q", field)
		case have[i]:
			return h.errorf("key %q appears twice", field)
		}
		have[i] = true
		var err error
		switch field {
		case "dtype":
			s.DType, err = h.str()
		case "shape":
			s.Shape, err = h.ints()
		case "data_offsets":
			offsets, err = h.ints()
		}
		if err != nil {
			return fmt.Errorf("field %q: %w", field, err)
		}
		return nil
	})
	if err != nil {
		return span{}, err
	}
	for i, f := range entryFields {
		if !have[i] {
			return span{}, fmt.Errorf("missing field %q", f)
		}
	}
	nbytes, err := byteSize(s.DType, s.Shape)
	if err != nil {
		return span{}, err
	}
	if len(offsets) != 2 {
		return span{}, fmt.Errorf("data_offsets %s has %d entries, want 2", list(offsets), len(offsets))
	}
	s.begin, s.end = offsets[0], offsets[1]
	switch {
	case s.begin < 0 || s.end < 0:
		return span{}, fmt.Errorf("data_offsets [%d, %d] are negative", s.begin, s.end)
	case s.begin > s.end:
		return span{}, fmt.Errorf("data_offsets [%d, %d] end before they begin", s.begin, s.end)
	case s.end > dataLen:
		return span{}, fmt.Errorf("data_offsets [%d, %d] run past the end of the %d-byte data section", s.begin, s.end, dataLen)
	case s.end-s.begin != nbytes:
		return span{}, fmt.Errorf("%s %s needs %d bytes, data_offsets [%d, %d] hold %d", s.DType, list(s.Shape), nbytes, s.begin, s.end, s.end-s.begin)
	}
	return s, nil
}

// metadata reads the __metadata__ object, which maps strings to strings;
// null means none, as in the reference implementation.
func (h *header) metadata() (map[string]string, error) {
	if h.kind() == "null" {
		if !bytes.HasPrefix(h.b[h.i:], []byte("null")) {
			return nil, h.errorf("found %q, not JSON", h.b[h.i:min(h.i+4, len(h.b))])
		}
		h.i += len("null")
		return nil, nil
	}
	md := map[string]string{}
	err := h.object(func(key string) error {
		if _, dup := md[key]; dup {
			return h.errorf("key %q appears twice", key)
		}
		v, err := h.str()
		if err != nil {
			return fmt.Errorf("key %q: %w", key, err)
		}
		md[key] = v
		return nil
	})
	return md, err
}

// list formats a shape or data_offsets for an error message, clipped: a
// hostile one can hold millions of entries.
func list(v []int) string {
	const limit = 8
	if len(v) <= limit {
		return fmt.Sprint(v)
	}
	head := fmt.Sprint(v[:limit]) // "[a b ... h]"
	return fmt.Sprintf("%s ...%d more]", head[:len(head)-1], len(v)-limit)
}

// clip shortens b for an error message: a hostile number can be megabytes.
func clip(b []byte) string {
	const limit = 40
	if len(b) <= limit {
		return string(b)
	}
	return string(b[:limit]) + "..."
}

// Write writes tensors (in the given order) as a safetensors file.
func Write(w io.Writer, tensors []Tensor, metadata map[string]string) error {
	hdr := map[string]any{}
	if len(metadata) > 0 {
		for k, v := range metadata {
			// encoding/json would write bad bytes as U+FFFD: the file
			// would read back different.
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				return fmt.Errorf("safetensors: metadata %q: %q is not valid UTF-8", k, v)
			}
		}
		hdr[metadataKey] = metadata
	}
	var off int
	for _, t := range tensors {
		switch {
		case t.Name == metadataKey:
			return fmt.Errorf("safetensors: tensor name %q is reserved for the file's metadata", t.Name)
		case !utf8.ValidString(t.Name):
			return fmt.Errorf("safetensors: tensor name %q is not valid UTF-8", t.Name)
		}
		if _, dup := hdr[t.Name]; dup {
			return fmt.Errorf("safetensors: tensor %q written twice", t.Name)
		}
		nbytes, err := byteSize(t.DType, t.Shape)
		if err != nil {
			return fmt.Errorf("safetensors: tensor %q: %w", t.Name, err)
		}
		if nbytes != len(t.Data) {
			return fmt.Errorf("safetensors: tensor %q: %s %s needs %d bytes, has %d", t.Name, t.DType, list(t.Shape), nbytes, len(t.Data))
		}
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		hdr[t.Name] = map[string]any{"dtype": t.DType, "shape": shape, "data_offsets": []int{off, off + len(t.Data)}}
		off += len(t.Data)
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
