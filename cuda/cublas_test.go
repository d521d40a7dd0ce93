//go:build cuda

package cuda

import (
	"os"
	"path/filepath"
	"testing"
)

// These run without a device.

func TestCandidates(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "libcublas.so.12.4.5")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		where          string
		major          int
		wantLt, wantBl string
	}{
		{"", 12, "libcublasLt.so.12", "libcublas.so.12"},
		{dir, 11, filepath.Join(dir, "libcublasLt.so.11"), filepath.Join(dir, "libcublas.so.11")},
		{file, 12, filepath.Join(dir, "libcublasLt.so.12.4.5"), file},
	} {
		lt, bl := candidates(c.where, c.major)
		if lt != c.wantLt || bl != c.wantBl {
			t.Errorf("candidates(%q, %d) = %q, %q; want %q, %q", c.where, c.major, lt, bl, c.wantLt, c.wantBl)
		}
	}
}

func TestClass(t *testing.T) {
	prev := int64(0)
	for n := int64(1); n < 1<<30; n = n*5/4 + 1 {
		c := class(n)
		if c < n || c%512 != 0 || (n > 4096 && float64(c) > 1.25*float64(n)) {
			t.Fatalf("class(%d) = %d: want a multiple of 512 at least n and, past 4 KiB, within 25%% of it", n, c)
		}
		if c < prev {
			t.Fatalf("class(%d) = %d is below the class of a smaller size, %d", n, c, prev)
		}
		prev = c
	}
}

// TestNoDevice documents what a machine without a GPU sees; it runs
// where Open fails for want of a device.
func TestNoDevice(t *testing.T) {
	_, err := Open(Config{})
	if err == nil {
		t.Skip("this machine has a CUDA device")
	}
	t.Logf("Open without a device: %v", err)
}
