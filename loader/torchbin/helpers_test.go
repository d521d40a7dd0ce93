package torchbin

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"testing"
)

// Builders for hand-made pickles and checkpoints, so tests can state the
// exact bytes an attacker or an unusual writer would produce.

// pk accumulates pickle opcodes.
type pk struct{ b []byte }

func newPickle(proto byte) *pk { return &pk{b: []byte{0x80, proto}} }

func (p *pk) raw(b ...byte) *pk      { p.b = append(p.b, b...); return p }
func (p *pk) op(s string) *pk        { p.b = append(p.b, s...); return p }
func (p *pk) mark() *pk              { return p.raw('(') }
func (p *pk) global(m, n string) *pk { return p.op("c" + m + "\n" + n + "\n") }
func (p *pk) stackGlobal(m, n string) *pk {
	return p.str(m).str(n).raw(0x93)
}
func (p *pk) str(s string) *pk {
	p.raw('X')
	p.b = binary.LittleEndian.AppendUint32(p.b, uint32(len(s)))
	p.b = append(p.b, s...)
	return p
}
func (p *pk) int(v int32) *pk {
	p.raw('J')
	p.b = binary.LittleEndian.AppendUint32(p.b, uint32(v))
	return p
}

// long pushes v with LONG1, for values beyond int32.
func (p *pk) long(v int64) *pk {
	p.raw(0x8a, 8)
	p.b = binary.LittleEndian.AppendUint64(p.b, uint64(v))
	return p
}
func (p *pk) ints(vs []int64) *pk {
	p.mark()
	for _, v := range vs {
		p.long(v)
	}
	return p.raw('t')
}
func (p *pk) stop() []byte { return append(p.b, '.') }

// tensorSpec describes one _rebuild_tensor_v2 call of a hand-made state dict.
type tensorSpec struct {
	name    string
	storage string // torch storage class, e.g. "FloatStorage"
	key     string
	numel   int64
	offset  int64
	shape   []int64
	stride  []int64
	// legacyView, when set, is the legacy view metadata (view_key, offset, size).
	legacyView []any
}

// stateDictPickle writes OrderedDict{name: tensor...} as torch.save does
// (protocol 2), with zip-style persistent ids, or legacy ones (a sixth
// field with the view metadata) when legacy is true.
func stateDictPickle(specs []tensorSpec, legacy bool) []byte {
	p := newPickle(2).global("collections", "OrderedDict").op(")R").mark()
	for _, s := range specs {
		p.str(s.name).global("torch._utils", "_rebuild_tensor_v2").mark()
		p.mark().str("storage").global("torch", s.storage).str(s.key).str("cpu").long(s.numel)
		if legacy {
			if s.legacyView == nil {
				p.raw('N')
			} else {
				p.mark().str(s.legacyView[0].(string)).long(s.legacyView[1].(int64)).long(s.legacyView[2].(int64)).raw('t')
			}
		}
		p.raw('t', 'Q')
		p.long(s.offset).ints(s.shape).ints(s.stride).raw(0x89)
		p.global("collections", "OrderedDict").op(")R")
		p.raw('t', 'R')
	}
	return p.raw('u').stop()
}

// zipCheckpoint writes a torch-style zip: archive/data.pkl plus
// archive/data/<key> for each storage, stored uncompressed.
func zipCheckpoint(t testing.TB, pkl []byte, storages map[string][]byte, extra map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	add := func(name string, data []byte) {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	add("archive/data.pkl", pkl)
	for k, v := range storages {
		add("archive/data/"+k, v)
	}
	for k, v := range extra {
		add("archive/"+k, v)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// legacyCheckpoint writes the legacy format: magic, protocol, sys_info, the
// data pickle, the key list, then each storage as LE count + bytes.
func legacyCheckpoint(pkl []byte, keys []string, counts []uint64, storages [][]byte) []byte {
	magic := newPickle(2).raw(0x8a, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19).stop()
	proto := newPickle(2).raw('M', 0xe9, 0x03).stop()
	sys := newPickle(2).raw('}').mark().str("protocol_version").raw('M', 0xe9, 0x03).
		str("little_endian").raw(0x88).raw('u').stop()
	kl := newPickle(2).raw(']').mark()
	for _, k := range keys {
		kl.str(k)
	}
	out := append(append(append(append(magic, proto...), sys...), pkl...), kl.raw('e').stop()...)
	for i := range storages {
		out = binary.LittleEndian.AppendUint64(out, counts[i])
		out = append(out, storages[i]...)
	}
	return out
}

func f32Bytes(vs ...float32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// stTensor is one entry of a safetensors file.
type stTensor struct {
	DType string
	Shape []int
	Data  []byte
}

// readSafetensors parses a safetensors file (8-byte LE header size, JSON
// header, data) on its own, so the comparison does not trust our reader.
func readSafetensors(t *testing.T, path string) map[string]stTensor {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(b)
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &hdr); err != nil {
		t.Fatal(err)
	}
	body := b[8+n:]
	out := map[string]stTensor{}
	for name, raw := range hdr {
		if name == "__metadata__" {
			continue
		}
		var e struct {
			DType   string   `json:"dtype"`
			Shape   []int    `json:"shape"`
			Offsets [2]int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out[name] = stTensor{e.DType, e.Shape, body[e.Offsets[0]:e.Offsets[1]]}
	}
	return out
}

// expectedTensor is one entry of testdata/expected.json (make_fixtures.py).
type expectedTensor struct {
	DType string `json:"dtype"`
	Shape []int  `json:"shape"`
	Hex   string `json:"hex"`
}

var torchDType = map[string]string{
	"torch.float64": "F64", "torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16",
	"torch.int64": "I64", "torch.int32": "I32", "torch.int16": "I16", "torch.int8": "I8",
	"torch.uint8": "U8", "torch.bool": "BOOL",
}

func readExpected(t *testing.T) map[string]expectedTensor {
	t.Helper()
	b, err := os.ReadFile("testdata/expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]expectedTensor
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}
