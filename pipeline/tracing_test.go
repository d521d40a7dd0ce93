package pipeline_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bertstream/bertstream/pipeline"
	"github.com/bertstream/bertstream/pipeline/trace"
	"github.com/bertstream/bertstream/pipeline/trace/tracetest"
)

// newTracer is an exporter to url whose metrics go to reg; it is shut
// down when the test ends, if the test has not.
func newTracer(t *testing.T, url string, reg prometheus.Registerer, o trace.Options) *trace.Exporter {
	t.Helper()
	o.URL, o.Metrics, o.Logger = url, trace.NewMetrics(reg), testLogger(t)
	o.Resource = []trace.Attr{trace.String("service.name", "bertstream")}
	e, err := trace.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Shutdown(context.Background()) })
	return e
}

// TestTracing, end to end over TCP: a request's span is in the trace of
// its traceparent, parented by the caller's span, with its partition,
// offset, task and outcome; its answer (or dead letter) carries the
// request span as its parent; the batch span and the request spans link
// to each other; a request without a traceparent, or with an invalid
// one, starts a trace; one whose caller did not sample it gets no span
// and its header back unchanged. The collector throttles the first
// export (429, Retry-After: 1): it is sent again after that second.
// Shutting the exporter down after the
// worker sends everything left.
func TestTracing(t *testing.T) {
	_, addr := newCluster(t)
	col := tracetest.New(t)
	col.Refuse(tracetest.Refusal{Status: http.StatusTooManyRequests, RetryAfter: "1"})
	reg := prometheus.NewRegistry()
	tracer := newTracer(t, col.URL(), reg, trace.Options{Interval: 20 * time.Millisecond})
	cfg := baseConfig(addr)
	cfg.Tracer = tracer
	cfg.Metrics = pipeline.NewMetrics(reg)
	rw := startWorker(t, cfg, &countingPredictor{})

	const (
		callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
		callerSpan  = "00f067aa0ba902b7"
		state       = "vendor=opaque"
	)
	hdrs := func(kv ...string) []sarama.RecordHeader {
		var hs []sarama.RecordHeader
		for i := 0; i < len(kv); i += 2 {
			hs = append(hs, sarama.RecordHeader{Key: []byte(kv[i]), Value: []byte(kv[i+1])})
		}
		return hs
	}
	sampled := "00-" + callerTrace + "-" + callerSpan + "-01"
	unsampled := "00-" + strings.Repeat("ab", 16) + "-" + callerSpan + "-00"
	msgs := []testMsg{
		request("traced", "a traced request"),
		request("fresh", "no header"),
		request("unsampled", "not sampled"),
		request("invalid", "a bad header"),
		{key: "bad", value: []byte(`{"id":"bad",`)},
	}
	msgs[0].headers = hdrs("traceparent", sampled, "tracestate", state)
	msgs[2].headers = hdrs("traceparent", unsampled, "tracestate", state)
	msgs[3].headers = hdrs("traceparent", "00-"+callerTrace+"-"+callerSpan+"-1", "tracestate", state)
	msgs[4].headers = hdrs("traceparent", sampled)
	sent := produce(t, addr, msgs)

	answers := map[string]*sarama.ConsumerMessage{}
	for _, m := range readUntil(t, addr, []string{"traced", "fresh", "unsampled", "invalid"}, 30*time.Second, false) {
		answers[string(m.Key)] = m
	}
	dls := readAll(t, addr, dlqTopic, 1, 30*time.Second, false)
	rw.shutdown(t)
	if err := tracer.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	spans := col.Spans()
	byID := map[string]tracetest.Span{}
	for _, s := range spans {
		byID[tracetest.Hex(s.SpanId)] = s
	}
	// requestSpan checks the span that the traceparent of an answer or
	// dead letter names, and returns it.
	requestSpan := func(key string, m *sarama.ConsumerMessage, outcome string) tracetest.Span {
		t.Helper()
		tp, err := trace.ParseTraceparent(header(m, "traceparent"))
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		s, ok := byID[tp.SpanID.String()]
		if !ok {
			t.Fatalf("%s: no span %s, the parent its answer names", key, tp.SpanID)
		}
		if tracetest.Hex(s.TraceId) != tp.TraceID.String() || s.Name != "process "+inTopic {
			t.Errorf("%s: span %s in trace %x, want %q in %s", key, s.Name, s.TraceId, "process "+inTopic, tp.TraceID)
		}
		var req *sarama.ProducerMessage
		for i, pm := range sent {
			if msgs[i].key == key {
				req = pm
			}
		}
		for k, want := range map[string]any{
			"messaging.destination.partition.id": fmt.Sprint(req.Partition),
			"messaging.kafka.offset":             req.Offset,
			"messaging.consumer.group.name":      group,
			"bertstream.outcome":                 outcome,
		} {
			if got := tracetest.Attr(s.Attributes, k); got != want {
				t.Errorf("%s: %s = %#v, want %#v", key, k, got, want)
			}
		}
		if tracetest.Attr(s.Resource, "service.name") != "bertstream" {
			t.Errorf("%s: resource %v", key, s.Resource)
		}
		return s
	}

	// The traced request: the caller's trace, parent and state.
	traced := requestSpan("traced", answers["traced"], "answered")
	if tracetest.Hex(traced.TraceId) != callerTrace || tracetest.Hex(traced.ParentSpanId) != callerSpan || traced.TraceState != state {
		t.Errorf("traced: span in trace %x under %x with state %q, want %s under %s with %q", traced.TraceId, traced.ParentSpanId, traced.TraceState, callerTrace, callerSpan, state)
	}
	if tracetest.Attr(traced.Attributes, "bertstream.task") != "classify" || tracetest.Attr(traced.Attributes, "bertstream.request.id") != "traced" {
		t.Errorf("traced: attributes %v", traced.Attributes)
	}
	if header(answers["traced"], "tracestate") != state || !strings.HasSuffix(header(answers["traced"], "traceparent"), "-01") {
		t.Errorf("traced: answer headers %v", answers["traced"].Headers)
	}
	// Its batch: linked both ways.
	if len(traced.Links) != 1 {
		t.Fatalf("traced: links %v, want one, to its batch", traced.Links)
	}
	batch, ok := byID[tracetest.Hex(traced.Links[0].SpanId)]
	if !ok || batch.Name != "predict counting" || len(batch.ParentSpanId) != 0 {
		t.Fatalf("traced: its link leads to %v, want a root span predict counting", batch.Span)
	}
	linked := false
	for _, l := range batch.Links {
		linked = linked || tracetest.Hex(l.SpanId) == tracetest.Hex(traced.SpanId)
	}
	if !linked || tracetest.Attr(batch.Attributes, "bertstream.batch.size").(int64) < 1 || batch.EndTimeUnixNano < batch.StartTimeUnixNano {
		t.Errorf("batch span %v does not link back to the request span", batch.Span)
	}

	// Without a valid traceparent: a new trace, a root span, no state.
	for _, k := range []string{"fresh", "invalid"} {
		s := requestSpan(k, answers[k], "answered")
		if len(s.ParentSpanId) != 0 || tracetest.Hex(s.TraceId) == callerTrace {
			t.Errorf("%s: span in trace %x under %x, want a new trace's root", k, s.TraceId, s.ParentSpanId)
		}
		if header(answers[k], "tracestate") != "" {
			t.Errorf("%s: the answer carries tracestate %q without its traceparent", k, header(answers[k], "tracestate"))
		}
	}

	// Not sampled: no span, the header passed on as it came.
	if got := header(answers["unsampled"], "traceparent"); got != unsampled {
		t.Errorf("unsampled: answer traceparent %q, want the request's %q", got, unsampled)
	}
	for _, s := range spans {
		if tracetest.Hex(s.TraceId) == strings.Repeat("ab", 16) {
			t.Errorf("a span %s was recorded for a request its caller did not sample", s.Name)
		}
	}

	// The dead letter: its span failed, with the error code.
	if len(dls) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dls))
	}
	bad := requestSpan("bad", dls[0], "dead_lettered")
	if bad.Status.GetCode() != 2 || tracetest.Attr(bad.Attributes, "bertstream.error_code") != string(pipeline.ReasonMalformed) || tracetest.Hex(bad.ParentSpanId) != callerSpan {
		t.Errorf("bad: span status %v, attributes %v", bad.Status, bad.Attributes)
	}

	reqs := col.Requests()
	if len(reqs) < 2 || reqs[0].Refused != 429 {
		t.Fatalf("exports %+v, want a throttled one first", reqs)
	}
	if d := reqs[1].At.Sub(reqs[0].At); d < time.Second {
		t.Errorf("the export was sent again %v after a 429 with Retry-After: 1", d)
	}
	if v := gathered(t, reg, "bertstream_spans_exported_total"); int(v) != len(spans) {
		t.Errorf("spans_exported_total %v, the collector has %d", v, len(spans))
	}
}

