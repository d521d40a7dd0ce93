package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bertstream/bertstream/bert/task"
	"github.com/bertstream/bertstream/pipeline/trace"
)

// Batcher is the micro-batcher in front of the model: requests from the
// Kafka worker and from outside Kafka (Submit, for the HTTP API) share its
// batches. A batch closes when it holds MaxBatch requests, when the next
// request would take it past MaxTokens, or MaxWait after its first
// request, whichever source they came from. BatchConfig.Lanes batches
// run through the model at once (one by default), and their answers are
// produced in the order the batches were made, so that the answers of a
// partition are produced in its order.
//
// Each source is bounded on its own: the worker by Config.MaxInFlight
// (pausing partitions), Submit by BatchConfig.MaxQueue (refusing with
// ErrQueueFull), so that a burst of one source never takes the room of
// the other and memory stays bounded.
type Batcher struct {
	pred task.Predictor
	cfg  BatchConfig
	m    *Metrics

	// kafka is the attached worker's queue (nil without one: a nil
	// channel is never ready); queue is Submit's.
	w     *Worker
	kafka chan *item
	queue chan *call

	mu     sync.Mutex
	queued int

	started atomic.Bool
	done    chan struct{}
}

// BatchConfig are a Batcher's limits. The zero values take the defaults
// documented on each.
type BatchConfig struct {
	// MaxBatch bounds the requests per model call; default 32.
	MaxBatch int
	// MaxWait bounds how long the first request of a batch waits for the
	// batch to fill; default 5ms.
	MaxWait time.Duration
	// MaxTokens bounds the sum of the tokens of a batch; default 0, no
	// bound.
	MaxTokens int
	// MaxQueue bounds the requests submitted and not yet answered; past
	// it Submit refuses with ErrQueueFull. Default 4*MaxBatch.
	MaxQueue int
	// Lanes is how many batches the model runs at once, each on its own
	// goroutine; default 1. More than one needs a predictor that takes
	// concurrent Predict calls (bert's does). Answers are produced in the
	// order their batches were made, whatever lane finishes first.
	Lanes int
	// Tracer, when set, receives a span per batch (tracing.go).
	Tracer *trace.Exporter
}

func (c *BatchConfig) setDefaults() {
	if c.MaxBatch <= 0 {
		c.MaxBatch = 32
	}
	if c.MaxWait <= 0 {
		c.MaxWait = 5 * time.Millisecond
	}
	if c.MaxTokens < 0 {
		c.MaxTokens = 0
	}
	if c.MaxQueue <= 0 {
		c.MaxQueue = 4 * c.MaxBatch
	}
	if c.Lanes <= 0 {
		c.Lanes = 1
	}
}

// NewBatcher prepares a batcher for pred; Run runs it. m receives its
// metrics (a fresh registry's when nil).
func NewBatcher(pred task.Predictor, cfg BatchConfig, m *Metrics) *Batcher {
	cfg.setDefaults()
	if m == nil {
		m = NewMetrics(prometheus.NewRegistry())
	}
	return &Batcher{pred: pred, cfg: cfg, m: m, queue: make(chan *call, cfg.MaxQueue), done: make(chan struct{})}
}

// Config returns the batcher's limits, defaults filled in.
func (b *Batcher) Config() BatchConfig { return b.cfg }

// attach makes w's requests join the batches; it must come before Run.
func (b *Batcher) attach(w *Worker) error {
	if b.started.Load() {
		return errors.New("the shared batcher is already running: create the worker first")
	}
	if b.w != nil {
		return errors.New("the shared batcher already serves a worker")
	}
	if b.pred != w.pred {
		return errors.New("the shared batcher serves another predictor than the worker")
	}
	b.w, b.kafka = w, w.items
	return nil
}

// Errors of Submit.
var (
	// ErrQueueFull: MaxQueue requests are waiting already; retry later.
	ErrQueueFull = errors.New("the request queue is full")
	// ErrStopped: the batcher is not running (any more).
	ErrStopped = errors.New("the batcher has stopped")
)

