package torchbin

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

const fixtureDir = "../../testdata/bert-tiny/bert-pretraining/"

// TestFixtureFormats loads both torch.save formats of the bert-tiny
// checkpoint and checks them tensor by tensor against model.safetensors,
// which holds the same weights.
func TestFixtureFormats(t *testing.T) {
	want := readSafetensors(t, fixtureDir+"model.safetensors")
	for _, tc := range []struct{ name, path string }{
		{"zip", fixtureDir + "pytorch_model.bin"},
		{"legacy", fixtureDir + "legacy/pytorch_model.bin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Open(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			ts := f.Tensors
			got := map[string]Tensor{}
			for _, x := range ts {
				got[x.Name] = x
			}
			// The two files differ only where save_pretrained and torch.save
			// differ: the .bin keeps the tied decoder weight, the
			// safetensors file the int64 position_ids buffer.
			if _, ok := got["bert.embeddings.position_ids"]; ok {
				t.Error("position_ids present in the .bin, the fixture has none")
			}
			dec, ok := got["cls.predictions.decoder.weight"]
			if !ok {
				t.Fatal("cls.predictions.decoder.weight missing")
			}
			emb := want["bert.embeddings.word_embeddings.weight"]
			if dec.DType != emb.DType || !reflect.DeepEqual(dec.Shape, emb.Shape) || !bytes.Equal(dec.Data, emb.Data) {
				t.Error("tied decoder weight differs from the word embeddings")
			}
			if len(got) != len(want) {
				t.Errorf("%d tensors, safetensors has %d (minus position_ids, plus decoder)", len(got), len(want))
			}
			for name, w := range want {
				if name == "bert.embeddings.position_ids" {
					continue
				}
				g, ok := got[name]
				if !ok {
					t.Errorf("%s: missing", name)
					continue
				}
				if g.DType != w.DType || !reflect.DeepEqual(g.Shape, w.Shape) {
					t.Errorf("%s: %s %v, want %s %v", name, g.DType, g.Shape, w.DType, w.Shape)
					continue
				}
				if !bytes.Equal(g.Data, w.Data) {
					t.Errorf("%s: data differs", name)
				}
			}
			if ts[0].Name != "bert.embeddings.word_embeddings.weight" || ts[len(ts)-1].Name != "cls.seq_relationship.bias" {
				t.Errorf("tensors not in state dict order: first %q, last %q", ts[0].Name, ts[len(ts)-1].Name)
			}
		})
	}
}

// checkExpected compares tensors with expected.json written by
// make_fixtures.py from PyTorch's own view of the same tensors.
func checkExpected(t *testing.T, ts []Tensor, want map[string]expectedTensor, only []string) {
	t.Helper()
	if only == nil {
		for k := range want {
			only = append(only, k)
		}
	}
	got := map[string]Tensor{}
	for _, x := range ts {
		if _, dup := got[x.Name]; dup {
			t.Errorf("%s: returned twice", x.Name)
		}
		got[x.Name] = x
	}
	if len(got) != len(only) {
		t.Errorf("%d tensors, want %d", len(got), len(only))
	}
	for _, name := range only {
		w := want[name]
		g, ok := got[name]
		if !ok {
			t.Errorf("%s: missing", name)
			continue
		}
		if g.DType != torchDType[w.DType] || !reflect.DeepEqual(g.Shape, w.Shape) {
			t.Errorf("%s: %s %v, want %s %v", name, g.DType, g.Shape, torchDType[w.DType], w.Shape)
			continue
		}
		if h := hex.EncodeToString(g.Data); h != w.Hex {
			t.Errorf("%s: data %s, want %s", name, h, w.Hex)
		}
	}
}

