package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/bertstream/bertstream/bert/task"
)

// batchLoop gathers items into batches, across partitions, and answers
// them one batch at a time so that the answers of a partition are produced
// in its order. A batch closes when it holds MaxBatch items, when the next
// request would take it past MaxTokens, or MaxWait after its first item.
func (w *Worker) batchLoop(ctx context.Context) {
	var (
		batch  []*item
		tokens int
		timer  = time.NewTimer(time.Hour)
		timerC <-chan time.Time
	)
	timer.Stop()
	flush := func() {
		timer.Stop()
		timerC = nil
		if len(batch) > 0 {
			w.process(ctx, batch)
		}
		batch, tokens = nil, 0
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-timerC:
			flush()
		case it := <-w.items:
			// One transaction commits offsets for one group generation.
			if w.cfg.ExactlyOnce && len(batch) > 0 && batch[0].st != it.st {
				flush()
			}
			if w.cfg.MaxTokens > 0 && it.err == nil && tokens > 0 && tokens+it.tokens > w.cfg.MaxTokens {
				flush()
			}
			batch = append(batch, it)
			tokens += it.tokens
			if len(batch) >= w.cfg.MaxBatch || (w.cfg.MaxTokens > 0 && tokens >= w.cfg.MaxTokens) {
				flush()
			} else if timerC == nil {
				timer.Reset(w.cfg.MaxWait)
				timerC = timer.C
			}
		}
	}
}

// process answers one batch: the model runs on the servable requests, and
// every item gets an answer or a dead letter, which are then produced.
func (w *Worker) process(ctx context.Context, batch []*item) {
	live := batch[:0:0]
	for _, it := range batch {
		if !it.st.serves(it) {
			it.st.drop(it)
			continue
		}
		live = append(live, it)
	}
	if len(live) == 0 {
		return
	}
	var (
		reqs   []task.Request
		served []*item
		tokens int
	)
	now := time.Now()
	for _, it := range live {
		// A request may have waited for its batch, or behind a paused
		// partition, since it was consumed.
		if it.err == nil {
			it.err = w.expired(it, now)
		}
		if it.err == nil {
			reqs = append(reqs, it.req.Request)
			served = append(served, it)
			tokens += it.tokens
		}
	}
	if len(reqs) > 0 {
		t0 := time.Now()
		outs := w.pred.Predict(ctx, reqs)
		w.m.ModelLatency.Observe(time.Since(t0).Seconds())
		w.m.BatchSize.Observe(float64(len(reqs)))
		if w.cfg.MaxTokens > 0 {
			// Requests are sized only when batches have a token budget.
			w.m.BatchTokens.Observe(float64(tokens))
		}
		for i, it := range served {
			var out task.Result
			if len(outs) == len(reqs) {
				out = outs[i]
			} else {
				out.Err = fmt.Errorf("the model returned %d results for %d requests", len(outs), len(reqs))
			}
			if out.Err == nil {
				var v []byte
				v, out.Err = encodeResponse(it.req, out.Value, w.pred.Name())
				if out.Err == nil {
					it.out = &sarama.ProducerMessage{Topic: w.cfg.OutTopic, Key: answerKey(it), Value: sarama.ByteEncoder(v), Headers: traceHeaders(it.msg)}
				}
			}
			if out.Err != nil {
				it.err = refusal(out.Err)
			}
		}
	}
	for _, it := range live {
		if it.err != nil {
			it.out = w.deadLetter(it)
		}
		it.out.Metadata = it
	}
	if w.cfg.ExactlyOnce {
		w.produceTxn(ctx, live)
		return
	}
	for _, it := range live {
		select {
		case w.producer.Input() <- it.out:
		case <-ctx.Done():
			it.st.drop(it)
		}
	}
}

// answerKey keys an answer like its request, so that answers to one key
// land in one partition in order; keyless requests are keyed by id.
func answerKey(it *item) sarama.Encoder {
	if len(it.msg.Key) > 0 {
		return sarama.ByteEncoder(it.msg.Key)
	}
	return sarama.StringEncoder(it.req.ID)
}

