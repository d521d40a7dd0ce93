package pipeline

import (
	"sync"
	"time"

	"github.com/IBM/sarama"
)

// item is one consumed message on its way through the worker.
type item struct {
	w      *Worker
	st     *session
	msg    *sarama.ConsumerMessage
	at     time.Time
	req    Request
	tokens int
	// err, when set, sends the message to the dead-letter topic.
	err error
	out *sarama.ProducerMessage
	// txn is the transaction the answer belongs to, in exactly-once mode.
	txn *txnWait

	// Guarded by st.mu.
	acked, resolved, released bool
}

// resolve is called once the brokers have taken (err == nil) or refused
// the item's answer.
func (it *item) resolve(err error) {
	if it.txn != nil {
		it.txn.done(it, err)
		return
	}
	if err != nil {
		it.w.m.ProduceFails.Inc()
		it.w.log.Error("producing an answer failed; the partition restarts from its committed offset",
			"topic", it.msg.Topic, "partition", it.msg.Partition, "offset", it.msg.Offset, "err", err)
		if isFatal(err) {
			it.w.fatal(err)
		}
		it.st.fail(it)
		return
	}
	it.count()
	it.st.ack(it)
}

// count records an acknowledged answer in the metrics.
func (it *item) count() {
	m := it.w.m
	if it.err != nil {
		m.DeadLettered.WithLabelValues(string(reasonOf(it.err))).Inc()
	} else {
		m.Produced.Inc()
	}
	m.Latency.Observe(time.Since(it.at).Seconds())
}

type partKey struct {
	topic     string
	partition int32
}

// partTrack holds a partition's items in offset order until they are
// marked, and whether an answer of it failed in this session.
type partTrack struct {
	queue  []*item
	broken bool
}

// session tracks one consumer group generation: which offsets are answered,
// marked and committed. Offsets are marked in order only: an answered
// message waits for every earlier message of its partition.
type session struct {
	w    *Worker
	sess sarama.ConsumerGroupSession

	mu      sync.Mutex
	parts   map[partKey]*partTrack
	pending int     // registered and not resolved
	marked  []*item // marked, waiting for the next commit
	closed  bool

	changed  chan struct{} // a resolution happened
	kick     chan struct{} // something was marked
	stop     chan struct{}
	stopped  chan struct{}
	failed   chan struct{}
	failOnce sync.Once
}

func newSession(w *Worker, s sarama.ConsumerGroupSession) *session {
	return &session{
		w:       w,
		sess:    s,
		parts:   make(map[partKey]*partTrack),
		changed: make(chan struct{}, 1),
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
		failed:  make(chan struct{}),
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (st *session) register(it *item) {
	st.mu.Lock()
	defer st.mu.Unlock()
	k := partKey{it.msg.Topic, it.msg.Partition}
	p := st.parts[k]
	if p == nil {
		p = &partTrack{}
		st.parts[k] = p
	}
	p.queue = append(p.queue, it)
	st.pending++
}

// isClosed reports whether the session is over: its items can no longer be
// committed and are not worth answering.
func (st *session) isClosed() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.closed
}

// ack records an acknowledged answer and marks the partition's offset past
// every answered message at its head.
func (st *session) ack(it *item) {
	st.mu.Lock()
	defer st.mu.Unlock()
	it.acked = true
	st.resolvedLocked(it)
	if st.w.cfg.ExactlyOnce {
		// The transaction committed the offset with the answer.
		st.releaseLocked(it)
		return
	}
	k := partKey{it.msg.Topic, it.msg.Partition}
	p := st.parts[k]
	if st.closed {
		// Too late to commit: the partition is someone else's now.
		st.releaseLocked(it)
		return
	}
	if p.broken {
		return
	}
	n := 0
	for n < len(p.queue) && p.queue[n].acked {
		n++
	}
	if n == 0 {
		return
	}
	st.sess.MarkOffset(k.topic, k.partition, p.queue[n-1].msg.Offset+1, "")
	st.marked = append(st.marked, p.queue[:n]...)
	p.queue = append(p.queue[:0:0], p.queue[n:]...)
	signal(st.kick)
}

// fail records an answer the brokers refused: nothing at or after it in
// its partition is committed in this session, and the session ends so that
// the next one starts again from the committed offset.
func (st *session) fail(it *item) {
	st.mu.Lock()
	st.parts[partKey{it.msg.Topic, it.msg.Partition}].broken = true
	st.resolvedLocked(it)
	st.releaseLocked(it)
	st.mu.Unlock()
	st.failOnce.Do(func() { close(st.failed) })
}

// drop gives up an item of a closed session without answering it.
func (st *session) drop(it *item) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.resolvedLocked(it)
	st.releaseLocked(it)
}

func (st *session) resolvedLocked(it *item) {
	if !it.resolved {
		it.resolved = true
		st.pending--
		signal(st.changed)
	}
}

func (st *session) releaseLocked(it *item) {
	if !it.released {
		it.released = true
		st.w.releaseSlot()
	}
}

// commitLoop commits marked offsets as they come, until stop.
func (st *session) commitLoop() {
	defer close(st.stopped)
	for {
		select {
		case <-st.kick:
			st.commit()
		case <-st.stop:
			return
		}
	}
}

// commit sends the marked offsets and frees the in-flight slots of the
// messages they cover.
func (st *session) commit() {
	st.mu.Lock()
	done := st.marked
	st.marked = nil
	st.mu.Unlock()
	if len(done) == 0 {
		return
	}
	st.sess.Commit()
	st.w.m.Commits.Inc()
	st.mu.Lock()
	for _, it := range done {
		st.releaseLocked(it)
	}
	st.mu.Unlock()
}

// drain waits until every registered item is resolved or the timeout
// passes, and reports whether it got there.
func (st *session) drain(timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		st.mu.Lock()
		n := st.pending
		st.mu.Unlock()
		if n == 0 {
			return true
		}
		select {
		case <-st.changed:
		case <-deadline.C:
			return false
		}
	}
}

// close ends the session after its last commit; it frees the slots of
// answered items that can no longer be committed and returns how many
// items were still unanswered (they are dropped when they come up).
func (st *session) close() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.closed = true
	for _, p := range st.parts {
		for _, it := range p.queue {
			if it.resolved {
				st.releaseLocked(it)
			}
		}
	}
	return st.pending
}