// call is one request submitted from outside Kafka, answered through done.
type call struct {
	ctx    context.Context
	req    task.Request
	tokens int
	at     time.Time
	done   chan task.Result
}

// entry is one request of a batch: a consumed Kafka message or a call.
type entry struct {
	it *item
	c  *call
}

func (e entry) tokens() int {
	if e.it != nil {
		return e.it.tokens
	}
	return e.c.tokens
}

// Submit has reqs answered in the shared batches and waits for their
// results, in order. All of them are queued or none: with no room for
// them it returns ErrQueueFull at once. When ctx ends first (the client
// left), Submit returns ctx's error, and the requests not yet in a batch
// are dropped before they cost model time. A request the predictor
// refuses gets its error in its Result, as from Predict.
func (b *Batcher) Submit(ctx context.Context, reqs []task.Request) ([]task.Result, error) {
	select {
	case <-b.done:
		return nil, ErrStopped
	default:
	}
	if len(reqs) > b.cfg.MaxQueue {
		return nil, fmt.Errorf("%w: %d requests at once, the queue holds %d", ErrQueueFull, len(reqs), b.cfg.MaxQueue)
	}
	b.mu.Lock()
	if b.queued+len(reqs) > b.cfg.MaxQueue {
		b.mu.Unlock()
		b.m.Rejected.Inc()
		return nil, ErrQueueFull
	}
	b.queued += len(reqs)
	b.mu.Unlock()
	b.m.Queued.Add(float64(len(reqs)))

	res := make([]task.Result, len(reqs))
	calls := make([]*call, len(reqs))
	now := time.Now()
	pr, prepare := b.pred.(task.Preparer)
	for i, r := range reqs {
		if prepare {
			// On the caller's goroutine, beside the batch in the model.
			r = pr.Prepare(r)
		}
		c := &call{ctx: ctx, req: r, at: now, done: make(chan task.Result, 1)}
		if b.cfg.MaxTokens > 0 {
			n, err := b.pred.CountTokens(r)
			if err != nil {
				res[i].Err = err
				b.release(1)
				continue
			}
			c.tokens = n
		}
		calls[i] = c
		// The reservation above leaves room for it: this never blocks.
		b.queue <- c
	}
	for i, c := range calls {
		if c == nil {
			continue
		}
		select {
		case res[i] = <-c.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-b.done:
			return nil, ErrStopped
		}
	}
	return res, nil
}

// release frees the queue room of n calls that are answered or dropped.
func (b *Batcher) release(n int) {
	b.mu.Lock()
	b.queued -= n
	b.mu.Unlock()
	b.m.Queued.Sub(float64(n))
}

// finish answers a call and frees its room.
func (b *Batcher) finish(c *call, r task.Result) {
	c.done <- r
	b.release(1)
}

// Run batches and answers requests until ctx is done. Calls still queued
// then get ErrStopped from Submit.
func (b *Batcher) Run(ctx context.Context) {
	b.started.Store(true)
	defer close(b.done)
	jobs, stop := b.startLanes(ctx)
	defer stop()
	var (
		// seq numbers the batches in the order they are made.
		seq    uint64
		batch  []entry
		tokens int
		// gen is the group session of the batch's Kafka requests.
		gen    *session
		timer  = time.NewTimer(time.Hour)
		timerC <-chan time.Time
	)
	timer.Stop()
	flush := func() {
		timer.Stop()
		timerC = nil
		if len(batch) > 0 {
			jobs <- job{seq: seq, batch: batch}
			seq++
		}
		batch, tokens, gen = nil, 0, nil
	}
	add := func(e entry) {
		// One transaction commits offsets for one group generation.
		if e.it != nil {
			if b.w.cfg.ExactlyOnce && gen != nil && gen != e.it.st {
				flush()
			}
			gen = e.it.st
		}
		failed := e.it != nil && e.it.err != nil
		if b.cfg.MaxTokens > 0 && !failed && tokens > 0 && tokens+e.tokens() > b.cfg.MaxTokens {
			flush()
			if e.it != nil {
				gen = e.it.st
			}
		}
		batch = append(batch, e)
		tokens += e.tokens()
		if len(batch) >= b.cfg.MaxBatch || (b.cfg.MaxTokens > 0 && tokens >= b.cfg.MaxTokens) {
			flush()
		} else if timerC == nil {
			timer.Reset(b.cfg.MaxWait)
			timerC = timer.C
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-timerC:
			flush()
		case it := <-b.kafka:
			add(entry{it: it})
		case c := <-b.queue:
			add(entry{c: c})
		}
	}
}

