package pipeline

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
)

// Worker is one member of the consumer group: it consumes requests, batches
// them through the Predictor and produces the answers, committing an offset
// only once everything up to it has been answered or dead-lettered and the
// brokers have acknowledged it.
type Worker struct {
	cfg   Config
	scfg  *sarama.Config
	pred  Predictor
	tasks map[string]bool
	log   *slog.Logger
	m     *Metrics

	group sarama.ConsumerGroup
	// producer is replaced only by the batch goroutine (after a fatal
	// transaction error); the result goroutines read their own copy.
	producer sarama.AsyncProducer
	results  sync.WaitGroup

	// items carries prepared requests from the partition consumers to the
	// batcher. Its capacity equals slots', so a send never blocks.
	items chan *item
	// slots holds one token per request consumed and not yet committed.
	slots chan struct{}

	ready    atomic.Bool
	fatalErr chan error
}

// NewWorker checks cfg and prepares a worker; Run connects.
func NewWorker(cfg Config, pred Predictor) (*Worker, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("pipeline config: %w", err)
	}
	scfg, err := cfg.saramaConfig()
	if err != nil {
		return nil, err
	}
	m := cfg.Metrics
	if m == nil {
		m = NewMetrics(prometheus.NewRegistry())
	}
	tasks := make(map[string]bool)
	for _, t := range pred.Tasks() {
		tasks[t] = true
	}
	return &Worker{
		cfg:      cfg,
		scfg:     scfg,
		pred:     pred,
		tasks:    tasks,
		log:      cfg.Logger.With("group", cfg.Group, "in", cfg.InTopic),
		m:        m,
		items:    make(chan *item, cfg.MaxInFlight),
		slots:    make(chan struct{}, cfg.MaxInFlight),
		fatalErr: make(chan error, 1),
	}, nil
}

// Ready reports whether the worker has joined its group and is serving.
func (w *Worker) Ready() bool { return w.ready.Load() }

// Run serves until ctx is done, then drains: it stops fetching, answers
// what it has consumed, commits, and leaves the group, within
// Config.DrainTimeout. It returns nil after a clean shutdown and an error
// when the brokers refuse it (authentication, authorization) or cannot be
// reached at the start.
func (w *Worker) Run(ctx context.Context) error {
	group, err := sarama.NewConsumerGroup(w.cfg.Brokers, w.cfg.Group, w.scfg)
	if err != nil {
		return fmt.Errorf("consumer group %q at %v: %w", w.cfg.Group, w.cfg.Brokers, err)
	}
	w.group = group
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
	// answering until the consumer group has drained and committed.
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	batchDone := make(chan struct{})
	go func() {
		defer close(batchDone)
		w.batchLoop(workCtx)
	}()

	consumeCtx, stopConsume := context.WithCancel(ctx)
	defer stopConsume()
	var runErr error
	fatalSeen := make(chan struct{})
	go func() {
		select {
		case runErr = <-w.fatalErr:
			close(fatalSeen)
			stopConsume()
		case <-consumeCtx.Done():
		}
	}()
	for consumeCtx.Err() == nil {
		err := group.Consume(consumeCtx, []string{w.cfg.InTopic}, &handler{w: w})
		if err == nil || consumeCtx.Err() != nil {
			continue
		}
		if errors.Is(err, sarama.ErrClosedConsumerGroup) {
			break
		}
		w.log.Warn("consumer group session failed", "err", err)
		if isFatal(err) {
			w.fatal(err)
			break
		}
		select {
		case <-consumeCtx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
	w.ready.Store(false)
	stopConsume()
	// Close leaves the group at once, so the partitions move to the other
	// workers without waiting for the session timeout.
	if err := group.Close(); err != nil {
		w.log.Warn("leaving the consumer group", "err", err)
	}
	stopWork()
	<-batchDone
	w.closeProducer()
	select {
	case <-fatalSeen:
		return fmt.Errorf("kafka refused the worker: %w", runErr)
	default:
	}
	w.log.Info("worker stopped")
	return nil
}

func (w *Worker) fatal(err error) {
	select {
	case w.fatalErr <- err:
	default:
	}
}

// isFatal tells errors that retrying cannot cure: the brokers refuse this
// worker's credentials or rights.
func isFatal(err error) bool {
	for _, e := range []error{
		sarama.ErrTopicAuthorizationFailed, sarama.ErrGroupAuthorizationFailed,
		sarama.ErrClusterAuthorizationFailed, sarama.ErrTransactionalIDAuthorizationFailed,
		sarama.ErrSASLAuthenticationFailed, sarama.ErrUnsupportedSASLMechanism,
		sarama.ErrIllegalSASLState,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ua x509.UnknownAuthorityError
	var cv *tls.CertificateVerificationError
	return errors.As(err, &ua) || errors.As(err, &cv)
}

func (w *Worker) startProducer() error {
	p, err := sarama.NewAsyncProducer(w.cfg.Brokers, w.scfg)
	if err != nil {
		return fmt.Errorf("producer at %v: %w", w.cfg.Brokers, err)
	}
	w.producer = p
	w.results.Add(2)
	go func() {
		defer w.results.Done()
		for msg := range p.Successes() {
			msg.Metadata.(*item).resolve(nil)
		}
	}()
	go func() {
		defer w.results.Done()
		for pe := range p.Errors() {
			pe.Msg.Metadata.(*item).resolve(pe.Err)
		}
	}()
	return nil
}

func (w *Worker) closeProducer() {
	if err := w.producer.Close(); err != nil {
		w.log.Warn("closing the producer", "err", err)
	}
	w.results.Wait()
}

// handler is Sarama's view of one worker for one session.
type handler struct {
	w  *Worker
	st *session
}

func (h *handler) Setup(s sarama.ConsumerGroupSession) error {
	h.st = newSession(h.w, s)
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
				return nil
			}
			if !w.acquire(s, st, claim.Topic(), claim.Partition()) {
				return nil
			}
			lag.Set(float64(claim.HighWaterMarkOffset() - msg.Offset - 1))
			it := w.prepare(st, msg)
			st.register(it)
			w.items <- it
		case <-st.failed:
			// Returning ends the session: the group rejoins and the next
			// session starts from the committed offsets.
			return nil
		case <-s.Context().Done():
			return nil
		}
	}
}

func (h *handler) Cleanup(s sarama.ConsumerGroupSession) error {
	st := h.st
	drained := st.drain(h.w.cfg.DrainTimeout)
	close(st.stop)
	<-st.stopped
	st.commit()
	left := st.close()
	h.w.log.Info("group session ended", "generation", s.GenerationID(), "drained", drained, "abandoned", left)
	return nil
}

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
	case <-st.failed:
	}
	return false
}

func (w *Worker) releaseSlot() {
	<-w.slots
	w.m.InFlight.Dec()
}

// prepare decodes a message and sizes it; a message that cannot be served
// carries its error and goes to the dead-letter topic.
func (w *Worker) prepare(st *session, msg *sarama.ConsumerMessage) *item {
	w.m.Consumed.Inc()
	it := &item{w: w, st: st, msg: msg, at: time.Now()}
	it.req, it.err = ParseRequest(msg.Value, w.tasks, w.cfg.MaxTextBytes)
	if it.err != nil {
		return it
	}
	n, err := w.pred.CountTokens(taskOf(it.req))
	if err != nil {
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
