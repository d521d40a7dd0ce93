package trace

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
)

// Options configure an Exporter. The zero values of the limits take the
// defaults documented on each, which are OpenTelemetry's own for its
// batching span processor and OTLP exporter unless said otherwise.
type Options struct {
	// URL is where spans are sent: the collector's OTLP/HTTP traces
	// endpoint, such as http://collector:4318/v1/traces.
	URL string
	// Headers are sent with every export (OTEL_EXPORTER_OTLP_HEADERS:
	// an API key, a tenant).
	Headers map[string]string
	// Resource describes the process: service.name and the like.
	Resource []Attr
	// Scope and ScopeVersion name what made the spans (OTLP's
	// instrumentation scope).
	Scope, ScopeVersion string
	// Compression encodes the exports' bodies: CompressionGzip sends them
	// gzipped with Content-Encoding: gzip; CompressionNone or "" as they
	// are (the default, OpenTelemetry's).
	Compression string

	// QueueSize bounds the spans recorded and not yet sent; past it
	// spans are dropped and counted. Default 2048.
	QueueSize int
	// BatchSize bounds the spans of one export; default 512.
	BatchSize int
	// Interval is the longest a span waits for its batch to fill;
	// default 5s.
	Interval time.Duration
	// Timeout bounds one POST; default 10s.
	Timeout time.Duration
	// RetryFor bounds how long one batch is retried while the collector
	// is unreachable or asks for patience (429, 502, 503, 504); then it
	// is dropped. Default 30s (ours: OpenTelemetry's minute would hold
	// the queue full twice as long when the collector is down).
	RetryFor time.Duration
	// Backoff is the first wait between retries, doubled (with jitter)
	// after each up to 5s; a Retry-After header replaces it. Default 500ms.
	Backoff time.Duration

	// Client sends the exports; default a client of its own.
	Client  *http.Client
	Logger  *slog.Logger
	Metrics *Metrics
}

// The compressions of Options.Compression, as OpenTelemetry's
// OTEL_EXPORTER_OTLP_COMPRESSION names them.
const (
	CompressionGzip = "gzip"
	CompressionNone = "none"
)

// maxBackoff caps the growing wait between retries.
const maxBackoff = 5 * time.Second

// Metrics count what became of the spans.
type Metrics struct {
	// Exported counts the spans the collector took.
	Exported prometheus.Counter
	// Dropped counts the spans lost, by reason: queue_full (recorded
	// while the queue was full: the collector is slow or down),
	// export_failed (the collector refused the batch, or was unreachable
	// for RetryFor), rejected (the collector took the batch but refused
	// these spans), shutdown (recorded after, or still queued at the end
	// of, Shutdown).
	Dropped *prometheus.CounterVec
	// Retries counts the exports sent again.
	Retries prometheus.Counter
}

// Reasons of Metrics.Dropped.
const (
	DropQueueFull    = "queue_full"
	DropExportFailed = "export_failed"
	DropRejected     = "rejected"
	DropShutdown     = "shutdown"
)

// NewMetrics creates the collectors and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns = "bertstream"
	m := &Metrics{
		Exported: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "spans_exported_total", Help: "Spans the OTLP collector accepted."}),
		Dropped:  prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "spans_dropped_total", Help: "Spans lost before the OTLP collector took them, by reason."}, []string{"reason"}),
		Retries:  prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "span_export_retries_total", Help: "OTLP exports sent again after a failure or a request to slow down."}),
	}
	// Every reason shows from the start, so that a rate over them works
	// before the first drop.
	for _, r := range []string{DropQueueFull, DropExportFailed, DropRejected, DropShutdown} {
		m.Dropped.WithLabelValues(r)
	}
	reg.MustRegister(m.Exported, m.Dropped, m.Retries)
	return m
}

// Exporter sends spans to an OTLP/HTTP collector in the background.
// Record never blocks: spans wait in a bounded queue, are sent in
// batches, and are dropped (and counted) when the queue is full, so a
// slow or absent collector costs the answers nothing.
type Exporter struct {
	o      Options
	queue  chan *Span
	header http.Header
	// gz compresses every export with Compression gzip, nil without. Only
	// run's goroutine uses it. One writer for the exporter's life, not a
	// sync.Pool's: at one batch every few seconds the garbage collector
	// would empty a pool between most batches, and each would allocate
	// the compressor's 800 KB of tables again.
	gz *gzip.Writer

	// mu orders Record against Shutdown: no span enters the queue after
	// the exporter stopped reading it.
	mu      sync.RWMutex
	closed  bool
	stop    chan struct{}
	done    chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
	stopped sync.Once
}

