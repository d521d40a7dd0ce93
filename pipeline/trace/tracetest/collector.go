// Package tracetest is an OTLP/HTTP collector for tests: a real HTTP
// server in the test's process that decodes the protobuf exports, keeps
// their spans, and can be told to refuse, throttle or go away, so that
// tests check what a collector would receive and how the exporter copes.
package tracetest

import (
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Collector is the test collector. It takes POSTs of
// application/x-protobuf to /v1/traces, gzipped when their
// Content-Encoding says so, and refuses anything else with 400 (a body
// that does not gunzip too), recording the refusal as an error of the
// test.
type Collector struct {
	srv *httptest.Server
	t   testing.TB

	mu       sync.Mutex
	spans    []Span
	requests []Request
	refuse   []Refusal
	changed  chan struct{}
}

// Span is a received span with the resource it came with.
type Span struct {
	*tracepb.Span
	Resource []*commonpb.KeyValue
}

// Request is one export as received.
type Request struct {
	At     time.Time
	Header http.Header
	// Body is the body as it came, compressed or not.
	Body    []byte
	Spans   int
	Refused int // the status it was refused with, or 0
}

// Refusal is an answer to give instead of taking an export.
type Refusal struct {
	Status     int
	RetryAfter string
}

// New starts a collector; it stops when the test ends.
func New(t testing.TB) *Collector {
	c := &Collector{t: t, changed: make(chan struct{})}
	c.srv = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(c.srv.Close)
	return c
}

// Endpoint is the collector's base URL, as --otlp-endpoint takes it.
func (c *Collector) Endpoint() string { return c.srv.URL }

// URL is the collector's traces URL, as an Exporter takes it.
func (c *Collector) URL() string { return c.srv.URL + "/v1/traces" }

// Refuse makes the collector answer the next exports with rs, one each,
// in order, before it takes exports again.
func (c *Collector) Refuse(rs ...Refusal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refuse = append(c.refuse, rs...)
}

func (c *Collector) serve(w http.ResponseWriter, r *http.Request) {
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		c.t.Errorf("test collector: %s", msg)
		http.Error(w, msg, http.StatusBadRequest)
	}
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
		fail("%s %s, want POST /v1/traces", r.Method, r.URL.Path)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		fail("Content-Type %q, want application/x-protobuf", ct)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		fail("reading the body: %v", err)
		return
	}
	td, err := decode(r.Header.Get("Content-Encoding"), body)
	if err != nil {
		fail("%v", err)
		return
	}
	req := Request{At: time.Now(), Header: r.Header.Clone(), Body: body}
	var got []Span
	for _, rs := range td.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				got = append(got, Span{Span: s, Resource: rs.GetResource().GetAttributes()})
			}
		}
	}
	req.Spans = len(got)

	c.mu.Lock()
	defer c.mu.Unlock()
	defer func() {
		c.requests = append(c.requests, req)
		close(c.changed)
		c.changed = make(chan struct{})
	}()
	if len(c.refuse) > 0 {
		rf := c.refuse[0]
		c.refuse = c.refuse[1:]
		req.Refused = rf.Status
		if rf.RetryAfter != "" {
			w.Header().Set("Retry-After", rf.RetryAfter)
		}
		http.Error(w, http.StatusText(rf.Status), rf.Status)
		return
	}
	c.spans = append(c.spans, got...)
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(http.StatusOK)
}

// maxDecoded bounds a gunzipped body, so that a small body cannot make a
// test run out of memory.
const maxDecoded = 64 << 20

// decode reads an export's body as its Content-Encoding says: gzip, or
// none ("" or identity).
func decode(encoding string, body []byte) (*tracepb.TracesData, error) {
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("gunzipping the body: %w", err)
		}
		if body, err = io.ReadAll(io.LimitReader(zr, maxDecoded+1)); err != nil {
			return nil, fmt.Errorf("gunzipping the body: %w", err)
		}
		if len(body) > maxDecoded {
			return nil, errors.New("gunzipping the body: over 64 MiB")
		}
	default:
		return nil, fmt.Errorf("Content-Encoding %q, want gzip or none", encoding)
	}
	// TracesData is ExportTraceServiceRequest on the wire.
	var td tracepb.TracesData
	if err := proto.Unmarshal(body, &td); err != nil {
		return nil, fmt.Errorf("decoding the export: %w", err)
	}
	return &td, nil
}

// Spans returns the spans taken so far.
func (c *Collector) Spans() []Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Span(nil), c.spans...)
}

// Requests returns the exports received so far, refused ones too.
func (c *Collector) Requests() []Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Request(nil), c.requests...)
}

// Wait waits until done holds of the spans taken, or fails the test
// after timeout; it returns the spans.
func (c *Collector) Wait(timeout time.Duration, done func([]Span) bool) []Span {
	c.t.Helper()
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		spans, changed := append([]Span(nil), c.spans...), c.changed
		c.mu.Unlock()
		if done(spans) {
			return spans
		}
		select {
		case <-changed:
		case <-deadline:
			c.t.Fatalf("test collector: still waiting after %v, with %d spans", timeout, len(spans))
			return spans
		}
	}
}

// Named returns the spans called name.
func Named(spans []Span, name string) []Span {
	var out []Span
	for _, s := range spans {
		if s.GetName() == name {
			out = append(out, s)
		}
	}
	return out
}

// Attr returns the value of the attribute key of kvs: a string, int64,
// float64 or bool; nil when absent.
func Attr(kvs []*commonpb.KeyValue, key string) any {
	for _, kv := range kvs {
		if kv.GetKey() != key {
			continue
		}
		switch v := kv.GetValue().GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			return v.StringValue
		case *commonpb.AnyValue_IntValue:
			return v.IntValue
		case *commonpb.AnyValue_DoubleValue:
			return v.DoubleValue
		case *commonpb.AnyValue_BoolValue:
			return v.BoolValue
		}
	}
	return nil
}

// Hex is an id as traceparent writes it.
func Hex(id []byte) string { return hex.EncodeToString(id) }
