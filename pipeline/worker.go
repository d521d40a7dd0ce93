package pipeline

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bertstream/bertstream/bert/task"
)

// Worker is one member of the consumer group: it consumes requests, batches
// them through the predictor and produces the answers, committing an offset
// only once everything up to it has been answered or dead-lettered and the
// brokers have acknowledged it.
type Worker struct {
	cfg   Config
	ccfg  *sarama.Config // consumer group and commits
	pcfg  *sarama.Config // producer
	pred  task.Predictor
	tasks map[string]bool
	log   *slog.Logger
	m     *Metrics

	client sarama.Client
	group  sarama.ConsumerGroup
	// producer is used, and replaced after a fatal transaction error,
	// only by the goroutine that produces the batches' answers, under
	// pmu's read lock; the result goroutines read their own copy, and
	// results closes when they are done with it. Run closes it for good
	// under the write lock and sets producerClosed: with a shared batcher
	// a batch of this worker's may still be on its way to it then.
	producer       sarama.AsyncProducer
	results        chan struct{}
	pmu            sync.RWMutex
	producerClosed bool

	// items carries prepared requests from the partition consumers to the
	// batcher. Its capacity equals slots', so a send never blocks.
	items chan *item
	// batcher batches the items, with other sources' requests when it is
	// Config.Batcher.
	batcher *Batcher
	// slots holds one token per request consumed and not yet committed.
	slots chan struct{}

	ready    atomic.Bool
	fatalErr chan error
	// stopped is set with the first fatal error: from then on the worker
	// starts no producer and, in exactly-once mode, begins no transaction
	// (the next owner answers those requests). A fenced worker would
	// otherwise fence, with a new producer's epoch, the worker that took
	// its transactional id over.
	stopped atomic.Bool
	// cur is the group session being served; draining is set when the
	// worker stops taking requests before it leaves the group.
	cur      atomic.Pointer[session]
	draining atomic.Bool
}

// NewWorker checks cfg and prepares a worker that serves pred; Run
// connects. The worker calls pred.Predict from Config.Lanes goroutines at
// once (one by default), and pred.Prepare (when pred is a task.Preparer)
// and pred.CountTokens, only when batches have a token budget
// (Config.MaxTokens), from the partition consumers.
func NewWorker(cfg Config, pred task.Predictor) (*Worker, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("pipeline config: %w", err)
	}
	ccfg, pcfg, err := cfg.saramaConfigs()
	if err != nil {
		return nil, err
	}
	m := cfg.Metrics
	if m == nil && cfg.Batcher != nil {
		m = cfg.Batcher.m
	}
	if m == nil {
		m = NewMetrics(prometheus.NewRegistry())
	}
	tasks := make(map[string]bool)
	for _, t := range pred.Tasks() {
		tasks[t] = true
	}
	w := &Worker{
		cfg:      cfg,
		ccfg:     ccfg,
		pcfg:     pcfg,
		pred:     pred,
		tasks:    tasks,
		log:      cfg.Logger.With("group", cfg.Group, "in", cfg.InTopic),
		m:        m,
		items:    make(chan *item, cfg.MaxInFlight),
		slots:    make(chan struct{}, cfg.MaxInFlight),
		fatalErr: make(chan error, 1),
	}
	w.batcher = cfg.Batcher
	if w.batcher == nil {
		w.batcher = NewBatcher(pred, BatchConfig{MaxBatch: cfg.MaxBatch, MaxWait: cfg.MaxWait, MaxTokens: cfg.MaxTokens, Lanes: cfg.Lanes, Tracer: cfg.Tracer}, m)
	}
	if err := w.batcher.attach(w); err != nil {
		return nil, err
	}
	return w, nil
}

// Ready reports whether the worker is in a consumer group session, serving
// the partitions it was given (possibly none, when the group has more
// workers than partitions).
func (w *Worker) Ready() bool { return w.ready.Load() }

