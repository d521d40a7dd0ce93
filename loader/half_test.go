package loader_test

import (
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/kernels"
	"github.com/bertstream/bertstream/loader"
	"github.com/bertstream/bertstream/loader/loadertest"
	"github.com/bertstream/bertstream/loader/safetensors"
	"github.com/bertstream/bertstream/nn"
)

// TestHalfCheckpoints: bert-pretraining saved as F16, and as BF16, answers
// exactly as the same values saved as F32 do, on a first pass of few
// tokens (weights converted when read and used in place), a second (packed
// from a converted copy) and a full batch: weights converted when read
// compute what F32 weights of their values compute.
func TestHalfCheckpoints(t *testing.T) {
	const src = "../testdata/bert-tiny/bert-pretraining"
	ref, err := loadertest.ReadReference("../testdata/bert-tiny")
	if err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Open(filepath.Join(src, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	T := ref.Inputs.T
	one := bert.Inputs{B: 1, T: T, IDs: ref.Inputs.IDs[:T], Mask: ref.Inputs.Mask[:T]}
	if ref.Inputs.TypeIDs != nil {
		one.TypeIDs = ref.Inputs.TypeIDs[:T]
	}
	for _, dt := range []string{"F16", "BF16"} {
		t.Run(dt, func(t *testing.T) {
			half, full := t.TempDir(), t.TempDir()
			var hs, fs []safetensors.Tensor
			for _, ten := range f.Tensors {
				h, g := ten, ten
				if ten.DType == "F32" {
					vals := unsafe.Slice((*float32)(unsafe.Pointer(&ten.Data[0])), len(ten.Data)/4)
					u := make([]uint16, len(vals))
					back := make([]float32, len(vals))
					if dt == "F16" {
						kernels.F32ToF16(u, vals)
						kernels.F16ToF32(back, u)
					} else {
						kernels.F32ToBF16(u, vals)
						kernels.BF16ToF32(back, u)
					}
					h.DType = dt
					h.Data = unsafe.Slice((*byte)(unsafe.Pointer(&u[0])), 2*len(u))
					g.Data = unsafe.Slice((*byte)(unsafe.Pointer(&back[0])), 4*len(back))
				}
				hs, fs = append(hs, h), append(fs, g)
			}
			for dir, ts := range map[string][]safetensors.Tensor{half: hs, full: fs} {
				if err := safetensors.WriteFile(filepath.Join(dir, "model.safetensors"), ts, nil); err != nil {
					t.Fatal(err)
				}
				for _, name := range []string{"config.json", "vocab.txt"} {
					b, err := os.ReadFile(filepath.Join(src, name))
					if err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			mh, err := loader.Load(half, loader.Options{Backend: nn.CPU{}})
			if err != nil {
				t.Fatal(err)
			}
			defer mh.Close()
			mf, err := loader.Load(full, loader.Options{Backend: nn.CPU{}})
			if err != nil {
				t.Fatal(err)
			}
			defer mf.Close()
			for pass, in := range []bert.Inputs{one, one, ref.Inputs} {
				s := nn.NewScope("half")
				oh, err := mh.Forward(s, in, mh.WantAll())
				if err != nil {
					t.Fatal(err)
				}
				of, err := mf.Forward(s, in, mf.WantAll())
				if err != nil {
					t.Fatal(err)
				}
				for name, p := range map[string][2]*nn.Tensor{"sequence": {oh.Sequence, of.Sequence}, "pooled": {oh.Pooled, of.Pooled},
					"mlm": {oh.MLMLogits, of.MLMLogits}, "nsp": {oh.NSPLogits, of.NSPLogits}} {
					if d := nn.MaxAbsDiff(p[0].F32(), p[1].F32()); d > 1e-5 {
						t.Errorf("pass %d (B=%d): %s differs from the F32 checkpoint's by %g", pass, in.B, name, d)
					}
				}
				s.Close()
			}
		})
	}
}