// TestTracingCollectorDown: with the collector unreachable every request
// is answered all the same, and every span is counted as dropped.
func TestTracingCollectorDown(t *testing.T) {
	_, addr := newCluster(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String() + "/v1/traces"
	ln.Close()
	reg := prometheus.NewRegistry()
	tracer := newTracer(t, down, reg, trace.Options{QueueSize: 8, BatchSize: 4, Interval: 5 * time.Millisecond, Backoff: 10 * time.Millisecond, RetryFor: 100 * time.Millisecond})
	cfg := baseConfig(addr)
	cfg.Tracer = tracer
	cfg.Metrics = pipeline.NewMetrics(reg)
	pred := &countingPredictor{}
	rw := startWorker(t, cfg, pred)

	idList := ids("r", 200)
	produce(t, addr, requests(idList))
	count, _ := decodeAnswers(t, readUntil(t, addr, idList, 30*time.Second, false))
	checkAllAnswered(t, idList, count)
	rw.shutdown(t)
	if err := tracer.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	dropped := 0.0
	for _, r := range []string{trace.DropQueueFull, trace.DropExportFailed, trace.DropShutdown} {
		dropped += gatheredLabel(t, reg, "bertstream_spans_dropped_total", "reason", r)
	}
	spans := len(idList) + len(pred.batchSizes())
	if exported := gathered(t, reg, "bertstream_spans_exported_total"); exported != 0 || int(dropped) != spans {
		t.Errorf("exported %v, dropped %v spans; want 0 and all %d (requests and batches)", exported, dropped, spans)
	}
	if gatheredLabel(t, reg, "bertstream_spans_dropped_total", "reason", trace.DropQueueFull) == 0 {
		t.Error("no span dropped for a full queue: the queue of 8 should have overflowed")
	}
}

// TestTracingExactlyOnce: with transactions, the request span ends when
// the transaction that holds its answer commits, and the committed answer
// names it.
func TestTracingExactlyOnce(t *testing.T) {
	_, addr := newCluster(t)
	col := tracetest.New(t)
	reg := prometheus.NewRegistry()
	tracer := newTracer(t, col.URL(), reg, trace.Options{Interval: 20 * time.Millisecond})
	cfg := baseConfig(addr)
	cfg.ExactlyOnce = true
	cfg.Tracer = tracer
	rw := startWorker(t, cfg, &countingPredictor{})
	msg := request("eos", "exactly once")
	msg.headers = []sarama.RecordHeader{{Key: []byte("traceparent"), Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")}}
	produce(t, addr, []testMsg{msg})
	out := readUntil(t, addr, []string{"eos"}, 30*time.Second, true)
	rw.shutdown(t)
	if err := tracer.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 {
		t.Fatalf("%d answers, want 1", len(out))
	}
	tp, err := trace.ParseTraceparent(header(out[0], "traceparent"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range col.Spans() {
		if tracetest.Hex(s.SpanId) == tp.SpanID.String() {
			if tracetest.Attr(s.Attributes, "bertstream.outcome") != "answered" || tracetest.Hex(s.ParentSpanId) != "00f067aa0ba902b7" {
				t.Errorf("request span %v", s.Span)
			}
			return
		}
	}
	t.Errorf("no span %s, the parent the committed answer names", tp.SpanID)
}