// TestTorchWritten reads checkpoints written by PyTorch with every dtype,
// strided and offset views, tied weights, a Parameter, 0-d and empty
// tensors, in the zip format (pickle protocol 4: FRAME, MEMOIZE,
// STACK_GLOBAL) and the legacy format.
func TestTorchWritten(t *testing.T) {
	want := readExpected(t)
	for _, file := range []string{"dtypes.bin", "dtypes-legacy.bin"} {
		t.Run(file, func(t *testing.T) {
			f, err := Open(filepath.Join("testdata", file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			ts := f.Tensors
			checkExpected(t, ts, want, nil)
			var a, b Tensor
			for _, x := range ts {
				switch x.Name {
				case "tied.a":
					a = x
				case "tied.b":
					b = x
				}
			}
			// Tied weights come from one storage and are not copied twice.
			if &a.Data[0] != &b.Data[0] {
				t.Error("tied.a and tied.b do not share memory")
			}
		})
	}
}

func TestWrappedStateDict(t *testing.T) {
	f, err := Open("testdata/wrapped.bin")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ts := f.Tensors
	checkExpected(t, ts, readExpected(t), []string{"f32", "i64", "tied.a"})
}

// TestForeignGlobals checks that globals outside the allow-list are refused
// by name, whichever opcode introduces them and wherever the pickle sits.
func TestForeignGlobals(t *testing.T) {
	for _, g := range [][2]string{
		{"os", "system"}, {"posix", "system"}, {"builtins", "eval"}, {"builtins", "exec"},
		{"__builtin__", "exec"}, {"__builtin__", "eval"}, {"subprocess", "Popen"},
		{"torch", "load"}, {"torch._utils", "_rebuild_qtensor"}, {"collections", "defaultdict"},
	} {
		name := g[0] + "." + g[1]
		want := `global "` + name + `" is not allowed`
		// Each pickle would call name("echo pwned") if it were executed.
		viaGlobal := newPickle(2).global(g[0], g[1]).mark().str("echo pwned").raw('t', 'R').stop()
		viaStack := newPickle(4).stackGlobal(g[0], g[1]).mark().str("echo pwned").raw('t', 'R').stop()
		viaInst := newPickle(2).mark().str("echo pwned").op("i" + g[0] + "\n" + g[1] + "\n").stop()
		for kind, pkl := range map[string][]byte{"GLOBAL": viaGlobal, "STACK_GLOBAL": viaStack, "INST": viaInst} {
			t.Run(name+"/"+kind, func(t *testing.T) {
				_, _, err := unpickle(pkl, nil)
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("error %v, want %q", err, want)
				}
				if !strings.Contains(err.Error(), "(offset ") {
					t.Errorf("error %v does not give the offset", err)
				}
				_, err = Read("evil.bin", zipCheckpoint(t, pkl, nil, nil))
				if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "evil.bin") {
					t.Fatalf("Read: error %v, want %q naming the file", err, want)
				}
			})
		}
	}
	// The exact message, with the opcode's offset: GLOBAL is at byte 2.
	_, _, err := unpickle(newPickle(2).global("os", "system").stop(), nil)
	if err == nil || err.Error() != `pickle: global "os.system" is not allowed (offset 2)` {
		t.Errorf("got %v", err)
	}
	// Allowed globals are still not arbitrary callables.
	_, _, err = unpickle(newPickle(2).global("torch", "FloatStorage").mark().long(1<<40).raw('t', 'R').stop(), nil)
	if err == nil || !strings.Contains(err.Error(), "torch.FloatStorage is not callable") {
		t.Errorf("calling a storage class: %v", err)
	}
}

// naiveStrided computes what a strided view holds with the textbook
// formula, as a reference for the odometer in gather.
func naiveStrided(storage []float32, off int64, shape, stride []int64) []float32 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	out := make([]float32, 0, n)
	for lin := int64(0); lin < n; lin++ {
		pos, rem := off, lin
		for d := len(shape) - 1; d >= 0; d-- {
			pos += (rem % shape[d]) * stride[d]
			rem /= shape[d]
		}
		out = append(out, storage[pos])
	}
	return out
}

