package pipeline

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bertstream/bertstream/bert/task"
	"github.com/bertstream/bertstream/pipeline/trace"
)

// BenchmarkRequestSpan is what tracing adds to one Kafka request on the
// answer path: reading its traceparent, the answer's headers, and the
// span put together and handed to the exporter. The collector holds the
// first export, so that the exporter's background work (BenchmarkEncode
// in pipeline/trace) stays out of the figures and every later span takes
// the queue-full path, which differs from queuing by a counter for a
// channel send. cpu_ns/op is the process's CPU time per request, which a
// machine shared with other work disturbs less than the wall time.
func BenchmarkRequestSpan(b *testing.B) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	defer srv.Close()
	defer close(release)
	m := trace.NewMetrics(prometheus.NewRegistry())
	e, err := trace.New(trace.Options{URL: srv.URL, Metrics: m, Logger: slog.New(slog.DiscardHandler), QueueSize: 1, BatchSize: 1, Interval: time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		_ = e.Shutdown(ctx)
	}()
	w := &Worker{cfg: Config{Tracer: e, Group: "g"}}
	msg := &sarama.ConsumerMessage{Topic: "requests", Partition: 3, Offset: 12345, Headers: []*sarama.RecordHeader{
		{Key: []byte(HeaderTraceparent), Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")},
		{Key: []byte(HeaderTracestate), Value: []byte("congo=t61rcWkgMzE")},
	}}
	req := Request{ID: "r1", Request: task.Request{Task: task.Classify}}
	batch := trace.NewRoot()
	b.ReportAllocs()
	cpu0 := cpuNow(b)
	for b.Loop() {
		it := &item{w: w, msg: msg, at: time.Now(), req: req}
		w.startSpan(it)
		it.tr.batch = batch
		if hs := it.propagate(traceHeaders(msg)); len(hs) != 2 {
			b.Fatal(hs)
		}
		it.spanAcked()
	}
	b.ReportMetric(float64((cpuNow(b)-cpu0).Nanoseconds())/float64(b.N), "cpu_ns/op")
}

// cpuNow is the CPU time this process has used.
func cpuNow(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
