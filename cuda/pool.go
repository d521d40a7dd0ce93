//go:build cuda

package cuda

import (
	"errors"
	"fmt"
	"math/bits"
	"sync"

	"gorgonia.org/cu"

	"github.com/bertstream/bertstream/nn"
)

// pool caches device memory: a freed block goes back to a free list of its
// size class instead of to the driver, so that a forward pass in its
// steady state allocates nothing (cuMemAlloc and cuMemFree cost tens of
// microseconds and cuMemFree synchronises the device). Every operation
// runs on the backend's one stream, in order, so a block freed while work
// that reads it is still queued can be handed out at once: whatever writes
// it next is queued behind that work.
type pool struct {
	dev string

	mu     sync.Mutex
	free   map[int64][]cu.DevicePtr // by class
	cached int64                    // bytes in free lists
	inUse  int64                    // bytes handed out (by class)
	closed bool
}

func newPool(dev string) *pool {
	return &pool{dev: dev, free: map[int64][]cu.DevicePtr{}}
}

// class rounds n up to its size class: multiples of 512 bytes, then four
// classes per power of two, so that a block is at most 25% larger than
// asked and batches of varying token counts still share blocks.
func class(n int64) int64 {
	if n <= 512 {
		return 512
	}
	step := int64(1) << (bits.Len64(uint64(n-1)) - 3)
	step = max(step, 512)
	return (n + step - 1) / step * step
}

// alloc returns a block of at least n bytes; the caller's context must be
// current. When the device is full it gives the cached blocks back to the
// driver (after sync, which waits for the work that may still use them)
// and tries once more.
func (p *pool) alloc(n int64, sync func() error) (cu.DevicePtr, int64, error) {
	c := class(n)
	p.mu.Lock()
	if l := p.free[c]; len(l) > 0 {
		ptr := l[len(l)-1]
		p.free[c] = l[:len(l)-1]
		p.cached -= c
		p.inUse += c
		p.mu.Unlock()
		return ptr, c, nil
	}
	p.mu.Unlock()
	ptr, err := cu.MemAlloc(c)
	if errors.Is(err, cu.OutOfMemory) {
		if err := sync(); err != nil {
			return 0, 0, err
		}
		if err := p.release(); err != nil {
			return 0, 0, err
		}
		ptr, err = cu.MemAlloc(c)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("allocate %d bytes on %s: %w", c, p.dev, err)
	}
	p.mu.Lock()
	p.inUse += c
	p.mu.Unlock()
	return ptr, c, nil
}

// put takes a block back. It makes no driver call, so that a scope can be
// closed from any goroutine.
func (p *pool) put(ptr cu.DevicePtr, c int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inUse -= c
	if p.closed {
		return // the context is gone and took the memory with it
	}
	p.free[c] = append(p.free[c], ptr)
	p.cached += c
}

// release frees the cached blocks; the caller's context must be current
// and no queued work may use them.
func (p *pool) release() error {
	p.mu.Lock()
	free := p.free
	p.free, p.cached = map[int64][]cu.DevicePtr{}, 0
	p.mu.Unlock()
	var errs []error
	for _, l := range free {
		for _, ptr := range l {
			errs = append(errs, cu.MemFree(ptr))
		}
	}
	return errors.Join(errs...)
}

// stats reports the bytes handed out and the bytes cached.
func (p *pool) stats() (inUse, cached int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inUse, p.cached
}

// storage is a tensor's device memory. An I32 tensor made by Upload keeps
// its values on the host too: the index arguments of Attention, Embed,
// Gather, Scatter and Pool (offsets, token ids, rows) are checked there,
// as the CPU backend checks them, without waiting for the device.
type storage struct {
	pool  *pool
	ptr   cu.DevicePtr
	size  int64 // bytes asked for
	class int64
	ints  []int32
	// err is an allocation failure: Backend.New cannot return one, so the
	// first operation given the tensor reports it.
	err error

	mu    sync.Mutex
	freed bool
}

var _ nn.Storage = (*storage)(nil)

func (s *storage) Device() string { return s.pool.dev }

func (s *storage) Bytes() int64 {
	if s.err != nil {
		return 0
	}
	return s.size
}

func (s *storage) Free() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.freed {
		return
	}
	s.freed = true
	s.ints = nil
	if s.err == nil && s.class > 0 {
		s.pool.put(s.ptr, s.class)
	}
}

func (s *storage) isFreed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.freed
}