func TestStridedViews(t *testing.T) {
	storage := make([]float32, 60)
	for i := range storage {
		storage[i] = float32(i)
	}
	specs := []tensorSpec{
		{name: "contiguous", shape: []int64{3, 4}, stride: []int64{4, 1}},
		{name: "transposed", shape: []int64{4, 3}, stride: []int64{1, 4}},
		{name: "sliced", offset: 7, shape: []int64{2, 3}, stride: []int64{10, 1}},
		{name: "permuted", offset: 1, shape: []int64{3, 4, 2}, stride: []int64{1, 3, 12}},
		{name: "every-other", offset: 5, shape: []int64{5}, stride: []int64{2}},
		{name: "broadcast-1", shape: []int64{1, 6}, stride: []int64{0, 1}},
		{name: "scalar", offset: 59, shape: []int64{}, stride: []int64{}},
		{name: "empty", offset: 60, shape: []int64{0, 3}, stride: []int64{3, 1}},
		{name: "last-element", offset: 0, shape: []int64{2, 2}, stride: []int64{58, 1}},
	}
	for i := range specs {
		specs[i].storage, specs[i].key, specs[i].numel = "FloatStorage", "0", int64(len(storage))
	}
	data := zipCheckpoint(t, stateDictPickle(specs, false), map[string][]byte{"0": f32Bytes(storage...)}, nil)
	ts, err := Read("strided.bin", data)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != len(specs) {
		t.Fatalf("%d tensors, want %d", len(ts), len(specs))
	}
	for i, s := range specs {
		got := ts[i]
		var wantShape []int
		for _, d := range s.shape {
			wantShape = append(wantShape, int(d))
		}
		if got.Name != s.name || got.DType != "F32" || len(got.Shape) != len(wantShape) ||
			(len(wantShape) > 0 && !reflect.DeepEqual(got.Shape, wantShape)) {
			t.Errorf("%s: got %s %s %v", s.name, got.Name, got.DType, got.Shape)
			continue
		}
		want := f32Bytes(naiveStrided(storage, s.offset, s.shape, s.stride)...)
		if !bytes.Equal(got.Data, want) {
			t.Errorf("%s: data %v, want %v", s.name, got.Data, want)
		}
	}

	// The same views from a big-endian machine's zip come out little-endian.
	be := make([]byte, 4*len(storage))
	for i, v := range storage {
		binary.BigEndian.PutUint32(be[4*i:], math.Float32bits(v))
	}
	data = zipCheckpoint(t, stateDictPickle(specs, false), map[string][]byte{"0": be}, map[string][]byte{"byteorder": []byte("big")})
	ts, err = Read("big-endian.bin", data)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range specs {
		if want := f32Bytes(naiveStrided(storage, s.offset, s.shape, s.stride)...); !bytes.Equal(ts[i].Data, want) {
			t.Errorf("big-endian %s: data %v, want %v", s.name, ts[i].Data, want)
		}
	}
}

// TestLegacyView covers pre-1.0 storage views in the legacy format: a
// persistent id naming a slice (view_key, offset, size) of a root storage.
func TestLegacyView(t *testing.T) {
	root := f32Bytes(0, 1, 2, 3, 4, 5, 6, 7)
	specs := []tensorSpec{
		{name: "whole", storage: "FloatStorage", key: "r", numel: 8, shape: []int64{8}, stride: []int64{1}},
		{name: "view", storage: "FloatStorage", key: "r", numel: 8, shape: []int64{2, 2}, stride: []int64{1, 2},
			legacyView: []any{"v", int64(3), int64(4)}},
	}
	data := legacyCheckpoint(stateDictPickle(specs, true), []string{"r"}, []uint64{8}, [][]byte{root})
	ts, err := Read("legacy-view.bin", data)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ts[0].Data, root) || !bytes.Equal(ts[1].Data, f32Bytes(3, 5, 4, 6)) {
		t.Errorf("got %v and %v", ts[0].Data, ts[1].Data)
	}
}

