package pipeline_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/bert/task"
	"github.com/bertstream/bertstream/pipeline"
	"github.com/bertstream/bertstream/pipeline/api"
)

// BenchmarkHTTP measures the HTTP API (POST /predict, one text per
// request, over loopback TCP) against the bare engine on the same model
// (benchPredictor) and batch limits (32 requests, 5ms), like
// BenchmarkPipeline:
//   - engine_req/s: Predict on batches of 32 in a loop;
//   - http_req/s: 128 clients in a closed loop (the queue's default room);
//   - p50_ms, p99_ms: from a client's send to its receipt of the answer,
//     at half the saturated HTTP rate, open loop.
//
// Engine and HTTP runs alternate, rounds times; each figure is the median.
//
// Run it once: go test -run '^$' -bench HTTP -benchtime 1x ./pipeline/
// (BERTSTREAM_BENCH_MODEL=DIR for a model directory).
func BenchmarkHTTP(b *testing.B) {
	const (
		batch   = 32
		n       = 3000
		rounds  = 5
		clients = 4 * batch
	)
	p := benchPredictor(b)
	texts := benchTexts(n)
	reqs := make([]task.Request, n)
	for i, t := range texts {
		reqs[i] = task.Request{Task: task.Classify, Text: t}
	}
	bodies := make([][]byte, n)
	for i, t := range texts {
		bodies[i], _ = json.Marshal(map[string]string{"inputs": t})
	}
	url, reg, stop := benchAPI(b, p, batch)
	defer stop()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	send := func(body []byte) {
		resp, err := client.Post(url+"/predict", "application/json", bytes.NewReader(body))
		if err != nil {
			b.Error(err)
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Errorf("status %d", resp.StatusCode)
		}
	}
	for b.Loop() {
		p.Predict(context.Background(), reqs[:batch]) // warm up
		var engine, web, ratio []float64
		for round := range rounds {
			start := time.Now()
			for i := 0; i < n; i += batch {
				for _, r := range p.Predict(context.Background(), reqs[i:min(i+batch, n)]) {
					if r.Err != nil {
						b.Fatal(r.Err)
					}
				}
			}
			e := float64(n) / time.Since(start).Seconds()
			start = time.Now()
			var wg sync.WaitGroup
			next := make(chan int)
			for range clients {
				wg.Go(func() {
					for i := range next {
						send(bodies[i])
					}
				})
			}
			for i := range n {
				next <- i
			}
			close(next)
			wg.Wait()
			h := float64(n) / time.Since(start).Seconds()
			b.Logf("round %d: engine %.1f req/s, HTTP %.1f req/s", round, e, h)
			engine, web, ratio = append(engine, e), append(web, h), append(ratio, h/e)
		}
		rate := median(web) / 2
		gap := time.Duration(float64(time.Second) / rate)
		lat := make([]time.Duration, n)
		var wg sync.WaitGroup
		start := time.Now()
		for i := range n {
			time.Sleep(time.Until(start.Add(time.Duration(i) * gap)))
			wg.Go(func() {
				t0 := time.Now()
				send(bodies[i])
				lat[i] = time.Since(t0)
			})
		}
		wg.Wait()
		slices.Sort(lat)
		var m *dto.Metric
		h, err := reg.Gather()
		if err != nil {
			b.Fatal(err)
		}
		for _, mf := range h {
			if mf.GetName() == "bertstream_batch_size" {
				m = mf.GetMetric()[0]
			}
		}
		b.ReportMetric(median(engine), "engine_req/s")
		b.ReportMetric(median(web), "http_req/s")
		b.ReportMetric(median(ratio), "ratio")
		b.ReportMetric(m.GetHistogram().GetSampleSum()/float64(m.GetHistogram().GetSampleCount()), "http_batch")
		b.ReportMetric(float64(lat[n/2].Microseconds())/1000, "p50_ms")
		b.ReportMetric(float64(lat[n*99/100].Microseconds())/1000, "p99_ms")
	}
}

// benchAPI serves p's HTTP API on loopback with batches of batch.
func benchAPI(b *testing.B, p *bert.Predictor, batch int) (string, *prometheus.Registry, func()) {
	reg := prometheus.NewRegistry()
	bt := pipeline.NewBatcher(p, pipeline.BatchConfig{MaxBatch: batch, MaxWait: 5 * time.Millisecond}, pipeline.NewMetrics(reg))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		bt.Run(ctx)
	}()
	h, err := api.New(api.Options{Model: p, Batcher: bt})
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(h)
	return ts.URL, reg, func() {
		ts.Close()
		cancel()
		<-done
	}
}
