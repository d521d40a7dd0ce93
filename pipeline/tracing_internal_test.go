package pipeline

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bertstream/bertstream/bert/task"
	"github.com/bertstream/bertstream/pipeline/trace"
)

// BenchmarkRequestSpan is what tracing adds to one Kafka request on the
// answer path: reading its traceparent, the answer's headers, and the
// span handed to the exporter (whose encoding and POSTs run in the
// background: BenchmarkEncode in pipeline/trace). Compare with
// BenchmarkPipeline's time per request.
func BenchmarkRequestSpan(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	defer srv.Close()
	m := trace.NewMetrics(prometheus.NewRegistry())
	e, err := trace.New(trace.Options{URL: srv.URL, Metrics: m, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = e.Shutdown(b.Context()) }()
	w := &Worker{cfg: Config{Tracer: e, Group: "g"}}
	msg := &sarama.ConsumerMessage{Topic: "requests", Partition: 3, Offset: 12345, Headers: []*sarama.RecordHeader{
		{Key: []byte(HeaderTraceparent), Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")},
		{Key: []byte(HeaderTracestate), Value: []byte("congo=t61rcWkgMzE")},
	}}
	req := Request{ID: "r1", Request: task.Request{Task: task.Classify}}
	batch := trace.NewRoot()
	b.ReportAllocs()
	for b.Loop() {
		it := &item{w: w, msg: msg, at: time.Now(), req: req}
		w.startSpan(it)
		it.tr.batch = batch
		if hs := it.propagate(traceHeaders(msg)); len(hs) != 2 {
			b.Fatal(hs)
		}
		it.spanAcked()
	}
}