// TestBadInput: malformed files get an error that says what and where,
// never a panic.
func TestBadInput(t *testing.T) {
	one := []tensorSpec{{name: "w", storage: "FloatStorage", key: "0", numel: 4, shape: []int64{2, 2}, stride: []int64{2, 1}}}
	okStorage := map[string][]byte{"0": f32Bytes(1, 2, 3, 4)}
	withSpec := func(f func(*tensorSpec)) []tensorSpec {
		s := one[0]
		f(&s)
		return []tensorSpec{s}
	}
	huge8 := newPickle(4).raw(0x8d)
	huge8.b = binary.LittleEndian.AppendUint64(huge8.b, math.MaxUint64)
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "not a PyTorch checkpoint"},
		{"text", []byte("hello"), "not a PyTorch checkpoint"},
		{"unknown opcode", zipCheckpoint(t, newPickle(2).raw(0xff).stop(), nil, nil), "unknown opcode 0xff (offset 2)"},
		{"stack underflow", zipCheckpoint(t, newPickle(2).raw('N', 'R').stop(), nil, nil), "stack underflow (offset 3)"},
		{"pop below mark", zipCheckpoint(t, newPickle(2).raw('N', '(', 0x85).stop(), nil, nil), "stack underflow (offset 4)"},
		{"no mark", zipCheckpoint(t, newPickle(2).raw('t').stop(), nil, nil), "no MARK"},
		{"memo index", zipCheckpoint(t, newPickle(2).raw('h', 5).stop(), nil, nil), "memo index 5 not defined (offset 2)"},
		{"long memo index", zipCheckpoint(t, newPickle(2).raw('j', 0xff, 0xff, 0xff, 0xff).stop(), nil, nil), "memo index 4294967295 not defined"},
		{"huge BINUNICODE8", zipCheckpoint(t, huge8.stop(), nil, nil), "need 18446744073709551615 bytes"},
		{"huge BINUNICODE", zipCheckpoint(t, newPickle(2).raw('X', 0xff, 0xff, 0xff, 0x7f).stop(), nil, nil), "unexpected end of data"},
		{"no stop", zipCheckpoint(t, newPickle(2).raw('N').b, nil, nil), "no STOP opcode"},
		{"protocol 6", zipCheckpoint(t, newPickle(6).raw('N').stop(), nil, nil), "unsupported pickle protocol 6"},
		{"deep marks", zipCheckpoint(t, newPickle(2).op(strings.Repeat("(", maxMarks+1)).stop(), nil, nil), "MARK nesting deeper than 4096"},
		{"deep stack", zipCheckpoint(t, newPickle(2).raw('N').op(strings.Repeat("2", maxStack)).stop(), nil, nil), "stack deeper than"},
		{"not a dict", zipCheckpoint(t, newPickle(2).raw('N').stop(), nil, nil), "holds None, not a state dict"},
		{"no tensors", zipCheckpoint(t, newPickle(2).raw('}').stop(), nil, nil), "no tensors"},
		{"no data.pkl", zipCheckpoint(t, nil, nil, nil)[:0], "not a PyTorch checkpoint"},
		{"petabyte storage", zipCheckpoint(t, stateDictPickle(withSpec(func(s *tensorSpec) { s.numel = 1 << 50 }), false), okStorage, nil),
			`storage "0": archive/data/0 holds 16 bytes, 1125899906842624 F32 elements need 4503599627370496`},
		{"negative storage", zipCheckpoint(t, stateDictPickle(withSpec(func(s *tensorSpec) { s.numel = -1 }), false), okStorage, nil),
			`bad element count -1`},
		{"missing storage", zipCheckpoint(t, stateDictPickle(one, false), nil, nil), `no entry archive/data/0`},
		{"petabyte shape", zipCheckpoint(t, stateDictPickle(withSpec(func(s *tensorSpec) { s.shape = []int64{1 << 40, 1 << 40} }), false), okStorage, nil),
			"has too many elements"},
		{"out of bounds", zipCheckpoint(t, stateDictPickle(withSpec(func(s *tensorSpec) { s.offset = 1 }), false), okStorage, nil),
			`tensor "w": shape [2 2] with strides [2 1] at offset 1 reaches past the 4 elements of storage "0"`},
		{"stride out of bounds", zipCheckpoint(t, stateDictPickle(withSpec(func(s *tensorSpec) { s.stride = []int64{3, 1} }), false), okStorage, nil),
			`tensor "w": shape [2 2] with strides [3 1]`},
		{"negative stride", zipCheckpoint(t, stateDictPickle(withSpec(func(s *tensorSpec) { s.stride = []int64{-2, 1} }), false), okStorage, nil),
			"bad stride -2 in dimension 0"},
		{"broadcast", zipCheckpoint(t, stateDictPickle(withSpec(func(s *tensorSpec) { s.shape, s.stride = []int64{1000, 4}, []int64{0, 1} }), false), okStorage, nil),
			"overlapping views are not supported"},
		{"unknown storage class", zipCheckpoint(t, stateDictPickle(withSpec(func(s *tensorSpec) { s.storage = "QInt8Storage" }), false), okStorage, nil),
			`global "torch.QInt8Storage" is not allowed`},
		{"dtype conflict", zipCheckpoint(t, stateDictPickle(append(append([]tensorSpec{}, one...),
			withSpec(func(s *tensorSpec) { s.name, s.storage = "v", "IntStorage" })...), false), okStorage, nil),
			`storage "0" is declared both as 4 F32 and as 4 I32`},
		{"big-endian marker", zipCheckpoint(t, stateDictPickle(one, false), okStorage, map[string][]byte{"byteorder": []byte("middle")}),
			`unknown byte order "middle"`},
		{"legacy magic", newPickle(2).raw('K', 1).stop(), "magic number 1"},
		{"legacy huge storage", legacyCheckpoint(stateDictPickle(withSpec(func(s *tensorSpec) { s.numel = 1 << 50 }), true),
			[]string{"0"}, []uint64{1 << 50}, [][]byte{f32Bytes(1, 2, 3, 4)}),
			`storage "0" at byte 306: 4503599627370496 bytes declared, 16 left in the file`},
		{"legacy count mismatch", legacyCheckpoint(stateDictPickle(one, true), []string{"0"}, []uint64{3}, [][]byte{f32Bytes(1, 2, 3)}),
			`holds 3 elements, the pickle says 4`},
		{"legacy unlisted storage", legacyCheckpoint(stateDictPickle(one, true), nil, nil, nil),
			`storage "0" is used but not in the storage key list`},
		{"legacy trailing bytes", append(legacyCheckpoint(stateDictPickle(one, true), []string{"0"}, []uint64{4}, [][]byte{f32Bytes(1, 2, 3, 4)}), 0),
			"1 unexpected bytes after the last storage"},
		{"legacy bad view", legacyCheckpoint(stateDictPickle(withSpec(func(s *tensorSpec) { s.legacyView = []any{"v", int64(3), int64(2)} }), true),
			[]string{"0"}, []uint64{4}, [][]byte{f32Bytes(1, 2, 3, 4)}),
			`bad view metadata ("v", 3, 2) for 4 elements`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			ts, err := Read("bad.bin", tc.data)
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatalf("no error, got %d tensors", len(ts))
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "bad.bin") {
				t.Fatalf("error %q, want it to name the file and contain %q", err, tc.want)
			}
			// Declared sizes must not turn into allocations: what is
			// allocated stays proportional to the input.
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20+64*uint64(len(tc.data)) {
				t.Errorf("allocated %d bytes for a %d-byte input", alloc, len(tc.data))
			}
		})
	}
}

