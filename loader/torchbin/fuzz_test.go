package torchbin

import (
	"archive/zip"
	"bytes"
	"os"
	"testing"
)

// fuzzSeeds are small hand-made pickles that reach the VM's main paths:
// containers, memo, globals (allowed and not), persistent ids, BUILD.
func fuzzSeeds() [][]byte {
	one := []tensorSpec{{name: "w", storage: "FloatStorage", key: "0", numel: 4, shape: []int64{2, 2}, stride: []int64{1, 2}}}
	return [][]byte{
		stateDictPickle(one, false),
		stateDictPickle(one, true),
		newPickle(2).global("os", "system").mark().str("id").raw('t', 'R').stop(),
		newPickle(4).stackGlobal("builtins", "eval").mark().str("1").raw('t', 'R').stop(),
		newPickle(2).raw('}').mark().str("a").raw('K', 1).str("b").raw(']', 'q', 0, 'N', 'a', 'h', 0, 'e', 'u').stop(),
		newPickle(2).global("collections", "OrderedDict").raw(')', 'R', '}').mark().str("_metadata").raw('}', 'u', 'b').stop(),
		newPickle(5).raw(0x95, 4, 0, 0, 0, 0, 0, 0, 0, 0x8f, 0x94, '(', 'K', 1, 0x90, '.').b,
		[]byte("(lp0\nI01\naL12345678901234567890L\naF0.5\na(Vk\nI-1\ndag0\na."),
	}
}

// checkTensors asserts the invariants every successful Read must hold.
func checkTensors(t *testing.T, ts []Tensor) {
	for _, x := range ts {
		es, ok := dtypeSize[x.DType]
		if !ok {
			t.Fatalf("%s: unknown dtype %q", x.Name, x.DType)
		}
		n := 1
		for _, d := range x.Shape {
			if d < 0 {
				t.Fatalf("%s: negative dimension in %v", x.Name, x.Shape)
			}
			n *= d
		}
		if len(x.Data) != n*es {
			t.Fatalf("%s: %d bytes for %s %v", x.Name, len(x.Data), x.DType, x.Shape)
		}
	}
}

func FuzzRead(f *testing.F) {
	for _, p := range []string{fixtureDir + "pytorch_model.bin", fixtureDir + "legacy/pytorch_model.bin",
		"testdata/dtypes.bin", "testdata/dtypes-legacy.bin", "testdata/wrapped.bin"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range fuzzSeeds() {
		f.Add(zipCheckpoint(f, s, map[string][]byte{"0": f32Bytes(1, 2, 3, 4)}, nil))
	}
	root := f32Bytes(1, 2, 3, 4)
	f.Add(legacyCheckpoint(fuzzSeeds()[1], []string{"0"}, []uint64{4}, [][]byte{root}))
	f.Fuzz(func(t *testing.T, data []byte) {
		ts, err := Read("fuzz", data)
		if err != nil {
			return
		}
		checkTensors(t, ts)
	})
}

func FuzzUnpickle(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	// The data pickles of the fixtures, out of their zip archives.
	for _, p := range []string{fixtureDir + "pytorch_model.bin", "testdata/dtypes.bin"} {
		zr, err := zip.OpenReader(p)
		if err != nil {
			f.Fatal(err)
		}
		for _, e := range zr.File {
			if bytes.HasSuffix([]byte(e.Name), []byte("/data.pkl")) {
				rc, err := e.Open()
				if err != nil {
					f.Fatal(err)
				}
				var buf bytes.Buffer
				if _, err := buf.ReadFrom(rc); err != nil {
					f.Fatal(err)
				}
				rc.Close()
				f.Add(buf.Bytes())
			}
		}
		zr.Close()
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// Every storage resolves to 64 bytes of data so that tensors get
		// built and materialized from whatever the pickle declares.
		sts := storages{}
		load := func(pid any) (any, error) {
			dtype, key, numel, err := parseStoragePID(pid, 5)
			if err != nil {
				return nil, err
			}
			st, err := sts.get(dtype, key, numel)
			if err != nil {
				return nil, err
			}
			st.data = make([]byte, 64)
			return st, nil
		}
		v, n, err := unpickle(data, load)
		if err != nil {
			return
		}
		if n > len(data) {
			t.Fatalf("consumed %d of %d bytes", n, len(data))
		}
		ck := checkpoint{root: v, budget: int64(len(data))}
		ts, err := ck.tensors()
		if err != nil {
			return
		}
		checkTensors(t, ts)
	})
}