// job is a batch for a lane; seq orders its answers among the others'.
type job struct {
	seq   uint64
	batch []entry
}

// answered is a batch's Kafka requests, answered by the model or not.
type answered struct {
	seq   uint64
	items []*item
}

// startLanes starts the goroutines that run batches through the model
// and the one that encodes and produces the Kafka answers, and returns the
// channel that hands batches to the lanes (a send waits for a free lane)
// and the function that stops them all once the batches sent are done.
//
// Answers are produced beside the model, not in front of the next batch,
// where that work kept the model waiting for a twentieth of its time.
// Batches that finish early wait for those made before them, so that a
// partition's answers stay in its order; with one lane they never wait.
// A lane waits for the producer when Lanes+1 batches are ahead of it (one
// being produced, Lanes waiting).
func (b *Batcher) startLanes(ctx context.Context) (chan<- job, func()) {
	jobs := make(chan job)
	var answers chan answered
	finished := make(chan struct{})
	if b.w != nil {
		answers = make(chan answered, b.cfg.Lanes)
		go func() {
			defer close(finished)
			ready := make(map[uint64][]*item)
			var next uint64
			for a := range answers {
				ready[a.seq] = a.items
				for items, ok := ready[next]; ok; items, ok = ready[next] {
					delete(ready, next)
					next++
					if len(items) > 0 {
						b.answer(ctx, items)
					}
				}
			}
		}()
	} else {
		close(finished)
	}
	var lanes sync.WaitGroup
	for range b.cfg.Lanes {
		lanes.Go(func() {
			for j := range jobs {
				items := b.process(ctx, j.batch)
				if answers != nil {
					answers <- answered{seq: j.seq, items: items}
				}
			}
		})
	}
	return jobs, func() {
		close(jobs)
		lanes.Wait()
		if answers != nil {
			close(answers)
		}
		<-finished
	}
}

// Sources of requests, as metrics label them.
const (
	SourceKafka = "kafka"
	SourceHTTP  = "http"
)

// process runs one batch through the model: every call gets its result,
// every Kafka request the model's answer (item.value, which answer
// encodes) or the error that makes it a dead letter. It returns the Kafka
// requests, for answer.
func (b *Batcher) process(ctx context.Context, batch []entry) []*item {
	var (
		reqs   []task.Request
		served []entry
		kafka  []*item
		tokens int
		n      = map[string]int{}
	)
	now := time.Now()
	for _, e := range batch {
		if c := e.c; c != nil {
			// The client left while its request waited: it costs no
			// model time.
			if err := c.ctx.Err(); err != nil {
				b.m.Cancelled.Inc()
				b.finish(c, task.Result{Err: err})
				continue
			}
			reqs = append(reqs, c.req)
			served = append(served, e)
			tokens += c.tokens
			n[SourceHTTP]++
			continue
		}
		it := e.it
		if !it.st.serves(it) {
			it.st.drop(it)
			continue
		}
		kafka = append(kafka, it)
		// A request may have waited for its batch, or behind a paused
		// partition, since it was consumed.
		if it.err == nil {
			it.err = b.w.expired(it, now)
		}
		if it.err == nil {
			reqs = append(reqs, it.req.Request)
			served = append(served, e)
			tokens += it.tokens
			n[SourceKafka]++
		}
	}
	if len(reqs) > 0 {
		t0 := time.Now()
		outs := b.pred.Predict(ctx, reqs)
		t1 := time.Now()
		b.m.ModelLatency.Observe(t1.Sub(t0).Seconds())
		b.m.BatchSize.Observe(float64(len(reqs)))
		for src, k := range n {
			b.m.BatchRequests.WithLabelValues(src).Observe(float64(k))
		}
		if b.cfg.MaxTokens > 0 {
			// Requests are sized only when batches have a token budget.
			b.m.BatchTokens.Observe(float64(tokens))
		}
		b.traceBatch(served, t0, t1, tokens, n)
		for i, e := range served {
			var out task.Result
			if len(outs) == len(reqs) {
				out = outs[i]
			} else {
				out.Err = fmt.Errorf("the model returned %d results for %d requests", len(outs), len(reqs))
			}
			if c := e.c; c != nil {
				b.m.AnswerLatency.WithLabelValues(SourceHTTP).Observe(t1.Sub(c.at).Seconds())
				b.finish(c, out)
				continue
			}
			it := e.it
			b.m.AnswerLatency.WithLabelValues(SourceKafka).Observe(t1.Sub(it.at).Seconds())
			if out.Err != nil {
				it.err = refusal(out.Err)
			} else {
				it.value = out.Value
			}
		}
	}
	return kafka
}

