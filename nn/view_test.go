package nn_test

import (
	"testing"

	"github.com/bertstream/bertstream/nn"
)

// TestHostViewShared: the CPU backend's Upload shares a view's bytes
// instead of copying them, Linear computes from them, and the backing
// closes (a mapped file unmaps) only when its maker and every tensor
// viewing it are done, whichever goes last.
func TestHostViewShared(t *testing.T) {
	data := []float32{1, 2, 3, 4, 5, 6}
	raw := make([]byte, 4*len(data))
	copy(raw, bytesOf(data))
	closed, evicted := 0, 0
	b := nn.NewBacking(func() error { closed++; return nil }, func(p []byte) { evicted += len(p) })

	host, weights := nn.NewScope("host"), nn.NewScope("weights")
	v, err := nn.HostView(host, b, raw, nn.F32, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	be, err := nn.NewCPU(nn.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := be.Upload(weights, v, nn.F32)
	if err != nil {
		t.Fatal(err)
	}
	if &w.F32()[0] != &v.F32()[0] {
		t.Error("Upload copied a view")
	}
	if err := be.PrepareWeight(w); err != nil {
		t.Fatal(err)
	}
	if evicted != len(raw) {
		t.Errorf("evicted %d bytes after packing, want %d", evicted, len(raw))
	}
	x, _ := nn.HostF32(host, []float32{1, 0, 1}, 1, 3)
	out := be.New(host, nn.F32, 1, 2)
	if err := be.Linear(out, x, w, nil, nn.ActNone); err != nil {
		t.Fatal(err)
	}
	if got := out.F32(); got[0] != 4 || got[1] != 10 {
		t.Errorf("Linear from a view: %v, want [4 10]", got)
	}
	if err := b.Release(); err != nil || closed != 0 {
		t.Fatalf("maker's release closed the backing while tensors view it (closed %d, %v)", closed, err)
	}
	host.Close()
	if closed != 0 {
		t.Fatal("closed while the uploaded weight still views it")
	}
	weights.Close()
	if closed != 1 {
		t.Errorf("closed %d times after the last view, want 1", closed)
	}
	if _, err := nn.HostView(nn.NewScope("x"), nn.NewBacking(nil, nil), raw[1:9], nn.F32, 2); err == nil {
		t.Error("a misaligned view was accepted")
	}
}

func bytesOf(f []float32) []byte {
	s := nn.NewScope("bytes")
	defer s.Close()
	t, _ := nn.HostF32(s, f, len(f))
	return append([]byte(nil), t.HostBytes()...)
}
