// Package mmap maps checkpoint files into memory read-only, for the
// readers of package loader: the weights are then read in place, paged in
// on demand and shared with the page cache, instead of copied into the Go
// heap. Where mapping is not available the file is read into memory.
package mmap

// File is a file's bytes in memory.
type File struct {
	Data   []byte
	unmap  func() error
	mapped bool
}

// Close releases the bytes; Data must not be used after.
func (f *File) Close() error {
	if f.unmap == nil {
		return nil
	}
	u := f.unmap
	f.unmap, f.Data = nil, nil
	return u()
}

// Evict drops the pages of p, a part of Data, from the process's memory
// without losing them: the mapping is read-only, so touching them again
// reads them back from the page cache (or the disk). It does nothing for
// a file read into memory, whose bytes could not be read back.
func (f *File) Evict(p []byte) {
	if f.mapped && len(p) > 0 {
		evict(p)
	}
}