// answer encodes the answers of a batch's Kafka requests and produces them
// with the dead letters. Every request without an error was answered by
// the model.
func (b *Batcher) answer(ctx context.Context, items []*item) {
	for _, it := range items {
		if it.err != nil {
			continue
		}
		v, err := encodeResponse(it.req, it.value, b.pred.Name())
		it.value = nil
		if err != nil {
			it.err = refusal(err)
			continue
		}
		it.out = &sarama.ProducerMessage{Topic: b.w.cfg.OutTopic, Key: answerKey(it), Value: sarama.ByteEncoder(v), Headers: it.propagate(traceHeaders(it.msg))}
	}
	b.w.produce(ctx, items)
}

// produce sends the answers and dead letters of a batch's Kafka requests.
func (w *Worker) produce(ctx context.Context, live []*item) {
	for _, it := range live {
		if it.err != nil {
			it.out = w.deadLetter(it)
		}
		it.out.Metadata = it
	}
	w.pmu.RLock()
	defer w.pmu.RUnlock()
	if w.producerClosed {
		// The worker has stopped; what it did not answer is the next
		// owner's.
		for _, it := range live {
			it.st.drop(it)
		}
		return
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
	pm := &sarama.ProducerMessage{Topic: w.cfg.DLQTopic, Value: sarama.ByteEncoder(m.Value), Headers: it.propagate(hs)}
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
	if w.stopped.Load() {
		// Batches made before a fatal error still come here, from the
		// lanes; their requests are the next owner's to answer.
		for _, it := range batch {
			it.endSpan(outcomeFailed, errWorkerStopped)
			st.fail(it)
		}
		return
	}
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
		it.endSpan(outcomeFailed, err)
		st.fail(it)
	}
}

// errWorkerStopped fails what reaches the producer after a fatal error.
var errWorkerStopped = errors.New("the worker is stopping on a fatal error")

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
		// Left open, the transaction would refuse every BeginTxn after
		// it and hold read_committed readers up to its timeout.
		err := ctx.Err()
		if aerr := p.AbortTxn(); aerr != nil {
			err = fmt.Errorf("%w; aborting the transaction: %w", err, aerr)
		}
		return err
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
	if p.TxnStatus()&(sarama.ProducerTxnFlagAbortableError|sarama.ProducerTxnFlagFatalError) != 0 {
		// Aborting ends an abortable transaction. On a producer in a fatal
		// state it sends nothing and returns the error that put it there:
		// a commit can fail with INVALID_TXN_STATE while the producer
		// already knows it was fenced, and restarting it then would fence
		// the worker that took its transactional id over.
		if aerr := p.AbortTxn(); fenced(aerr) {
			w.fatal(aerr)
			return
		} else if aerr != nil {
			w.log.Error("aborting the transaction", "err", aerr)
		}
	}
	if p.TxnStatus()&sarama.ProducerTxnFlagFatalError != 0 && !w.stopped.Load() {
		// A broken transactional producer cannot go on; a new one gets
		// a new epoch and aborts whatever the old one left open.
		w.closeProducer()
		if perr := w.startProducer(); perr != nil {
			w.fatal(perr)
		}
	}
}