// Run serves until ctx is done, then drains: it stops fetching, answers
// what it has consumed, commits, and leaves the group, within
// Config.DrainTimeout (plus the time to leave and flush the producer). It
// returns nil after a clean shutdown and an error when the brokers refuse
// the worker (authentication, authorization, a fenced transactional id) or
// cannot be reached at the start.
func (w *Worker) Run(ctx context.Context) error {
	w.log.Info("connecting", "brokers", w.cfg.Brokers, "security", w.cfg.Security, "exactly_once", w.cfg.ExactlyOnce)
	client, err := sarama.NewClient(w.cfg.Brokers, w.ccfg)
	if err != nil {
		return fmt.Errorf("connecting to kafka at %v: %w", w.cfg.Brokers, w.explain(err))
	}
	defer client.Close()
	coord, err := sarama.NewClient(w.cfg.Brokers, w.ccfg)
	if err != nil {
		return fmt.Errorf("connecting to kafka at %v: %w", w.cfg.Brokers, w.explain(err))
	}
	defer coord.Close()
	group, err := sarama.NewConsumerGroupFromClient(w.cfg.Group, &groupClient{Client: client, coord: coord})
	if err != nil {
		return fmt.Errorf("consumer group %q: %w", w.cfg.Group, err)
	}
	w.client, w.group = client, group
	// Asking for the topics creates them on brokers that create topics on
	// first use, so clients can subscribe to the answers before the first
	// one is written; and it finds a missing right before any work is done.
	if err := client.RefreshMetadata(w.cfg.InTopic, w.cfg.OutTopic, w.cfg.DLQTopic); err != nil {
		if isFatal(err) {
			_ = group.Close()
			return fmt.Errorf("kafka refused the worker: %w", w.explain(err))
		}
		w.log.Warn("looking up the topics", "err", err)
	}
	if err := w.startProducer(); err != nil {
		_ = group.Close()
		return err
	}
	go func() {
		for err := range group.Errors() {
			w.log.Warn("consumer group error", "err", err)
			if isFatal(err) {
				w.fatal(err)
			}
		}
	}()

	// The model side runs on its own context: on shutdown it must keep
	// answering until the consumer group has drained and committed. A
	// shared batcher is its owner's to run and stop.
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	batchDone := make(chan struct{})
	go func() {
		defer close(batchDone)
		if w.cfg.Batcher == nil {
			w.batcher.Run(workCtx)
		}
	}()

	consumeCtx, stopConsume := context.WithCancel(context.WithoutCancel(ctx))
	defer stopConsume()
	// A fatal error stops the consumption at once, shutdown after the
	// drain; runErr is written before watched closes.
	var runErr error
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case runErr = <-w.fatalErr:
		case <-ctx.Done():
			if w.cfg.cooperative() {
				w.drainInSession()
			}
		case <-consumeCtx.Done():
		}
		stopConsume()
	}()
	backoff := 250 * time.Millisecond
	for consumeCtx.Err() == nil && !w.draining.Load() {
		err := group.Consume(consumeCtx, []string{w.cfg.InTopic}, &handler{w: w})
		if err == nil || consumeCtx.Err() != nil {
			backoff = 250 * time.Millisecond
			continue
		}
		if errors.Is(err, sarama.ErrClosedConsumerGroup) {
			break
		}
		if isFatal(err) {
			w.fatal(err)
			break
		}
		w.log.Warn("joining the consumer group failed; retrying", "err", w.explain(err), "backoff", backoff)
		select {
		case <-consumeCtx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	w.ready.Store(false)
	stopConsume()
	<-watched
	// Close leaves the group at once, so the partitions move to the other
	// workers without waiting for the session timeout.
	if err := group.Close(); err != nil {
		w.log.Warn("leaving the consumer group", "err", err)
	}
	stopWork()
	<-batchDone
	w.pmu.Lock()
	w.producerClosed = true
	w.closeProducer()
	w.pmu.Unlock()
	if runErr == nil {
		// One that came while the last session drained.
		select {
		case runErr = <-w.fatalErr:
		default:
		}
	}
	if runErr != nil {
		return fmt.Errorf("kafka refused the worker: %w", w.explain(runErr))
	}
	w.log.Info("worker stopped")
	return nil
}

// drainInSession answers and commits what the worker consumed before it
// ends its cooperative session, while the session still takes part in the
// group's rebalances. Ending the session first would be wrong there: a
// rebalance under way (another worker joining, say) would move the group
// to a generation this worker never joins, and the coordinator would
// refuse every commit of the drain. An eager session cannot miss a
// generation that way: it drains in Cleanup, before it rejoins.
func (w *Worker) drainInSession() {
	w.draining.Store(true)
	w.group.PauseAll()
	st := w.cur.Load()
	if st == nil {
		return
	}
	deadline := time.Now().Add(w.cfg.DrainTimeout)
	drained := st.drain(deadline)
	committed := st.waitFor(st.settledLocked, deadline.Add(commitGrace))
	w.log.Info("drained before leaving the group", "drained", drained, "committed", committed)
}

// groupClient is the client of the consumer group: fetches go through
// Client, the group's coordination (join, sync, heartbeat, leave) through
// coord, on connections of its own. Sarama would send both over one
// connection per broker, and a broker answers a connection's requests in
// order: while the coordinator holds a member's JoinGroup until the other
// members rejoin, every fetch the member sends to that broker would wait
// behind it, and the partitions a cooperative rebalance leaves in place
// would stop with the others. Kafka's Java client keeps the coordinator
// on a connection of its own for the same reason.
type groupClient struct {
	sarama.Client
	coord sarama.Client
}

func (c *groupClient) Coordinator(group string) (*sarama.Broker, error) {
	return c.coord.Coordinator(group)
}

func (c *groupClient) RefreshCoordinator(group string) error {
	return c.coord.RefreshCoordinator(group)
}

func (w *Worker) fatal(err error) {
	w.stopped.Store(true)
	select {
	case w.fatalErr <- err:
	default:
	}
}

// isFatal tells errors that retrying cannot cure: the brokers refuse this
// worker's credentials, rights or certificate.
func isFatal(err error) bool {
	for _, e := range []error{
		sarama.ErrTopicAuthorizationFailed, sarama.ErrGroupAuthorizationFailed,
		sarama.ErrClusterAuthorizationFailed, sarama.ErrTransactionalIDAuthorizationFailed,
		sarama.ErrSASLAuthenticationFailed, sarama.ErrUnsupportedSASLMechanism,
		sarama.ErrIllegalSASLState,
		// Settings the brokers refuse, and a replica that another one
		// with its instance id replaced.
		sarama.ErrInvalidSessionTimeout, sarama.ErrInvalidTransactionTimeout,
		sarama.ErrFencedInstancedId,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ua x509.UnknownAuthorityError
	var cv *tls.CertificateVerificationError
	return errors.As(err, &ua) || errors.As(err, &cv) || tlsRefused(err)
}

// fenced reports whether a transactional producer was fenced: the
// coordinator says so, or a partition refuses its epoch because a newer
// one exists. Retrying cannot cure that either.
func fenced(err error) bool {
	return errors.Is(err, sarama.ErrProducerFenced) || errors.Is(err, sarama.ErrInvalidProducerEpoch)
}

// tlsRefused reports whether err is a TLS alert from the broker, such as
// "certificate required" (crypto/tls returns those as a net.OpError with
// Op "remote error").
func tlsRefused(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error"
}

// explain adds what a refusal means for the operator to the brokers'
// terse error.
func (w *Worker) explain(err error) error {
	switch {
	case errors.Is(err, sarama.ErrSASLAuthenticationFailed):
		return fmt.Errorf("SASL authentication failed: check the user, password and mechanism: %w", err)
	case w.cfg.Security.SASLMechanism != "" && errors.Is(err, io.EOF):
		// Some brokers (kfake among them) hang up instead of answering
		// SASL_AUTHENTICATION_FAILED.
		return fmt.Errorf("the broker closed the connection during SASL %s authentication as %q: a wrong user or password?: %w",
			w.cfg.Security.SASLMechanism, w.cfg.Security.SASLUser, err)
	case errors.Is(err, sarama.ErrTopicAuthorizationFailed), errors.Is(err, sarama.ErrGroupAuthorizationFailed),
		errors.Is(err, sarama.ErrClusterAuthorizationFailed), errors.Is(err, sarama.ErrTransactionalIDAuthorizationFailed):
		return fmt.Errorf("not authorized: the worker needs read on the input topic and group, write on the output and dead-letter topics, and idempotent write on the cluster (or write on its transactional id): %w", err)
	case errors.Is(err, sarama.ErrInvalidSessionTimeout):
		return fmt.Errorf("the brokers refuse the session timeout %v: it must lie within their group.min.session.timeout.ms and group.max.session.timeout.ms (6s to 30m by default; 6s to 5m on the embedded broker): %w", w.cfg.SessionTimeout, err)
	case errors.Is(err, sarama.ErrInvalidTransactionTimeout):
		return fmt.Errorf("the brokers refuse the transaction timeout %v: it must not exceed their transaction.max.timeout.ms (15m by default): %w", w.cfg.TransactionTimeout, err)
	case errors.Is(err, sarama.ErrInconsistentGroupProtocol):
		return fmt.Errorf("the group's workers rebalance %s, not %s like this one: every worker of a group needs the same (stop them all to change it): %w",
			map[bool]string{true: RebalanceEager, false: RebalanceCooperative}[w.cfg.cooperative()], w.cfg.Rebalance, err)
	case errors.Is(err, sarama.ErrFencedInstancedId):
		return fmt.Errorf("another worker joined the group with instance id %q and replaced this one: each replica needs its own: %w", w.cfg.InstanceID, err)
	case fenced(err):
		return fmt.Errorf("another worker took over transactional id %q and fenced this one: %w", w.cfg.TransactionalID, err)
	case tlsRefused(err):
		return fmt.Errorf("the broker refused the TLS handshake (does it require a client certificate this worker lacks, or one from another CA?): %w", err)
	}
	return err
}

func (w *Worker) startProducer() error {
	p, err := sarama.NewAsyncProducer(w.cfg.Brokers, w.pcfg)
	if err != nil {
		return fmt.Errorf("producer at %v: %w", w.cfg.Brokers, w.explain(err))
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for msg := range p.Successes() {
			msg.Metadata.(*item).resolve(nil)
		}
	})
	wg.Go(func() {
		for pe := range p.Errors() {
			pe.Msg.Metadata.(*item).resolve(pe.Err)
		}
	})
	results := make(chan struct{})
	go func() {
		wg.Wait()
		close(results)
	}()
	w.producer, w.results = p, results
	return nil
}

// closeProducer flushes and closes the producer; it gives up waiting after
// DrainTimeout, when the brokers are gone and the producer is still
// retrying, since nothing it holds will be committed anyway.
func (w *Worker) closeProducer() {
	w.producer.AsyncClose()
	select {
	case <-w.results:
	case <-time.After(w.cfg.DrainTimeout):
		w.log.Warn("the producer did not flush within the drain timeout; closing anyway")
	}
}

// handler is Sarama's view of one worker for one session.
type handler struct {
	w  *Worker
	st *session
}

func (h *handler) Setup(s sarama.ConsumerGroupSession) error {
	h.st = newSession(h.w, s)
	h.w.cur.Store(h.st)
	go h.st.commitLoop()
	h.w.m.Rebalances.Inc()
	h.w.ready.Store(true)
	h.w.log.Info("group session started", "generation", s.GenerationID(), "member", s.MemberID(), "claims", s.Claims())
	return nil
}

func (h *handler) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	w, st := h.w, h.st
	lag := w.m.Lag.WithLabelValues(strconv.Itoa(int(claim.Partition())))
	for {
		select {
		case msg, ok := <-claim.Messages():
			if !ok {
				if s.Context().Err() == nil {
					// The session goes on without this partition: a
					// cooperative rebalance gives it to another worker
					// once this one has let go of it.
					h.revoke(s, claim)
				}
				return nil
			}
			if w.draining.Load() {
				// Stopping: what is not taken now is the next owner's.
				continue
			}
			if !w.acquire(s, st, claim.Topic(), claim.Partition()) {
				return nil
			}
			lag.Set(float64(claim.HighWaterMarkOffset() - msg.Offset - 1))
			it := w.prepare(st, msg)
			st.register(it)
			w.items <- it
		case <-st.ending:
			// Returning ends the session: the group rejoins and the next
			// session starts from the committed offsets.
			return nil
		case <-s.Context().Done():
			return nil
		}
	}
}

