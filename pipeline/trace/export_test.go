package trace_test

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/bertstream/bertstream/pipeline/trace"
	"github.com/bertstream/bertstream/pipeline/trace/tracetest"
)

func value(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

func newExporter(t *testing.T, o trace.Options) (*trace.Exporter, *trace.Metrics) {
	t.Helper()
	if o.Metrics == nil {
		o.Metrics = trace.NewMetrics(prometheus.NewRegistry())
	}
	e, err := trace.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Shutdown(context.Background()) })
	return e, o.Metrics
}

func span(name string) *trace.Span {
	now := time.Now()
	return &trace.Span{Context: trace.NewRoot(), Name: name, Kind: trace.KindInternal, Start: now.Add(-time.Millisecond), End: now}
}

// TestExport: what the collector decodes is what was recorded, resource,
// ids, parent, links, attributes and status included, with the configured
// headers; Shutdown sends what waits for the interval.
func TestExport(t *testing.T) {
	c := tracetest.New(t)
	e, m := newExporter(t, trace.Options{
		URL:      c.URL(),
		Headers:  map[string]string{"X-Tenant": "t1"},
		Resource: []trace.Attr{trace.String("service.name", "bertstream"), trace.Int("process.pid", 7)},
		Scope:    "test", ScopeVersion: "v0",
		Interval: time.Hour,
	})
	parent, err := trace.ParseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if err != nil {
		t.Fatal(err)
	}
	parent.State = "vendor=x"
	batch := trace.NewRoot()
	child := trace.Child(parent)
	t0 := time.Unix(1700000000, 123456789)
	e.Record(&trace.Span{
		Context: child, Parent: parent.SpanID, ParentRemote: true,
		Name: "process requests", Kind: trace.KindConsumer, Start: t0, End: t0.Add(time.Second),
		Attrs: []trace.Attr{trace.String("s", "bad \xff byte"), trace.Int("i", -3), trace.Float("f", 0.5), trace.Bool("b", true)},
		Links: []trace.Link{{Context: batch}}, Status: trace.StatusError, Message: "expired",
	})
	e.Record(span("other"))
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := c.Spans()
	if len(got) != 2 {
		t.Fatalf("collector got %d spans, want 2", len(got))
	}
	s := tracetest.Named(got, "process requests")[0]
	if tracetest.Hex(s.TraceId) != parent.TraceID.String() || tracetest.Hex(s.ParentSpanId) != parent.SpanID.String() || tracetest.Hex(s.SpanId) != child.SpanID.String() {
		t.Errorf("ids %x/%x parent %x, want %s/%s parent %s", s.TraceId, s.SpanId, s.ParentSpanId, parent.TraceID, child.SpanID, parent.SpanID)
	}
	if s.TraceState != "vendor=x" || s.Kind != tracepb.Span_SPAN_KIND_CONSUMER || s.StartTimeUnixNano != uint64(t0.UnixNano()) || s.EndTimeUnixNano != uint64(t0.Add(time.Second).UnixNano()) {
		t.Errorf("span %v", s.Span)
	}
	// Sampled, with a remote parent (OTLP's SpanFlags).
	if s.Flags != 0x301 {
		t.Errorf("flags %#x, want 0x301", s.Flags)
	}
	if s.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR || s.Status.GetMessage() != "expired" {
		t.Errorf("status %v", s.Status)
	}
	if len(s.Links) != 1 || tracetest.Hex(s.Links[0].SpanId) != batch.SpanID.String() || s.Links[0].Flags != 0x103 {
		t.Errorf("links %v, want one to %s, local and sampled", s.Links, batch.SpanID)
	}
	for k, want := range map[string]any{"s": "bad \uFFFD byte", "i": int64(-3), "f": 0.5, "b": true} {
		if v := tracetest.Attr(s.Attributes, k); v != want {
			t.Errorf("attribute %s = %#v, want %#v", k, v, want)
		}
	}
	if tracetest.Attr(s.Resource, "service.name") != "bertstream" || tracetest.Attr(s.Resource, "process.pid") != int64(7) {
		t.Errorf("resource %v", s.Resource)
	}
	reqs := c.Requests()
	if len(reqs) != 1 || reqs[0].Header.Get("X-Tenant") != "t1" || !strings.HasPrefix(reqs[0].Header.Get("User-Agent"), "bertstream-otlp/") {
		t.Errorf("requests %v, want one with X-Tenant t1", reqs)
	}
	if ce := reqs[0].Header.Get("Content-Encoding"); ce != "" {
		t.Errorf("Content-Encoding %q without compression", ce)
	}
	if v := value(m.Exported); v != 2 {
		t.Errorf("exported %v, want 2", v)
	}
	e.Record(span("late"))
	if v := value(m.Dropped.WithLabelValues(trace.DropShutdown)); v != 1 {
		t.Errorf("a span recorded after Shutdown: dropped{shutdown} %v, want 1", v)
	}
}

