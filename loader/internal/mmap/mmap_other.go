//go:build !unix

package mmap

import "os"

// Open reads the whole file where memory mapping is not available.
func Open(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return &File{Data: data}, nil
}

func evict([]byte) {}

// Zeros allocates n bytes of zeros.
func Zeros(n int) (*File, error) { return &File{Data: make([]byte, n)}, nil }