// TestTruncated cuts the fixtures at many lengths: every prefix must fail
// cleanly (the legacy format has no trailer, so only cuts inside the
// pickles and storages are errors, which is all of them).
func TestTruncated(t *testing.T) {
	for _, p := range []string{fixtureDir + "pytorch_model.bin", fixtureDir + "legacy/pytorch_model.bin", "testdata/dtypes.bin", "testdata/dtypes-legacy.bin"} {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		step := len(data)/97 + 1
		for n := 0; n < len(data); n += step {
			if _, err := Read(p, data[:n]); err == nil {
				t.Errorf("%s cut at %d of %d bytes: no error", p, n, len(data))
			}
		}
		// The pickle region is where the parser does the most; cut it finely.
		for n := 0; n < 9000 && n < len(data); n += 7 {
			if _, err := Read(p, data[:n]); err == nil {
				t.Errorf("%s cut at %d: no error", p, n)
			}
		}
	}
}

// TestParameterAndProtocol0 covers _rebuild_parameter and the protocol 0
// text opcodes (INT, LONG, FLOAT, UNICODE, PUT/GET, DICT, LIST).
func TestParameterAndProtocol0(t *testing.T) {
	// OrderedDict([("wé", 7)]) as protocol 0 writes it.
	v, _, err := unpickle([]byte("ccollections\nOrderedDict\np0\n((lp1\n(Vw\\u00e9\np2\nI7\ntp3\natRp4\n."), nil)
	if err != nil {
		t.Fatal(err)
	}
	d, ok := v.(*pyDict)
	if !ok || len(d.keys) != 1 || d.keys[0] != "wé" || d.vals[0] != int64(7) {
		t.Fatalf("got %#v", v)
	}
	// [True, 12345678901234567890, 0.5, {"k": -1}, <the list itself>]
	v, _, err = unpickle([]byte("(lp0\nI01\naL12345678901234567890L\naF0.5\na(Vk\nI-1\ndag0\na."), nil)
	if err != nil {
		t.Fatal(err)
	}
	l, ok := v.(*pyList)
	if !ok || len(l.items) != 5 || l.items[0] != true || fmt.Sprint(l.items[1]) != "12345678901234567890" ||
		l.items[2] != 0.5 || l.items[4] != l {
		t.Fatalf("got %#v", v)
	}
	if d, ok := l.items[3].(*pyDict); !ok || d.vals[0] != int64(-1) {
		t.Fatalf("got %#v", l.items[3])
	}

	specs := []tensorSpec{{name: "p", storage: "HalfStorage", key: "k", numel: 2, shape: []int64{2}, stride: []int64{1}}}
	pkl := stateDictPickle(specs, false)
	// Wrap the tensor in _rebuild_parameter(tensor, True, OrderedDict()).
	i := bytes.Index(pkl, []byte("ctorch._utils\n_rebuild_tensor_v2\n"))
	wrapped := append([]byte{}, pkl[:i]...)
	wrapped = append(wrapped, "ctorch._utils\n_rebuild_parameter\n("...)
	end := bytes.LastIndex(pkl, []byte("u."))
	wrapped = append(wrapped, pkl[i:end]...)
	wrapped = append(wrapped, "\x88ccollections\nOrderedDict\n)RtRu."...)
	ts, err := Read("param.bin", zipCheckpoint(t, wrapped, map[string][]byte{"k": {0, 0x3c, 0, 0xc0}}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 1 || ts[0].DType != "F16" || !bytes.Equal(ts[0].Data, []byte{0, 0x3c, 0, 0xc0}) {
		t.Fatalf("got %+v", ts)
	}
}
