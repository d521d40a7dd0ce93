package pipeline_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/pipeline"
	"github.com/bertstream/bertstream/pipeline/trace"
)

// BenchmarkTracing is what tracing costs the pipeline at saturation:
// BenchmarkPipeline's model and requests (every one with a sampled
// traceparent), one worker without tracing and one exporting a span per
// request and per batch to a collector in the process that reads and
// discards the exports, alternated over rounds, each round's first run
// the other one than the last round's. It reports the medians of
// each round's ratios, traced over plain, of requests per second of wall
// clock and per second of this process's CPU (the exporter's encoding and
// POSTs included).
//
// go test -run '^$' -bench Tracing -benchtime 1x ./pipeline/
func BenchmarkTracing(b *testing.B) {
	const (
		batch  = 32
		n      = 2000
		rounds = 6
	)
	p := benchPredictor(b)
	texts := benchTexts(n)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	defer srv.Close()
	for b.Loop() {
		var wall, cpu []float64
		for round := range rounds {
			// Which runs first alternates: the first run of a round was
			// seen to be slower, whichever it was.
			var plain, plainCPU, traced, tracedCPU float64
			if round%2 == 0 {
				plain, plainCPU = tracedRate(b, p, texts, batch, "")
				traced, tracedCPU = tracedRate(b, p, texts, batch, srv.URL)
			} else {
				traced, tracedCPU = tracedRate(b, p, texts, batch, srv.URL)
				plain, plainCPU = tracedRate(b, p, texts, batch, "")
			}
			b.Logf("round %d: plain %.1f req/s (%.1f per CPU s), traced %.1f req/s (%.1f per CPU s)", round, plain, plainCPU, traced, tracedCPU)
			wall, cpu = append(wall, traced/plain), append(cpu, tracedCPU/plainCPU)
		}
		b.ReportMetric(median(wall), "traced/plain_req/s")
		b.ReportMetric(median(cpu), "traced/plain_req/cpu_s")
	}
}

// tracedRate is saturatedRate with every request traced and, when url is
// set, spans exported there.
func tracedRate(b *testing.B, p *bert.Predictor, texts []string, batch int, url string) (float64, float64) {
	c, addr := newCluster(b)
	defer c.Close()
	msgs := benchRequests(texts)
	for i := range msgs {
		msgs[i].headers = []sarama.RecordHeader{{Key: []byte("traceparent"), Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")}}
	}
	produce(b, addr, msgs)
	cfg := benchConfig(addr, batch)
	cfg.Logger = testLogger(b)
	var tracer *trace.Exporter
	if url != "" {
		var err error
		tracer, err = trace.New(trace.Options{URL: url, Metrics: trace.NewMetrics(prometheus.NewRegistry()), Logger: cfg.Logger})
		if err != nil {
			b.Fatal(err)
		}
		cfg.Tracer = tracer
	}
	w, err := pipeline.NewWorker(cfg, p)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		<-done
		if tracer != nil {
			_ = tracer.Shutdown(context.Background())
		}
	}()
	var (
		first    time.Time
		firstCPU time.Duration
		firstGot int64
	)
	for {
		got := sumHighWatermarks(c, outTopic)
		if got > 0 && first.IsZero() {
			first, firstCPU, firstGot = time.Now(), cpuTime(b), got
		}
		if got >= int64(len(texts)) {
			return float64(got-firstGot) / time.Since(first).Seconds(), float64(got-firstGot) / (cpuTime(b) - firstCPU).Seconds()
		}
		time.Sleep(10 * time.Millisecond)
	}
}
