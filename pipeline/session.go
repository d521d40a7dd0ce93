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
	// value is the model's answer until it is encoded into out.
	value any
	out   *sarama.ProducerMessage
	// txn is the transaction the answer belongs to, in exactly-once mode.
	txn *txnWait
	// pt is the item's partition in its session.
	pt *partTrack
	// tr is the request's span, when the worker traces (tracing.go).
	tr itemTrace

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
		it.endSpan(outcomeFailed, err)
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
	it.spanAcked()
}

type partKey struct {
	topic     string
	partition int32
}

// partTrack follows one partition through a session: the items consumed
// and not yet answered in order, the answered ones waiting for a commit,
// and the offsets to commit and committed. In exactly-once mode only
// pending and revoked are kept: transactions commit the offsets.
type partTrack struct {
	queue  []*item
	marked []*item
	// pending counts the items registered and not resolved.
	pending int
	// revoked is set when a cooperative rebalance took the partition from
	// this worker: nothing of it is committed any more in this session.
	revoked bool
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
	// changed is closed, and replaced, when an item is resolved, a commit
	// taken or the session closed: drains of the session and of single
	// partitions wait on it together.
	changed chan struct{}

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
		changed: make(chan struct{}),
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
	k := partKey{it.msg.Topic, it.msg.Partition}
	p := st.parts[k]
	if p == nil {
		p = &partTrack{next: -1, committed: -1}
		st.parts[k] = p
	}
	p.pending++
	it.pt = p
	if st.w.cfg.ExactlyOnce {
		// The transaction commits the offsets with the answers; there is
		// no order of commits to keep.
		return
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

// serves reports whether an item's answer can still be committed: its
// session is live and its partition still this worker's.
func (st *session) serves(it *item) bool {
	if !st.live() {
		return false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return !it.pt.revoked
}

// ack records an acknowledged answer and advances the partition's offset
// to commit past every answered message at its head.
func (st *session) ack(it *item) {
	st.mu.Lock()
	defer st.mu.Unlock()
	it.acked = true
	st.resolvedLocked(it)
	p := it.pt
	if st.w.cfg.ExactlyOnce || st.closed || p.revoked {
		// Exactly-once: the transaction committed the offset with the
		// answer. Closed or revoked: too late to commit, the partition may
		// be someone else's now.
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
	it.pt.broken = true
	st.resolvedLocked(it)
	st.releaseLocked(it)
	st.mu.Unlock()
	st.end()
}

// drop gives up an item without answering it; it stays unanswered at its
// place in the partition, so no commit passes it.
func (st *session) drop(it *item) {
	it.endSpan(outcomeAbandoned, nil)
	st.mu.Lock()
	defer st.mu.Unlock()
	st.resolvedLocked(it)
	st.releaseLocked(it)
}

func (st *session) resolvedLocked(it *item) {
	if !it.resolved {
		it.resolved = true
		st.pending--
		it.pt.pending--
		st.changedLocked()
	}
}

// changedLocked wakes whoever waits for the session's state to change.
func (st *session) changedLocked() {
	close(st.changed)
	st.changed = make(chan struct{})
}

// settledLocked reports whether everything consumed is answered and
// committed, or the session is over.
func (st *session) settledLocked() bool {
	if st.closed {
		return true
	}
	if st.pending > 0 {
		return false
	}
	for _, p := range st.parts {
		if p.next > p.committed {
			return false
		}
	}
	return true
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
		case errors.Is(err, errRebalancing):
			// Short-lived (the member rejoins within a heartbeat or two),
			// and the slots of the answers wait for this commit: no
			// growing backoff.
			st.w.log.Debug("the group is rebalancing; retrying the commit", "err", err)
			retry = time.After(commitBackoffMin)
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
	// The generation is read before the partitions to commit. A partition
	// still tracked after that was this member's in that generation, or
	// has been revoked in it and is no one's until this member rejoins
	// (revoke forgets it first), which makes a newer generation: the
	// coordinator then refuses the older one, so an offset is never
	// committed over the partition's next owner.
	gen, member := st.sess.GenerationID(), st.sess.MemberID()
	st.mu.Lock()
	offs := make(map[partKey]int64)
	tracks := make(map[partKey]*partTrack)
	for k, p := range st.parts {
		if p.next > p.committed {
			offs[k], tracks[k] = p.next, p
		}
	}
	st.mu.Unlock()
	if len(offs) == 0 {
		return nil
	}
	done, err := st.w.commitOffsets(gen, member, offs)
	if len(done) > 0 {
		st.w.m.Commits.Inc()
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(done) > 0 {
		st.changedLocked()
	}
	for k, off := range done {
		p := tracks[k]
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
	return st.waitFor(func() bool { return st.pending == 0 }, deadline)
}

// waitFor waits until cond, called with st.mu held, holds after a
// resolution, or the deadline passes; it reports whether cond held.
func (st *session) waitFor(cond func() bool, deadline time.Time) bool {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		st.mu.Lock()
		ok, changed := cond(), st.changed
		st.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-changed:
		case <-timer.C:
			return false
		}
	}
}

// revoke lets go of a partition that a cooperative rebalance gives to
// another worker, while the session goes on with the others: it waits for
// the partition's requests to be answered (until deadline), commits them
// (a few seconds more), and forgets the partition, so that nothing of it
// is committed once the member rejoins and the partition has a new owner.
// It reports whether every request was answered and how many were left
// unanswered (the new owner answers them again).
func (st *session) revoke(k partKey, deadline time.Time) (drained bool, left int) {
	st.mu.Lock()
	p := st.parts[k]
	st.mu.Unlock()
	if p == nil {
		return true, 0
	}
	drained = st.waitFor(func() bool { return p.pending == 0 }, deadline)
	if !st.w.cfg.ExactlyOnce {
		st.commitPart(p, deadline.Add(commitGrace))
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	p.revoked = true
	if st.parts[k] == p {
		delete(st.parts, k)
	}
	st.forgetLocked(p)
	return drained, p.pending
}

// commitPart commits what was answered of one partition, retrying until
// deadline.
func (st *session) commitPart(p *partTrack, deadline time.Time) {
	backoff := commitBackoffMin
	for {
		st.mu.Lock()
		done := p.next <= p.committed
		st.mu.Unlock()
		if done {
			return
		}
		err := st.commit()
		if err == nil {
			continue
		}
		if errors.Is(err, errSessionOver) || isFatal(err) || time.Now().Add(backoff).After(deadline) {
			st.w.log.Warn("the commit of a revoked partition failed; its answered requests will be redelivered", "err", err)
			return
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, commitBackoffMax)
	}
}

// forgetLocked frees the slots of a partition's answered items that can
// no longer be committed.
func (st *session) forgetLocked(p *partTrack) {
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

// close ends the session after its last commit: it frees the slots of
// answered items that can no longer be committed (they will be redelivered
// to whoever owns their partition next) and returns how many items were
// still unanswered (their slots are freed when they come up).
func (st *session) close() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.closed = true
	st.changedLocked()
	for _, p := range st.parts {
		st.forgetLocked(p)
	}
	return st.pending
}
