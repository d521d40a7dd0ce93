package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
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
	half   []float32 // BF16 attention's queries and probabilities, as words
	words  []float32 // BF16 attention's keys, as words, before packing
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
	// seats is how many helpers may still join; the caller closes it
	// (sets it to zero) once it has drained the tasks itself.
	seats atomic.Int64
	// busy is the seats not yet given back: taken ones until their helper
	// has drained, untaken ones until the caller closes them. The caller
	// spins on it, and falls back to wg past helperSpin.
	busy atomic.Int64
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

// join takes a seat in b, if one is left.
func (b *batch) join() bool {
	for {
		k := b.seats.Load()
		if k <= 0 {
			return false
		}
		if b.seats.CompareAndSwap(k, k-1) {
			return true
		}
	}
}

// Helpers find work in current, spinning for helperSpin after their last
// task before they park on wake. A woken goroutine waits for the scheduler
// to find it a core, which took about 100us per kernel call on these
// machines (the trace's scheduler-latency profile: 9% of a bert-base
// forward pass); a spinning helper starts within a scheduling round, and
// within a forward pass the gaps between kernel calls are far shorter than
// helperSpin. Spinning yields the core to any other runnable goroutine.
const helperSpin = 500 * time.Microsecond

var (
	batches = sync.Pool{New: func() any { return new(batch) }}

	helpersMu  sync.Mutex
	helpersRun int
	current    atomic.Pointer[batch]
	parked     atomic.Int64
	wake       = make(chan struct{}, 1024)
)

// ensureHelpers starts helper goroutines until n are running.
func ensureHelpers(n int) {
	helpersMu.Lock()
	defer helpersMu.Unlock()
	for ; helpersRun < n; helpersRun++ {
		go func() {
			for {
				b := findWork()
				b.drain()
				// Done last: it is the helper's last touch of b, which
				// the caller reuses once wg.Wait returns.
				b.busy.Add(-1)
				b.wg.Done()
			}
		}()
	}
}

// findWork returns a batch a seat was taken in: spinning at first, then
// parked until a caller wakes it.
func findWork() *batch {
	for {
		idle := time.Now()
		for time.Since(idle) < helperSpin {
			if b := current.Load(); b != nil && b.join() {
				return b
			}
			runtime.Gosched()
		}
		parked.Add(1)
		// A batch published before the increment was seen by no waker.
		if b := current.Load(); b != nil && b.join() {
			parked.Add(-1)
			return b
		}
		<-wake
		parked.Add(-1)
	}
}

// parallel runs t for every index in [0, n) on up to threads goroutines,
// the caller's included, and returns when all are done. Tasks must not
// call parallel themselves: helpers would wait on each other.
func parallel(threads, n int, t task) {
	w := min(threads, n)
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
	b.busy.Store(int64(w - 1))
	b.wg.Add(w - 1)
	// The seats open last: a helper that joins sees the fields above.
	b.seats.Store(int64(w - 1))
	current.Store(b)
	for i := min(parked.Load(), int64(w-1)); i > 0; i-- {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	b.drain()
	// Seats no helper took are given up; the helpers that took one may
	// still be finishing a task.
	left := b.seats.Swap(0)
	b.wg.Add(-int(left))
	// Wait for the helpers' last tasks spinning, as helpers wait for work:
	// a caller that parks gives its P up, and when nothing else is
	// runnable the P idles, its thread sleeps, and the core stays idle
	// until the next call wakes it. Beside a pipeline's goroutines that
	// left one of two cores idle 8 % of the time (perf's samples) and
	// batches 10 % slower than the bare engine's.
	if b.busy.Add(-left) > 0 {
		for idle := time.Now(); b.busy.Load() > 0 && time.Since(idle) < helperSpin; {
			runtime.Gosched()
		}
	}
	b.wg.Wait()
	current.CompareAndSwap(b, nil)
	b.t = nil
	batches.Put(b)
}

// rowTask runs a row kernel (LayerNorm, the embeddings) over blocks of
// rows on all cores.
type rowTask struct {
	fn        func(t *rowTask, lo, hi int)
	rows, per int
	vec       *vecOps

	out, x, res, gamma, beta []float32
	cols                     int
	eps                      float32
	ids, types, positions    []int32
	word, pos, typ           []float32
}

var rowTasks = sync.Pool{New: func() any { return new(rowTask) }}

func (t *rowTask) run(i int, _ *scratch) {
	lo := i * t.per
	t.fn(t, lo, min(lo+t.per, t.rows))
}

// runRows runs t.fn over t.rows rows of t.cols values on up to threads
// goroutines, in blocks of about 16K values: enough to pay for handing a
// block to another core. It gives t back to rowTasks.
func runRows(threads int, t *rowTask) {
	t.per = max(1, (1<<14)/max(t.cols, 1))
	parallel(threads, (t.rows+t.per-1)/t.per, t)
	*t = rowTask{}
	rowTasks.Put(t)
}