// TestExportGzip: with gzip the body is gzipped and says so, the collector
// decodes the spans recorded, and a retry sends the very bytes of the
// first try.
func TestExportGzip(t *testing.T) {
	c := tracetest.New(t)
	e, m := newExporter(t, trace.Options{URL: c.URL(), Compression: trace.CompressionGzip, Interval: 10 * time.Millisecond, Backoff: 10 * time.Millisecond})
	c.Refuse(tracetest.Refusal{Status: http.StatusServiceUnavailable})
	names := []string{"a", "b", "c"}
	for _, n := range names {
		e.Record(span(n))
	}
	got := c.Wait(10*time.Second, func(s []tracetest.Span) bool { return len(s) == len(names) })
	for _, n := range names {
		if len(tracetest.Named(got, n)) != 1 {
			t.Errorf("no span %q among %d", n, len(got))
		}
	}
	reqs := c.Requests()
	if len(reqs) != 2 || reqs[0].Refused != http.StatusServiceUnavailable || reqs[1].Refused != 0 {
		t.Fatalf("requests %+v, want a 503 and then one taken", reqs)
	}
	for i, r := range reqs {
		if ce := r.Header.Get("Content-Encoding"); ce != "gzip" || !bytes.HasPrefix(r.Body, []byte{0x1f, 0x8b}) {
			t.Errorf("request %d: Content-Encoding %q, body % x...: want gzip", i, ce, r.Body[:min(len(r.Body), 4)])
		}
	}
	if !bytes.Equal(reqs[0].Body, reqs[1].Body) {
		t.Errorf("the retry sent %d bytes unlike the first try's %d", len(reqs[1].Body), len(reqs[0].Body))
	}
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if value(m.Exported) != 3 || value(m.Retries) != 1 {
		t.Errorf("exported %v after %v retries, want 3 after 1", value(m.Exported), value(m.Retries))
	}
}

// TestBatches: a full batch goes at once, the rest after the interval.
func TestBatches(t *testing.T) {
	c := tracetest.New(t)
	e, _ := newExporter(t, trace.Options{URL: c.URL(), BatchSize: 3, Interval: 50 * time.Millisecond})
	for range 7 {
		e.Record(span("s"))
	}
	c.Wait(5*time.Second, func(s []tracetest.Span) bool { return len(s) == 7 })
	var sizes []int
	for _, r := range c.Requests() {
		sizes = append(sizes, r.Spans)
	}
	if len(sizes) != 3 || sizes[0] != 3 || sizes[1] != 3 || sizes[2] != 1 {
		t.Errorf("exports of %v spans, want [3 3 1]", sizes)
	}
}

// TestRetryAfter: a throttled export (429, 503) waits what Retry-After
// says and is sent again; a refused one (400) is dropped without retry.
func TestRetryAfter(t *testing.T) {
	c := tracetest.New(t)
	e, m := newExporter(t, trace.Options{URL: c.URL(), Interval: 10 * time.Millisecond, Backoff: 10 * time.Millisecond})
	c.Refuse(tracetest.Refusal{Status: http.StatusTooManyRequests, RetryAfter: "1"}, tracetest.Refusal{Status: http.StatusServiceUnavailable})
	e.Record(span("a"))
	c.Wait(10*time.Second, func(s []tracetest.Span) bool { return len(s) == 1 })
	reqs := c.Requests()
	if len(reqs) != 3 || reqs[0].Refused != 429 || reqs[1].Refused != 503 || reqs[2].Refused != 0 {
		t.Fatalf("requests %+v, want 429, 503, then taken", reqs)
	}
	if d := reqs[1].At.Sub(reqs[0].At); d < time.Second {
		t.Errorf("retried %v after a 429 with Retry-After: 1", d)
	}
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v := value(m.Retries); v != 2 {
		t.Errorf("retries %v, want 2", v)
	}

	if v := value(m.Exported); v != 1 {
		t.Errorf("exported %v, want 1", v)
	}

	// Both spans in one export, sent by Shutdown.
	e2, m2 := newExporter(t, trace.Options{URL: c.URL(), Interval: time.Hour, Backoff: 10 * time.Millisecond})
	c.Refuse(tracetest.Refusal{Status: http.StatusBadRequest})
	e2.Record(span("b"))
	e2.Record(span("c"))
	if err := e2.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(c.Requests()); n != 4 {
		t.Errorf("%d requests after a 400, want 4: a refused batch is not sent again", n)
	}
	if v := value(m2.Dropped.WithLabelValues(trace.DropExportFailed)); v != 2 || value(m2.Retries) != 0 {
		t.Errorf("dropped{export_failed} %v after %v retries, want 2 after none", v, value(m2.Retries))
	}
}

