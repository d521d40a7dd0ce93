package kernels

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedBF16 fails when gemm_bf16_amd64.s is not what its generator
// writes today: an edit to internal/genbf16 without go generate would
// otherwise ship kernels that no longer match their source.
func TestGeneratedBF16(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the generator")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on the PATH to run the generator with")
	}
	out := filepath.Join(t.TempDir(), "gemm_bf16_amd64.s")
	cmd := exec.Command(gobin, "run", "./internal/genbf16", "-o", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go run ./internal/genbf16: %v\n%s", err, b)
	}
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("gemm_bf16_amd64.s")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("gemm_bf16_amd64.s differs from what internal/genbf16 writes: run go generate in kernels/ and commit the result")
	}
}