// New checks o and starts an exporter; Shutdown stops it.
func New(o Options) (*Exporter, error) {
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, fmt.Errorf("OTLP endpoint %q: %w", o.URL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("OTLP endpoint %q: want an http:// or https:// URL with a host, such as http://localhost:4318", o.URL)
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 2048
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 512
	}
	o.BatchSize = min(o.BatchSize, o.QueueSize)
	if o.Interval <= 0 {
		o.Interval = 5 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.RetryFor <= 0 {
		o.RetryFor = 30 * time.Second
	}
	if o.Backoff <= 0 {
		o.Backoff = 500 * time.Millisecond
	}
	if o.Client == nil {
		o.Client = &http.Client{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	h := make(http.Header)
	for k, v := range o.Headers {
		h.Set(k, v)
	}
	h.Set("Content-Type", "application/x-protobuf")
	var gz *gzip.Writer
	switch o.Compression {
	case "", CompressionNone:
	case CompressionGzip:
		gz = gzip.NewWriter(io.Discard)
		h.Set("Content-Encoding", "gzip")
	default:
		return nil, fmt.Errorf("OTLP compression %q: want %q or %q", o.Compression, CompressionGzip, CompressionNone)
	}
	if h.Get("User-Agent") == "" {
		h.Set("User-Agent", "bertstream-otlp/"+o.ScopeVersion)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Exporter{
		o:      o,
		queue:  make(chan *Span, o.QueueSize),
		header: h,
		gz:     gz,
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		ctx:    ctx,
		cancel: cancel,
	}
	go e.run()
	return e, nil
}

// URL is where the exporter sends spans.
func (e *Exporter) URL() string { return e.o.URL }

// Record queues a finished span for export, or drops it when the queue
// is full or the exporter has stopped. It never blocks.
func (e *Exporter) Record(s *Span) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		e.drop(1, DropShutdown)
		return
	}
	select {
	case e.queue <- s:
	default:
		e.drop(1, DropQueueFull)
	}
}

func (e *Exporter) drop(n int, reason string) {
	e.o.Metrics.Dropped.WithLabelValues(reason).Add(float64(n))
}

// Shutdown sends what is queued and stops the exporter. It waits until
// everything is sent or ctx ends; the spans still unsent then are
// dropped, and Shutdown returns ctx's error.
func (e *Exporter) Shutdown(ctx context.Context) error {
	e.stopped.Do(func() {
		e.mu.Lock()
		e.closed = true
		e.mu.Unlock()
		close(e.stop)
	})
	// The last exports are retried as long as the caller waits, and no
	// longer.
	defer context.AfterFunc(ctx, e.cancel)()
	select {
	case <-e.done:
		return nil
	case <-ctx.Done():
		e.cancel()
		<-e.done
		return fmt.Errorf("sending the last spans to %s: %w", e.o.URL, ctx.Err())
	}
}

// run batches the queued spans and exports them, until Shutdown.
func (e *Exporter) run() {
	defer close(e.done)
	defer e.cancel()
	tick := time.NewTicker(e.o.Interval)
	defer tick.Stop()
	batch := make([]*Span, 0, e.o.BatchSize)
	flush := func() {
		if len(batch) > 0 {
			e.export(batch)
			batch = batch[:0]
		}
	}
	for {
		select {
		case s := <-e.queue:
			batch = append(batch, s)
			if len(batch) == e.o.BatchSize {
				flush()
			}
		case <-tick.C:
			flush()
		case <-e.stop:
			// Record takes no more spans: the queue is all that is left.
			for {
				select {
				case s := <-e.queue:
					batch = append(batch, s)
					if len(batch) == e.o.BatchSize {
						flush()
					}
				default:
					flush()
					return
				}
			}
		}
	}
}

// export sends one batch, retrying what the OTLP specification says may
// be retried, and counts the outcome.
func (e *Exporter) export(batch []*Span) {
	n := len(batch)
	body, err := proto.Marshal(e.encode(batch))
	if err != nil {
		// encode makes every string valid UTF-8, the one thing Marshal
		// checks; this is a bug, not a collector's refusal.
		e.o.Logger.Error("encoding spans for OTLP", "err", err)
		e.drop(n, DropExportFailed)
		return
	}
	// Compressed once: every retry sends these same bytes.
	if body, err = e.compress(body); err != nil {
		e.o.Logger.Error("compressing spans for OTLP", "err", err)
		e.drop(n, DropExportFailed)
		return
	}
	giveUp := time.Now().Add(e.o.RetryFor)
	backoff := e.o.Backoff
	for {
		r := e.post(body)
		if r.err == nil {
			if r.rejected > 0 {
				e.o.Logger.Warn("the OTLP collector rejected spans", "url", e.o.URL, "rejected", r.rejected, "of", n, "message", r.msg)
				e.drop(int(min(r.rejected, int64(n))), DropRejected)
			}
			e.o.Metrics.Exported.Add(float64(n - int(min(r.rejected, int64(n)))))
			return
		}
		wait := r.after
		if wait == 0 {
			// Jitter keeps a fleet of workers from retrying in step.
			wait = backoff/2 + rand.N(backoff)
			backoff = min(2*backoff, maxBackoff)
		}
		reason := DropExportFailed
		if e.ctx.Err() != nil {
			reason = DropShutdown
		}
		if !r.retry || e.ctx.Err() != nil || time.Now().Add(wait).After(giveUp) {
			e.o.Logger.Warn("dropping spans the OTLP collector did not take", "url", e.o.URL, "spans", n, "err", r.err, "reason", reason)
			e.drop(n, reason)
			return
		}
		e.o.Logger.Debug("retrying an OTLP export", "url", e.o.URL, "err", r.err, "wait", wait)
		select {
		case <-time.After(wait):
		case <-e.ctx.Done():
		}
		e.o.Metrics.Retries.Inc()
	}
}

// compress is body as the exports are sent: gzipped with the exporter's
// one writer, or as it is.
func (e *Exporter) compress(body []byte) ([]byte, error) {
	if e.gz == nil {
		return body, nil
	}
	var buf bytes.Buffer
	e.gz.Reset(&buf)
	if _, err := e.gz.Write(body); err != nil {
		return nil, err
	}
	if err := e.gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// postResult is how one POST went: err is nil when the collector took
// the batch (less rejected spans); retry says whether sending it again
// may succeed, after the wait the collector asked for, if any.
type postResult struct {
	err      error
	retry    bool
	after    time.Duration
	rejected int64
	msg      string
}

// maxResponse bounds what is read of a collector's answer.
const maxResponse = 64 << 10

func (e *Exporter) post(body []byte) postResult {
	ctx, cancel := context.WithTimeout(e.ctx, e.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.o.URL, bytes.NewReader(body))
	if err != nil {
		return postResult{err: err}
	}
	req.Header = e.header.Clone()
	resp, err := e.o.Client.Do(req)
	if err != nil {
		// Unreachable, refused, timed out: the collector may be back soon.
		return postResult{err: err, retry: true}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	// What is left unread would keep the connection from being reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
	if resp.StatusCode/100 == 2 {
		if err != nil {
			// The collector took the batch; only its remarks are lost.
			return postResult{}
		}
		rejected, msg, derr := decodePartialSuccess(b)
		if derr != nil {
			e.o.Logger.Debug("reading the OTLP collector's answer", "err", derr)
		}
		return postResult{rejected: rejected, msg: msg}
	}
	r := postResult{err: fmt.Errorf("the collector answered %s: %s", resp.Status, statusMessage(resp.Header.Get("Content-Type"), b))}
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		r.retry = true
		r.after = retryAfter(resp.Header.Get("Retry-After"), time.Now())
	case http.StatusBadGateway, http.StatusGatewayTimeout:
		r.retry = true
	}
	return r
}

// retryAfter reads a Retry-After header, seconds or an HTTP date; 0 when
// absent or unreadable.
func retryAfter(h string, now time.Time) time.Duration {
	if h == "" {
		return 0
	}
	if s, err := strconv.ParseInt(h, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		// Past a day it is no wait anyone means; the retry budget ends it.
		return time.Duration(min(s, 86400)) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
