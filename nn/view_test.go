package nn_test

import (
	"testing"

	"github.com/bertstream/bertstream/kernels"
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
	x, _ := nn.HostF32(host, []float32{1, 0, 1}, 1, 3)
	out := be.New(host, nn.F32, 1, 2)
	// The first product of one row reads the view in place; the second
	// packs the weight, and only then are its pages dropped.
	for i := 0; i < 2; i++ {
		if evicted != 0 {
			t.Errorf("evicted %d bytes before packing", evicted)
		}
		if err := be.Linear(out, x, w, nil, nn.ActNone); err != nil {
			t.Fatal(err)
		}
		if got := out.F32(); got[0] != 4 || got[1] != 10 {
			t.Errorf("Linear %d from a view: %v, want [4 10]", i, got)
		}
	}
	if evicted != len(raw) {
		t.Errorf("evicted %d bytes after packing, want %d", evicted, len(raw))
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

// TestFuseRows: a weight fused from views of a mapped file and from plain
// host tensors computes what the concatenated weight does, shares the
// views (which keep the backing open and are dropped once the weight is
// packed), and builds its row-major bytes, equal to the concatenation,
// only when read.
func TestFuseRows(t *testing.T) {
	const k = 5
	rows := []int{3, 2, 4}
	host, weights := nn.NewScope("host"), nn.NewScope("weights")
	var all []float32
	var parts []*nn.Tensor
	closed, evicted := 0, 0
	b := nn.NewBacking(func() error { closed++; return nil }, func(p []byte) { evicted += len(p) })
	viewBytes := 0
	for i, r := range rows {
		vals := make([]float32, r*k)
		for j := range vals {
			vals[j] = float32(i*100 + j)
		}
		all = append(all, vals...)
		var p *nn.Tensor
		var err error
		if i == 1 {
			p, err = nn.HostF32(host, vals, r, k) // a buffer its owner may change: copied
		} else {
			raw := bytesOf(vals)
			viewBytes += len(raw)
			p, err = nn.HostView(host, b, raw, nn.F32, r, k)
		}
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, p)
	}
	be, err := nn.NewCPU(nn.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := be.FuseRows(weights, parts...)
	if err != nil {
		t.Fatal(err)
	}
	if !nn.SameShape(w.Shape(), []int{9, k}) {
		t.Fatalf("fused shape %v, want [9 %d]", w.Shape(), k)
	}
	if err := be.PrepareWeight(w); err != nil {
		t.Fatal(err)
	}
	// The caller's tensors go; the fused weight keeps what it needs.
	host.Close()
	b.Release()
	if closed != 0 {
		t.Fatal("the backing closed while the fused weight views it")
	}
	s := nn.NewScope("x")
	defer s.Close()
	x, _ := nn.HostF32(s, []float32{1, 0, 0, 0, 1, 0, 1, 0, 0, 0}, 2, k)
	out := be.New(s, nn.F32, 2, 9)
	for i := 0; i < 2; i++ {
		if err := be.Linear(out, x, w, nil, nn.ActNone); err != nil {
			t.Fatal(err)
		}
		for r := 0; r < 9; r++ {
			want0, want1 := all[r*k]+all[r*k+4], all[r*k+1]
			if got := out.F32(); got[r] != want0 || got[9+r] != want1 {
				t.Fatalf("product %d, output %d: %v, %v, want %v, %v", i, r, got[r], got[9+r], want0, want1)
			}
		}
	}
	if evicted != viewBytes {
		t.Errorf("evicted %d bytes of the views once packed, want %d", evicted, viewBytes)
	}
	if d := nn.MaxAbsDiff(w.F32(), all); d != 0 || len(w.F32()) != len(all) {
		t.Errorf("fused bytes differ from the concatenation by %g", d)
	}
	weights.Close()
	if closed != 1 {
		t.Errorf("backing closed %d times after the fused weight went, want 1", closed)
	}
	bad := nn.NewScope("bad")
	defer bad.Close()
	if _, err := be.FuseRows(bad, nn.NewHost(bad, nn.F32, 2, 3), nn.NewHost(bad, nn.F32, 2, 4)); err == nil {
		t.Error("parts of different widths were fused")
	}
}

// TestHostConverted: an F16 view converts when read, and the CPU backend
// computes with it and packs it from converted copies it does not keep.
func TestHostConverted(t *testing.T) {
	vals := []float32{1, -2, 0.5, 3, 0.25, -1}
	u := make([]uint16, len(vals))
	kernels.F32ToF16(u, vals)
	raw := make([]byte, 2*len(u))
	for i, v := range u {
		raw[2*i], raw[2*i+1] = byte(v), byte(v>>8)
	}
	evicted := 0
	b := nn.NewBacking(nil, func(p []byte) { evicted += len(p) })
	s := nn.NewScope("host")
	defer s.Close()
	h, err := nn.HostConverted(s, b, raw, nn.F16, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	be, err := nn.NewCPU(nn.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := be.Upload(s, h, nn.F32)
	if err != nil {
		t.Fatal(err)
	}
	if err := be.PrepareWeight(w); err != nil {
		t.Fatal(err)
	}
	x, _ := nn.HostF32(s, []float32{1, 1, 1}, 1, 3)
	out := be.New(s, nn.F32, 1, 2)
	// In place (converted, then dropped), then packed.
	for i := 0; i < 2; i++ {
		if err := be.Linear(out, x, w, nil, nn.ActNone); err != nil {
			t.Fatal(err)
		}
		if got := out.F32(); got[0] != -0.5 || got[1] != 2.25 {
			t.Errorf("Linear %d of a converted weight: %v, want [-0.5 2.25]", i, got)
		}
	}
	if evicted != len(raw) {
		t.Errorf("evicted %d bytes of the F16 source once packed, want %d", evicted, len(raw))
	}
	if d := nn.MaxAbsDiff(h.F32(), vals); d != 0 {
		t.Errorf("converted values differ by %g", d)
	}
	if _, err := nn.HostConverted(s, b, raw[1:5], nn.F16, 2); err == nil {
		t.Error("a misaligned F16 view was accepted")
	}
	if _, err := nn.HostConverted(s, b, raw, nn.F32, 3); err == nil {
		t.Error("HostConverted from F32 was accepted")
	}
}
