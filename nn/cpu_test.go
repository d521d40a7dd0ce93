package nn_test

import (
	"testing"

	"github.com/bertstream/bertstream/kernels"

	"github.com/bertstream/bertstream/nn"
	"github.com/bertstream/bertstream/nn/nntest"
)

// TestCPUConformance runs the suite once per kernel version this CPU
// has (avx512, avx2, go), so that every version of every kernel meets the
// references on the suite's odd shapes.
func TestCPUConformance(t *testing.T) {
	b, err := nn.Open("cpu", nn.Options{})
	if err != nil {
		t.Fatal(err)
	}
	prev := kernels.Version()
	defer kernels.SetVersion(prev)
	for _, v := range kernels.Versions() {
		t.Run(v, func(t *testing.T) {
			if err := kernels.SetVersion(v); err != nil {
				t.Fatal(err)
			}
			nntest.Run(t, b)
		})
	}
}

// TestCPUScopeLeak checks that closing a scope frees what operations
// allocated in it and its children.
func TestCPUScopeLeak(t *testing.T) {
	b, err := nn.Open("cpu", nn.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := nn.NewScope("leak")
	x, err := nn.HostF32(s, []float32{1, 2, 3, 4, 5, 6}, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	c := s.Child("layer")
	w, err := b.Upload(c, x, nn.F32)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.PrepareWeight(w); err != nil {
		t.Fatal(err)
	}
	out := b.New(c, nn.F32, 2, 2)
	if err := b.Linear(out, x, w, nil, nn.ActGELU); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Live(); n != 3 {
		t.Errorf("live tensors before close: %d, want 3", n)
	}
	s.Close()
	if n, bytes := s.Live(); n != 0 || bytes != 0 {
		t.Errorf("after close: %d tensors, %d bytes live", n, bytes)
	}
}