// revoke answers and commits what was consumed of a revoked partition
// before its ConsumeClaim returns, since the group gives the partition to
// its new owner when this worker rejoins after that, and the new owner
// starts from the committed offset. Sarama waits the rebalance timeout
// for it, which leaves room for the drain and the commit.
func (h *handler) revoke(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) {
	w := h.w
	drained, left := h.st.revoke(partKey{claim.Topic(), claim.Partition()}, time.Now().Add(w.cfg.DrainTimeout))
	w.m.Lag.DeleteLabelValues(strconv.Itoa(int(claim.Partition())))
	w.log.Info("partition revoked", "topic", claim.Topic(), "partition", claim.Partition(), "generation", s.GenerationID(), "drained", drained, "abandoned", left)
}

// Cleanup runs when the session ends (an eager rebalance, a refused
// answer, or shutdown), before the worker rejoins or leaves: the group
// waits for it (up to the rebalance timeout), so what it commits here is
// not redelivered to the partitions' next owners. A cooperative session
// lives through rebalances; it ends only on those other causes.
func (h *handler) Cleanup(s sarama.ConsumerGroupSession) error {
	w, st := h.w, h.st
	w.ready.Store(false)
	deadline := time.Now().Add(w.cfg.DrainTimeout)
	drained := st.drain(deadline)
	close(st.stop)
	<-st.stopped
	if err := st.finalCommit(deadline.Add(commitGrace)); err != nil {
		w.log.Warn("final commit of the session failed; its answered requests will be redelivered", "err", err)
		if isFatal(err) {
			w.fatal(err)
		}
	}
	left := st.close()
	for _, parts := range s.Claims() {
		for _, p := range parts {
			w.m.Lag.DeleteLabelValues(strconv.Itoa(int(p)))
		}
	}
	w.log.Info("group session ended", "generation", s.GenerationID(), "drained", drained, "abandoned", left)
	return nil
}

