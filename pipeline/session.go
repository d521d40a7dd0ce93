package pipeline

import (
	"errors"
	"fmt"
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
		it.txn.done(err)
		return
	}
	if err != nil {
		it.w.m.ProduceFails.Inc()
		if it.st.live() {
			// The first refusal ends the session; the answers that were on
			// their way with it are usually refused too, and say nothing new.
			it.w.log.Error("producing an answer failed; the session restarts from the committed offsets",
				"topic", it.msg.Topic, "partition", it.msg.Partition, "offset", it.msg.Offset, "err", err)
		}
		if isFatal(err) {
			it.w.fatal(fmt.Errorf("writing to %s: %w", it.out.Topic, err))
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

// partTrack follows one partition through a session: the items consumed
// and not yet answered in order, the answered ones waiting for a commit,
// and the offsets to commit and committed.
type partTrack struct {
	queue  []*item
	marked []*item
	// next is one past the last item answered in order; committed is the
	// last offset the coordinator accepted in this session. Both are -1
	// until there is one.
	next, committed int64
	// broken is set when an answer of the partition was refused: nothing
	// at or after it is committed in this session.
	broken bool
}

// session tracks one consumer group generation: which offsets are
// answered, which are committed, and which in-flight slots they hold. An
// offset is committed only when every message before it in its partition
// has been answered or dead-lettered and the brokers have acknowledged it;
// a slot is freed only when the coordinator has accepted a commit past its
// message (or the session is over), so a crash redelivers at most
// MaxInFlight answered messages.
type session struct {
	w    *Worker
	sess sarama.ConsumerGroupSession

	mu      sync.Mutex
	parts   map[partKey]*partTrack
	pending int // registered and not resolved
	closed  bool

	changed chan struct{} // a resolution happened
	kick    chan struct{} // something new to commit
	stop    chan struct{}
	stopped chan struct{}
	// ending is closed when the session must end early: an answer was
	// refused or the coordinator no longer takes its commits.
	ending  chan struct{}
	endOnce sync.Once
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
		ending:  make(chan struct{}),
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (st *session) end() { st.endOnce.Do(func() { close(st.ending) }) }

func (st *session) register(it *item) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.pending++
	if st.w.cfg.ExactlyOnce {
		// The transaction commits the offsets with the answers; there is
		// no order of commits to keep.
		return
	}
	k := partKey{it.msg.Topic, it.msg.Partition}
	p := st.parts[k]
	if p == nil {
		p = &partTrack{next: -1, committed: -1}
		st.parts[k] = p
	}
	p.queue = append(p.queue, it)
}

// live reports whether the session's answers can still be committed. Items
// of a session that is not live are dropped unanswered: whatever follows a
// refused answer would be redelivered anyway, and in exactly-once mode
// committing a later batch would skip the refused one.
func (st *session) live() bool {
	select {
	case <-st.ending:
		return false
	default:
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return !st.closed
}

// ack records an acknowledged answer and advances the partition's offset
// to commit past every answered message at its head.
func (st *session) ack(it *item) {
	st.mu.Lock()
	defer st.mu.Unlock()
	it.acked = true
	st.resolvedLocked(it)
	if st.w.cfg.ExactlyOnce || st.closed {
		// Exactly-once: the transaction committed the offset with the
		// answer. Closed: too late to commit, the partition may be someone
		// else's now.
		st.releaseLocked(it)
		return
	}
	p := st.parts[partKey{it.msg.Topic, it.msg.Partition}]
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
	p.marked = append(p.marked, p.queue[:n]...)
	p.next = p.queue[n-1].msg.Offset + 1
	p.queue = append(p.queue[:0:0], p.queue[n:]...)
	signal(st.kick)
}

// fail records an answer the brokers refused: nothing at or after it in
// its partition is committed in this session, and the session ends so that
// the next one starts again from the committed offset.
func (st *session) fail(it *item) {
	st.mu.Lock()
	if p := st.parts[partKey{it.msg.Topic, it.msg.Partition}]; p != nil {
		p.broken = true
	}
	st.resolvedLocked(it)
	st.releaseLocked(it)
	st.mu.Unlock()
	st.end()
}

// drop gives up an item without answering it; it stays unanswered at its
// place in the partition, so no commit passes it.
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

// Backoff between attempts of a commit the coordinator did not take.
const (
	commitBackoffMin = 50 * time.Millisecond
	commitBackoffMax = time.Second
)

// commitLoop commits as answers come in, and retries a failed commit with
// backoff, until stop.
func (st *session) commitLoop() {
	defer close(st.stopped)
	var retry <-chan time.Time
	backoff := commitBackoffMin
	for {
		select {
		case <-st.kick:
		case <-retry:
		case <-st.stop:
			return
		}
		retry = nil
		err := st.commit()
		switch {
		case err == nil:
			backoff = commitBackoffMin
		case errors.Is(err, errSessionOver):
			st.w.log.Warn("the coordinator no longer takes this session's commits; rejoining", "err", err)
			st.end()
		default:
			st.w.log.Warn("committing offsets failed; retrying", "err", err, "backoff", backoff)
			retry = time.After(backoff)
			backoff = min(2*backoff, commitBackoffMax)
		}
	}
}

// commit sends the offsets answered since the last commit and, for the
// partitions the coordinator took, frees the slots of the messages they
// cover.
func (st *session) commit() error {
	st.mu.Lock()
	offs := make(map[partKey]int64)
	for k, p := range st.parts {
		if p.next > p.committed {
			offs[k] = p.next
		}
	}
	st.mu.Unlock()
	if len(offs) == 0 {
		return nil
	}
	done, err := st.w.commitOffsets(st.sess, offs)
	if len(done) > 0 {
		st.w.m.Commits.Inc()
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for k, off := range done {
		p := st.parts[k]
		p.committed = max(p.committed, off)
		n := 0
		for n < len(p.marked) && p.marked[n].msg.Offset < p.committed {
			st.releaseLocked(p.marked[n])
			n++
		}
		p.marked = append(p.marked[:0:0], p.marked[n:]...)
	}
	return err
}

// finalCommit commits what was answered at the end of a session, retrying
// until deadline.
func (st *session) finalCommit(deadline time.Time) error {
	backoff := commitBackoffMin
	for {
		err := st.commit()
		if err == nil || errors.Is(err, errSessionOver) || isFatal(err) || time.Now().Add(backoff).After(deadline) {
			return err
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, commitBackoffMax)
	}
}

// drain waits until every registered item is resolved or the deadline
// passes, and reports whether it got there.
func (st *session) drain(deadline time.Time) bool {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		st.mu.Lock()
		n := st.pending
		st.mu.Unlock()
		if n == 0 {
			return true
		}
		select {
		case <-st.changed:
		case <-timer.C:
			return false
		}
	}
}

// close ends the session after its last commit: it frees the slots of
// answered items that can no longer be committed (they will be redelivered
// to whoever owns their partition next) and returns how many items were
// still unanswered (their slots are freed when they come up).
func (st *session) close() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.closed = true
	for _, p := range st.parts {
		for _, it := range p.marked {
			st.releaseLocked(it)
		}
		for _, it := range p.queue {
			if it.resolved {
				st.releaseLocked(it)
			}
		}
		p.marked, p.queue = nil, nil
	}
	return st.pending
}
