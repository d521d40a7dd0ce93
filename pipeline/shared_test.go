package pipeline_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/bert/task"
	"github.com/bertstream/bertstream/pipeline"
	"github.com/bertstream/bertstream/pipeline/api"
)

// batchLog is a real model that records the texts of each batch.
type batchLog struct {
	*bert.Predictor
	mu      sync.Mutex
	batches [][]string
}

func (b *batchLog) Predict(ctx context.Context, reqs []task.Request) []task.Result {
	texts := make([]string, len(reqs))
	for i, r := range reqs {
		texts[i] = r.Text
	}
	b.mu.Lock()
	b.batches = append(b.batches, texts)
	b.mu.Unlock()
	return b.Predictor.Predict(ctx, reqs)
}

// TestKafkaAndHTTPShareBatches: one batcher serves a worker (kfake over
// TCP) and the HTTP API (over TCP): requests of both sources are answered,
// in common batches, as the model answers them alone.
func TestKafkaAndHTTPShareBatches(t *testing.T) {
	p := &batchLog{Predictor: loadTiny(t, "bert-classifier", true)}
	_, addr := newCluster(t)
	reg := prometheus.NewRegistry()
	m := pipeline.NewMetrics(reg)
	b := pipeline.NewBatcher(p, pipeline.BatchConfig{MaxBatch: 40, MaxWait: time.Second}, m)
	cfg := baseConfig(addr)
	cfg.Batcher, cfg.Metrics = b, m
	rw := startWorker(t, cfg, p)
	ctx, cancel := context.WithCancel(context.Background())
	batchDone := make(chan struct{})
	go func() {
		defer close(batchDone)
		b.Run(ctx)
	}()
	// Stopped after the worker has drained (cleanups run last first).
	t.Cleanup(func() {
		cancel()
		<-batchDone
	})
	h, err := api.New(api.Options{Model: p, Batcher: b})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	defer ts.Close()
	if err := eventually(30*time.Second, rw.w.Ready); err != nil {
		t.Fatal("the worker never joined its group")
	}

	const n = 20
	var wg sync.WaitGroup
	codes := make([]int, n)
	for i := range n {
		wg.Go(func() {
			body := fmt.Sprintf(`{"inputs": "http request %d about stocks"}`, i)
			resp, err := http.Post(ts.URL+"/predict", "application/json", bytes.NewReader([]byte(body)))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes[i] = resp.StatusCode
		})
	}
	var msgs []testMsg
	var idList []string
	for i := range n {
		id := fmt.Sprintf("k%d", i)
		idList = append(idList, id)
		msgs = append(msgs, request(id, fmt.Sprintf("kafka request %d about football", i)))
	}
	produce(t, addr, msgs)
	answers := readUntil(t, addr, idList, 30*time.Second, false)
	wg.Wait()
	count, _ := decodeAnswers(t, answers)
	checkAllAnswered(t, idList, count)
	for i, c := range codes {
		if c != http.StatusOK {
			t.Errorf("HTTP request %d: %d", i, c)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	mixed := 0
	for _, batch := range p.batches {
		var k, h int
		for _, text := range batch {
			switch {
			case strings.HasPrefix(text, "kafka"):
				k++
			case strings.HasPrefix(text, "http"):
				h++
			}
		}
		if k > 0 && h > 0 {
			mixed++
		}
	}
	if mixed == 0 {
		t.Errorf("no batch held requests of both sources: %v", p.batches)
	}
	t.Logf("%d batches, %d of both sources", len(p.batches), mixed)
}
