//go:build unix

package mmap

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"
)

// Open maps path read-only.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	// A directory or device maps as nothing useful, or not at all: say so
	// rather than report ENODEV or parse an empty file.
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	size := st.Size()
	if size == 0 {
		return &File{Data: []byte{}}, nil
	}
	if size != int64(int(size)) {
		return nil, fmt.Errorf("%s: %d bytes do not fit in memory", path, size)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap %s: %w", path, err)
	}
	return &File{Data: data, mapped: true, unmap: func() error { return syscall.Munmap(data) }}, nil
}

// evict advises the kernel that the whole pages inside p are not needed.
// Only whole pages: the partial pages at both ends may hold bytes of
// neighbouring tensors that are still in use (reading them back would be
// correct, but costs a fault for nothing).
func evict(p []byte) {
	page := uintptr(os.Getpagesize())
	start := uintptr(unsafe.Pointer(&p[0]))
	end := start + uintptr(len(p))
	a, b := (start+page-1)&^(page-1), end&^(page-1)
	if b <= a {
		return
	}
	// Advice only: if the kernel refuses, the pages stay resident.
	_ = syscall.Madvise(p[a-start:b-start], syscall.MADV_DONTNEED)
}

// Zeros maps n bytes of zeros, read-only: pages that are read map the
// kernel's one zero page, so they cost no memory.
func Zeros(n int) (*File, error) {
	if n == 0 {
		return &File{Data: []byte{}}, nil
	}
	data, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		return nil, fmt.Errorf("mmap %d bytes of zeros: %w", n, err)
	}
	return &File{Data: data, unmap: func() error { return syscall.Munmap(data) }}, nil
}