// TestRetryAfterPastBudget: a collector asking for a wait longer than the
// retry budget gets the batch dropped at once, not after the wait.
func TestRetryAfterPastBudget(t *testing.T) {
	c := tracetest.New(t)
	e, m := newExporter(t, trace.Options{URL: c.URL(), Interval: 10 * time.Millisecond, RetryFor: time.Second})
	c.Refuse(tracetest.Refusal{Status: http.StatusTooManyRequests, RetryAfter: "3600"})
	e.Record(span("a"))
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v := value(m.Dropped.WithLabelValues(trace.DropExportFailed)); v != 1 || len(c.Requests()) != 1 {
		t.Errorf("dropped{export_failed} %v after %d requests, want 1 after 1", v, len(c.Requests()))
	}
}

// TestHungCollector: while the collector holds an export, Record never
// waits: spans past the queue are dropped and counted, and every span is
// either exported or counted as dropped.
func TestHungCollector(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	hung := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() {
			close(hung)
			<-release
		})
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	e, m := newExporter(t, trace.Options{URL: srv.URL + "/v1/traces", QueueSize: 16, BatchSize: 4, Interval: time.Millisecond})
	for range 4 {
		e.Record(span("s"))
	}
	<-hung
	const n = 1000
	for range n {
		e.Record(span("s"))
	}
	close(release)
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	exported, full := value(m.Exported), value(m.Dropped.WithLabelValues(trace.DropQueueFull))
	if full < n-16 || exported+full != n+4 {
		t.Errorf("exported %v, dropped{queue_full} %v: want at least %d dropped and %d in all", exported, full, n-16, n+4)
	}
}

// TestCollectorDown: with nothing listening, batches are retried within
// the budget and then dropped; Shutdown gives up when its context ends
// and counts what was left.
func TestCollectorDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	e, m := newExporter(t, trace.Options{URL: "http://" + addr + "/v1/traces", Interval: time.Millisecond, Backoff: 10 * time.Millisecond, RetryFor: 100 * time.Millisecond})
	e.Record(span("a"))
	deadline := time.Now().Add(5 * time.Second)
	for value(m.Dropped.WithLabelValues(trace.DropExportFailed)) != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if v := value(m.Dropped.WithLabelValues(trace.DropExportFailed)); v != 1 || value(m.Retries) == 0 {
		t.Errorf("dropped{export_failed} %v after %v retries, want 1 after some", v, value(m.Retries))
	}

	e2, m2 := newExporter(t, trace.Options{URL: "http://" + addr + "/v1/traces", Interval: time.Hour, Backoff: 10 * time.Millisecond})
	for range 5 {
		e2.Record(span("b"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := e2.Shutdown(ctx); err == nil {
		t.Error("Shutdown with the collector down returned no error")
	}
	if v := value(m2.Dropped.WithLabelValues(trace.DropShutdown)); v != 5 {
		t.Errorf("dropped{shutdown} %v, want 5", v)
	}
}

func TestNewRefusesBadURL(t *testing.T) {
	for _, u := range []string{"", "localhost:4318", "ftp://h/v1/traces", "http:///v1/traces"} {
		if _, err := trace.New(trace.Options{URL: u}); err == nil {
			t.Errorf("New accepted URL %q", u)
		}
	}
}

func TestNewRefusesBadCompression(t *testing.T) {
	// Options take the constants; FromEnv is what reads the user's spelling.
	for _, c := range []string{"zstd", "GZIP"} {
		if _, err := trace.New(trace.Options{URL: "http://c:4318/v1/traces", Compression: c}); err == nil || !strings.Contains(err.Error(), `"`+c+`"`) {
			t.Errorf("compression %q: err %v, want one naming it", c, err)
		}
	}
}