// W3C trace context headers: an answer carries its request's, so that a
// client's trace runs on through the worker. Dead letters carry all of the
// request's headers.
const (
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

// traceHeaders are the trace context headers of a request.
func traceHeaders(m *sarama.ConsumerMessage) []sarama.RecordHeader {
	var hs []sarama.RecordHeader
	for _, h := range m.Headers {
		if h == nil {
			continue
		}
		if k := string(h.Key); k == HeaderTraceparent || k == HeaderTracestate {
			hs = append(hs, *h)
		}
	}
	return hs
}

// Dead-letter headers.
const (
	HeaderError     = "error"
	HeaderErrorCode = "error_code"
	HeaderTopic     = "source_topic"
	HeaderPartition = "source_partition"
	HeaderOffset    = "source_offset"
)

// deadLetter is the message that carries a request that cannot be served:
// its original key, bytes and headers, and why and where from.
func (w *Worker) deadLetter(it *item) *sarama.ProducerMessage {
	m := it.msg
	hs := make([]sarama.RecordHeader, 0, len(m.Headers)+5)
	for _, h := range m.Headers {
		if h != nil {
			hs = append(hs, *h)
		}
	}
	hs = append(hs,
		sarama.RecordHeader{Key: []byte(HeaderError), Value: []byte(it.err.Error())},
		sarama.RecordHeader{Key: []byte(HeaderErrorCode), Value: []byte(reasonOf(it.err))},
		sarama.RecordHeader{Key: []byte(HeaderTopic), Value: []byte(m.Topic)},
		sarama.RecordHeader{Key: []byte(HeaderPartition), Value: []byte(strconv.Itoa(int(m.Partition)))},
		sarama.RecordHeader{Key: []byte(HeaderOffset), Value: []byte(strconv.FormatInt(m.Offset, 10))},
	)
	pm := &sarama.ProducerMessage{Topic: w.cfg.DLQTopic, Value: sarama.ByteEncoder(m.Value), Headers: hs}
	if m.Key != nil {
		pm.Key = sarama.ByteEncoder(m.Key)
	}
	return pm
}

// txnWait collects the acknowledgements of one transaction's messages.
type txnWait struct {
	wg  sync.WaitGroup
	mu  sync.Mutex
	err error
}

func (t *txnWait) done(err error) {
	if err != nil {
		t.mu.Lock()
		if t.err == nil {
			t.err = err
		}
		t.mu.Unlock()
	}
	t.wg.Done()
}

// produceTxn produces a batch's answers and commits its offsets in one
// transaction. The offsets are committed with the session's generation and
// member id, so a worker that lost its partitions in a rebalance is fenced
// by the coordinator instead of committing over the new owner (KIP-447).
// Under cooperative rebalancing the generation moves on while the worker
// keeps its partitions: a transaction the coordinator refuses for an older
// generation is aborted and done again with the new one, as long as the
// batch's partitions are still this worker's.
func (w *Worker) produceTxn(ctx context.Context, batch []*item) {
	st := batch[0].st
	err := w.txn(ctx, st, batch, false)
	// The member rejoins within a heartbeat or two, or as long as the
	// coordinator holds its join for a slow member; one dropped from the
	// group never gets a newer generation, and its session ends.
	giveUp := time.Now().Add(w.cfg.DrainTimeout)
	for backoff := commitBackoffMin; err != nil && w.cfg.cooperative() && errors.Is(err, sarama.ErrIllegalGeneration) &&
		st.live() && ctx.Err() == nil && time.Now().Before(giveUp); backoff = min(2*backoff, commitBackoffMax/2) {
		w.log.Debug("the group moved to a new generation during a transaction; doing it again", "err", err)
		w.recoverTxn(err)
		time.Sleep(backoff)
		err = w.txn(ctx, st, batch, true)
	}
	if err == nil {
		w.m.Commits.Inc()
		for _, it := range batch {
			it.count()
			st.ack(it)
		}
		return
	}

	w.m.ProduceFails.Inc()
	w.log.Error("transaction failed; its batch is answered again from the committed offsets", "err", err)
	w.recoverTxn(err)
	for _, it := range batch {
		st.fail(it)
	}
}

// errRevoked refuses to commit the offsets of a partition that a
// cooperative rebalance took away while its batch was being answered.
var errRevoked = errors.New("a partition of the batch was revoked")

// txn runs one transaction of a batch; again sends copies of the answers
// of a transaction that was aborted.
func (w *Worker) txn(ctx context.Context, st *session, batch []*item, again bool) error {
	p := w.producer
	if err := p.BeginTxn(); err != nil {
		return err
	}
	t := &txnWait{}
	t.wg.Add(len(batch))
	sent := 0
	for _, it := range batch {
		it.txn = t
		if again {
			o := it.out
			it.out = &sarama.ProducerMessage{Topic: o.Topic, Key: o.Key, Value: o.Value, Headers: o.Headers, Metadata: o.Metadata}
		}
		select {
		case p.Input() <- it.out:
			sent++
		case <-ctx.Done():
		}
	}
	t.wg.Add(sent - len(batch))
	t.wg.Wait()
	if t.err != nil {
		return t.err
	}
	if sent < len(batch) {
		return ctx.Err()
	}
	// One offset per partition: its last message in the batch.
	last := make(map[partKey]*sarama.ConsumerMessage)
	for _, it := range batch {
		k := partKey{it.msg.Topic, it.msg.Partition}
		if m := last[k]; m == nil || m.Offset < it.msg.Offset {
			last[k] = it.msg
		}
	}
	// The generation is read before the partitions are checked, as
	// session.commit does and for the same reason.
	gm := sarama.NewConsumerGroupMetadataFromSession(st.sess, w.cfg.Group, nil)
	for _, it := range batch {
		if !st.serves(it) {
			err := fmt.Errorf("%s/%d: %w", it.msg.Topic, it.msg.Partition, errRevoked)
			if aerr := p.AbortTxn(); aerr != nil {
				err = fmt.Errorf("%w; aborting the transaction: %w", err, aerr)
			}
			return err
		}
	}
	for _, m := range last {
		if err := p.AddMessageToTxnWithGroupMetadata(m, gm, nil); err != nil {
			return err
		}
	}
	return p.CommitTxn()
}

// recoverTxn gets the producer ready for the next transaction after a
// failed one, or stops the worker when it cannot be.
func (w *Worker) recoverTxn(err error) {
	p := w.producer
	if isFatal(err) || fenced(err) {
		// A fenced worker is a zombie: another one owns its transactional
		// id now, and starting a new producer would fence that one in turn.
		w.fatal(err)
		return
	}
	if p.TxnStatus()&sarama.ProducerTxnFlagAbortableError != 0 {
		if aerr := p.AbortTxn(); aerr != nil {
			w.log.Error("aborting the transaction", "err", aerr)
		}
	}
	if p.TxnStatus()&sarama.ProducerTxnFlagFatalError != 0 {
		// A broken transactional producer cannot go on; a new one gets
		// a new epoch and aborts whatever the old one left open.
		w.closeProducer()
		if perr := w.startProducer(); perr != nil {
			w.fatal(perr)
		}
	}
}
