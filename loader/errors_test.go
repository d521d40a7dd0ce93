package loader_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/loader"
)

// copyDir copies the files of a fixture directory (one level of folders).
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

const lfsPointerText = "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 437985387\n"

// TestLFSPointer: a clone without git-lfs leaves pointer files where the
// weights and the tokenizer should be; the error says so, naming the file.
func TestLFSPointer(t *testing.T) {
	for _, file := range []string{"model.safetensors", "vocab.txt", "1_Pooling/config.json", "config.json"} {
		dir := copyDir(t, tasksDir("st-mean"))
		writeFileT(t, filepath.Join(dir, file), lfsPointerText)
		_, err := loader.LoadPredictor(dir, loader.Options{}, bert.PredictorOptions{})
		want := filepath.Join(dir, file) + " is a Git LFS pointer, not the file: fetch the LFS objects"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s as a pointer: %v", file, err)
		}
	}
}

// TestMisshapedTensorNamedAsInFile: a tensor that does not fit the config
// is named as the checkpoint spells it (old names: no "bert." prefix).
func TestMisshapedTensorNamedAsInFile(t *testing.T) {
	dir := copyDir(t, filepath.Join("..", "testdata", "shapes", "h40-l1-a5-relu"))
	cfg := string(mustReadT(t, filepath.Join(dir, "config.json")))
	writeFileT(t, filepath.Join(dir, "config.json"), strings.Replace(cfg, `"intermediate_size": 72`, `"intermediate_size": 80`, 1))
	_, err := loader.Load(dir, loader.Options{})
	want := "tensor encoder.layer.0.intermediate.dense.weight has shape [72 40], the config implies [80 40]"
	// inspect, which reads no weights, says the same.
	if _, ierr := loader.Inspect(dir, loader.Options{}); ierr == nil || err == nil || ierr.Error() != err.Error() {
		t.Errorf("Inspect: %v, Load: %v", ierr, err)
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("%v, want %q", err, want)
	}
}

func writeFileT(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustReadT(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