// commitGrace is how long past the drain deadline the final commit of a
// session may retry; the rebalance timeout allows for it.
const commitGrace = 3 * time.Second

// acquire takes an in-flight slot for the next message of a partition,
// pausing the partition's fetches while none is free.
func (w *Worker) acquire(s sarama.ConsumerGroupSession, st *session, topic string, partition int32) bool {
	select {
	case w.slots <- struct{}{}:
		w.m.InFlight.Inc()
		return true
	default:
	}
	parts := map[string][]int32{topic: {partition}}
	w.group.Pause(parts)
	w.m.Paused.Inc()
	defer func() {
		w.group.Resume(parts)
		w.m.Paused.Dec()
	}()
	select {
	case w.slots <- struct{}{}:
		w.m.InFlight.Inc()
		return true
	case <-s.Context().Done():
	case <-st.ending:
	}
	return false
}

func (w *Worker) releaseSlot() {
	<-w.slots
	w.m.InFlight.Dec()
}

// prepare decodes a message, has the predictor prepare it (tokenize it,
// for bert's) and, when batches have a token budget, sizes it; a message
// that cannot be served carries its error and goes to the dead-letter
// topic. Without a budget the model finds what it cannot serve when it
// gets the batch.
func (w *Worker) prepare(st *session, msg *sarama.ConsumerMessage) *item {
	w.m.Consumed.Inc()
	it := &item{w: w, st: st, msg: msg, at: time.Now()}
	if w.cfg.Tracer != nil {
		w.startSpan(it)
	}
	it.req, it.err = ParseRequest(msg.Value, w.tasks, w.cfg.MaxTextBytes)
	if it.err == nil {
		it.err = w.expired(it, it.at)
	}
	if it.err != nil {
		return it
	}
	if pr, ok := w.pred.(task.Preparer); ok {
		// Each partition's requests are read on a goroutine of their
		// own: tokenized here, they are not tokenized in front of the
		// model while it waits.
		it.req.Request = pr.Prepare(it.req.Request)
	}
	if w.cfg.MaxTokens == 0 {
		return it
	}
	n, err := w.pred.CountTokens(it.req.Request)
	if err != nil {
		// Whatever the predictor refuses before the model runs is the
		// request's fault, even where it does not say so.
		err = refusal(err)
		var ie *InputError
		if !errors.As(err, &ie) {
			err = &InputError{Reason: ReasonBadRequest, Err: err}
		}
		it.err = err
		return it
	}
	it.tokens = n
	return it
}

// expired is the error of a request past its deadline or older than
// MaxAge at now, or nil.
func (w *Worker) expired(it *item, now time.Time) error {
	if d := it.req.Deadline; !d.IsZero() && now.After(d) {
		return inputErr(ReasonExpired, "the deadline %s passed %v before the model got to the request", d.Format(time.RFC3339Nano), now.Sub(d).Round(time.Millisecond))
	}
	// A record without a timestamp (before Kafka 0.10) has no age.
	if ts := it.msg.Timestamp; w.cfg.MaxAge > 0 && !ts.IsZero() && ts.Unix() > 0 {
		if age := now.Sub(ts); age > w.cfg.MaxAge {
			return inputErr(ReasonExpired, "the request is %v old, over the worker's maximum age %v", age.Round(time.Millisecond), w.cfg.MaxAge)
		}
	}
	return nil
}
