//go:build cuda

package cuda

import (
	"errors"
	"os"
	"testing"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/loader"
	"github.com/bertstream/bertstream/loader/loadertest"
	"github.com/bertstream/bertstream/nn"
	"github.com/bertstream/bertstream/nn/nntest"
)

const fixtures = "../testdata/bert-tiny"

// open opens device 0 for a test, or skips the test where this machine
// has no usable CUDA device; any other failure (no cuBLAS, a kernel that
// does not load) fails it.
func open(t testing.TB, dt nn.DType) *Backend {
	t.Helper()
	be, err := Open(Config{Compute: dt, CublasPath: os.Getenv(LibraryPathEnv)})
	if errors.Is(err, ErrNoDevice) {
		t.Skipf("skipped: %v; these tests need an NVIDIA GPU of compute capability 8.0 or newer and its driver", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := be.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	t.Logf("%v", be)
	return be
}

var dtypes = []nn.DType{nn.F32, nn.F16, nn.BF16}

// TestConformance runs the backend suite in each compute dtype; nntest
// scales its F32 tolerances to F16's and BF16's unit roundoff.
func TestConformance(t *testing.T) {
	for _, dt := range dtypes {
		t.Run(dt.String(), func(t *testing.T) { nntest.Run(t, open(t, dt)) })
	}
}

// TestParity compares the bert-tiny fixtures with Hugging Face's outputs:
// F32 to the fixtures' F32 tolerances, F16 and BF16 to the bounds of
// tolerance_test.go.
func TestParity(t *testing.T) {
	for _, c := range []struct {
		dt  nn.DType
		tol loadertest.Tolerances
	}{{nn.F32, loadertest.F32}, {nn.F16, parityF16}, {nn.BF16, parityBF16}} {
		t.Run(c.dt.String(), func(t *testing.T) { loadertest.Parity(t, fixtures, open(t, c.dt), c.tol) })
	}
}

// TestSteadyState checks the pool: once a forward pass has run, another of
// the same batch takes no memory from the driver.
func TestSteadyState(t *testing.T) {
	be := open(t, nn.F16)
	m, err := loader.Load(fixtures+"/bert-pretraining", loader.Options{Backend: be})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ref, err := loadertest.ReadReference(fixtures)
	if err != nil {
		t.Fatal(err)
	}
	pass := func() int64 {
		s := nn.NewScope("pass")
		defer s.Close()
		if _, err := m.Forward(s, ref.Inputs, m.WantAll()); err != nil {
			t.Fatal(err)
		}
		if err := be.Sync(); err != nil {
			t.Fatal(err)
		}
		inUse, cached := be.MemStats()
		return inUse + cached
	}
	first := pass()
	if again := pass(); again != first {
		t.Errorf("device memory held grew from %d to %d bytes on the second pass", first, again)
	}
}

// TestArguments checks what the backend refuses: tensors of another
// device or dtype, tensors whose scope is closed, index tensors it did not
// upload, rows named twice.
func TestArguments(t *testing.T) {
	be := open(t, nn.F32)
	s := nn.NewScope("arguments")
	defer s.Close()
	host, err := nn.HostF32(s, []float32{1, 2, 3, 4, 5, 6}, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := be.Upload(s, host, nn.F32)
	if err != nil {
		t.Fatal(err)
	}
	ones, err := nn.HostF32(s, []float32{1, 1, 1}, 3)
	if err != nil {
		t.Fatal(err)
	}
	gamma, err := be.Upload(s, ones, nn.F32)
	if err != nil {
		t.Fatal(err)
	}
	norm := func(x *nn.Tensor) error { return be.LayerNorm(x, x, nil, gamma, gamma, 1e-12) }
	if err := norm(host); err == nil {
		t.Error("layernorm of a host tensor did not fail")
	}
	half, err := be.Upload(s, host, nn.F16)
	if err != nil {
		t.Fatal(err)
	}
	if err := norm(half); err == nil {
		t.Error("layernorm of an F16 tensor on an F32 backend did not fail")
	}
	gone := s.Child("gone")
	old, err := be.Upload(gone, host, nn.F32)
	if err != nil {
		t.Fatal(err)
	}
	gone.Close()
	if err := norm(old); err == nil {
		t.Error("layernorm of a tensor whose scope is closed did not fail")
	}
	if err := be.Gather(be.New(s, nn.F32, 1, 3), dev, be.New(s, nn.I32, 1)); err == nil {
		t.Error("gather with an index tensor made by New did not fail")
	}
	idx, err := nn.HostI32(s, []int32{1, 1}, 2)
	if err != nil {
		t.Fatal(err)
	}
	didx, err := be.Upload(s, idx, nn.I32)
	if err != nil {
		t.Fatal(err)
	}
	if err := be.Scatter(be.New(s, nn.F32, 2, 3), dev, didx); err == nil {
		t.Error("scatter naming row 1 twice did not fail")
	}
}

// TestForwardMatchesCPU runs random models whose heads of 32 and 24
// values take each attention kernel the backend picks on the GPU, and on
// the CPU backend: as it is for F32, with the GPU's roundings
// (roundingCPU) for F16 and BF16.
func TestForwardMatchesCPU(t *testing.T) {
	for _, c := range []struct {
		hidden, heads int
	}{{128, 4}, {96, 4}} {
		cfg, err := bert.Preset("nano")
		if err != nil {
			t.Fatal(err)
		}
		cfg.HiddenSize, cfg.NumAttentionHeads, cfg.IntermediateSize, cfg.NumHiddenLayers = c.hidden, c.heads, 2*c.hidden, 2
		for _, dt := range dtypes {
			be := open(t, dt)
			gpu, err := bert.NewRandom(cfg, be, 7)
			if err != nil {
				t.Fatal(err)
			}
			var ref nn.Backend = nn.CPU{}
			if dt != nn.F32 {
				ref = roundingCPU{dt: dt}
			}
			cpu, err := bert.NewRandom(cfg, ref, 7)
			if err != nil {
				t.Fatal(err)
			}
			in := randomInputs(cfg.VocabSize, 5, 77)
			got, want := hidden(t, gpu, in), hidden(t, cpu, in)
			tol := map[nn.DType]float64{nn.F32: 1e-4, nn.F16: parityF16.Hidden, nn.BF16: parityBF16.Hidden}[dt]
			if d := nn.MaxAbsDiff(got, want); d > tol {
				t.Errorf("hidden %d, %d heads, %s: max abs difference from the CPU %.3g exceeds %.3g", c.hidden, c.heads, dt, d, tol)
			}
			gpu.Close()
			cpu.Close()
		}
	}
}

// randomInputs is a batch of b sequences of lengths 1 to t (padded to t).
func randomInputs(vocab, b, t int) bert.Inputs {
	in := bert.Inputs{B: b, T: t, IDs: make([]int32, b*t), Mask: make([]int32, b*t)}
	for i := 0; i < b; i++ {
		n := 1 + (i*37)%t
		if i == 0 {
			n = t
		}
		for j := 0; j < n; j++ {
			in.IDs[i*t+j] = int32((i*131 + j*17) % vocab)
			in.Mask[i*t+j] = 1
		}
	}
	return in
}

// hidden runs m and returns its last hidden state at real tokens (padded
// positions are zero on both backends).
func hidden(t *testing.T, m *bert.Model, in bert.Inputs) []float32 {
	t.Helper()
	s := nn.NewScope("hidden")
	defer s.Close()
	out, err := m.Forward(s, in, bert.Want{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := m.Backend().Download(s, out.Sequence, nn.F32)
	if err != nil {
		t.Fatal(err)
	}
	return append([]float32(nil), h.F32()...)
}
