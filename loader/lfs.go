package loader

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// lfsMagic starts every Git LFS pointer file: what a clone without
// git-lfs (or with GIT_LFS_SKIP_SMUDGE) leaves where the weights should be.
var lfsMagic = []byte("version https://git-lfs.github.com/spec/")

// lfsPointer says whether data, the start of the file at path, is a Git
// LFS pointer rather than the file.
func lfsPointer(path string, data []byte) error {
	if bytes.HasPrefix(data, lfsMagic) {
		return fmt.Errorf("%s is a Git LFS pointer, not the file: fetch the LFS objects (git lfs pull)", path)
	}
	return nil
}

// checkLFS reads the start of path and reports a Git LFS pointer; any
// other condition (missing, unreadable) is left to the reader of the file.
func checkLFS(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	head := make([]byte, len(lfsMagic))
	n, _ := io.ReadFull(f, head)
	return lfsPointer(path, head[:n])
}

// explainLFS replaces err, the failure to read the model files in dir, by
// the news that one of them is a Git LFS pointer, when one is: the
// parsers' own errors ("invalid header length") would hide the cause.
func explainLFS(dir string, err error) error {
	if err == nil {
		return nil
	}
	for _, pat := range []string{"*.safetensors", "*.bin", "*.json", "vocab.txt"} {
		files, _ := filepath.Glob(filepath.Join(dir, pat))
		for _, f := range files {
			if e := checkLFS(f); e != nil {
				return e
			}
		}
	}
	return err
}
