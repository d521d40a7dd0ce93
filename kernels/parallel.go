package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// The kernels split their work into numbered tasks that a fixed set of
// helper goroutines and the calling goroutine take in turn. Helpers are
// started once and tasks come from pools, so that a forward pass in its
// steady state allocates nothing (go statements with closures would).

// task is a piece of parallel work; run is called once for each index in
// [0, n) with scratch memory private to the goroutine running it.
type task interface {
	run(i int, s *scratch)
}

// scratch is per-goroutine working memory (packed panels, tiles, rows).
type scratch struct {
	a      []float32
	b      []float32 // packed op(B) of products inside a task
	v      []float32 // a second one (attention's values)
	tile   []float32
	scores []float32 // attention score tiles
	segs   []rowSeg  // a GEMM task's runs of rows
}

// grow returns (*buf)[:n], reallocating only when it is too small.
func grow(buf *[]float32, n int) []float32 {
	if cap(*buf) < n {
		*buf = make([]float32, n)
	}
	return (*buf)[:n]
}

var scratches = sync.Pool{New: func() any { return new(scratch) }}

type batch struct {
	t    task
	n    int64
	next atomic.Int64
	wg   sync.WaitGroup
}

func (b *batch) drain() {
	s := scratches.Get().(*scratch)
	for {
		i := b.next.Add(1) - 1
		if i >= b.n {
			break
		}
		b.t.run(int(i), s)
	}
	scratches.Put(s)
}

var (
	batches = sync.Pool{New: func() any { return new(batch) }}

	threads     atomic.Int64 // 0: GOMAXPROCS
	helpersMu   sync.Mutex
	helpersRun  int
	helperQueue = make(chan *batch, 64)
)

// SetThreads caps the goroutines a kernel call uses; n <= 0 means
// GOMAXPROCS.
func SetThreads(n int) {
	if n < 0 {
		n = 0
	}
	threads.Store(int64(n))
}

// Threads is the number of goroutines a kernel call may use.
func Threads() int {
	if n := int(threads.Load()); n > 0 {
		return n
	}
	return runtime.GOMAXPROCS(0)
}

// ensureHelpers starts helper goroutines until n are running.
func ensureHelpers(n int) {
	helpersMu.Lock()
	defer helpersMu.Unlock()
	for ; helpersRun < n; helpersRun++ {
		go func() {
			for b := range helperQueue {
				b.drain()
				b.wg.Done()
			}
		}()
	}
}

// parallel runs t for every index in [0, n) on up to Threads goroutines,
// the caller's included, and returns when all are done. Tasks must not
// call parallel themselves: helpers would wait on each other.
func parallel(n int, t task) {
	w := min(Threads(), n)
	if w <= 1 {
		s := scratches.Get().(*scratch)
		for i := 0; i < n; i++ {
			t.run(i, s)
		}
		scratches.Put(s)
		return
	}
	ensureHelpers(w - 1)
	b := batches.Get().(*batch)
	b.t, b.n = t, int64(n)
	b.next.Store(0)
	b.wg.Add(w - 1)
	for i := 0; i < w-1; i++ {
		helperQueue <- b
	}
	b.drain()
	b.wg.Wait()
	b.t = nil
	batches.Put(b)
}
