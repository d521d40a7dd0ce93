package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/bertstream/bertstream/loader/loadertest"
	"github.com/bertstream/bertstream/loader/safetensors"
)

// TestDumpInt8 runs dump with --dtype int8 on the classifier fixture: the
// logits stay within the INT8 bound of loader's parity test of PyTorch's,
// and are not F32's (the quantized layers did run).
func TestDumpInt8(t *testing.T) {
	ref, err := loadertest.ReadReference(fixtures)
	if err != nil {
		t.Fatal(err)
	}
	logits := func(dtype string) []float32 {
		out := filepath.Join(t.TempDir(), dtype+".safetensors")
		run(t, "dump", "--model", filepath.Join(fixtures, "bert-classifier"), "--dtype", dtype,
			"--inputs", filepath.Join(fixtures, "reference.safetensors"), "--out", out)
		f, err := safetensors.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, tt := range f.Tensors {
			if tt.Name == "logits" {
				v := make([]float32, len(tt.Data)/4)
				for i := range v {
					v[i] = f32le(tt.Data[4*i:])
				}
				return v
			}
		}
		t.Fatal("no logits in the dump")
		return nil
	}
	i8, f32 := logits("int8"), logits("f32")
	cmp := loadertest.Comparer{T: t, Ref: ref}
	cmp.Rows("classifier.logits", i8, 0.4)
	same := true
	for i := range i8 {
		same = same && i8[i] == f32[i]
	}
	if same {
		t.Error("--dtype int8 gave F32's logits bit for bit")
	}
}

// TestInt8OnlyOnCPU: --dtype int8 with another device is refused, naming
// the reason.
func TestInt8OnlyOnCPU(t *testing.T) {
	code, out, errs := runCode("predict", "--model", filepath.Join(fixtures, "bert-classifier"), "--task", "classify", "--device", "cuda", "--dtype", "int8", "text")
	if code == 0 || out != "" || !strings.Contains(errs, "INT8 linear layers are a CPU backend option") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
	}
}
