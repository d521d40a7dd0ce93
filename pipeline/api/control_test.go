package api_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/bert/task"
	"github.com/bertstream/bertstream/pipeline"
	"github.com/bertstream/bertstream/pipeline/api"
)

// gated is a real model whose batches wait for the test to open the gate
// and that fails on the text "fail"; it records the texts the model got.
type gated struct {
	*bert.Predictor
	entered chan struct{}
	gate    chan struct{}
	opened  sync.Once
	mu      sync.Mutex
	seen    []string
}

func newGated(p *bert.Predictor) *gated {
	return &gated{Predictor: p, entered: make(chan struct{}, 100), gate: make(chan struct{})}
}

// open lets every batch through, once and for all.
func (g *gated) open() { g.opened.Do(func() { close(g.gate) }) }

func (g *gated) Predict(ctx context.Context, reqs []task.Request) []task.Result {
	g.entered <- struct{}{}
	<-g.gate
	g.mu.Lock()
	for _, r := range reqs {
		g.seen = append(g.seen, r.Text)
	}
	g.mu.Unlock()
	res := g.Predictor.Predict(ctx, reqs)
	for i, r := range reqs {
		if r.Text == "fail" {
			res[i] = task.Result{Err: errors.New("device lost")}
		}
	}
	return res
}

// TestBackpressure: a full queue answers 429 with Retry-After at once, a
// model failure 424, and a client that leaves costs no model time.
func TestBackpressure(t *testing.T) {
	g := newGated(load(t, tiny+"bert-classifier", true))
	s := start(t, g, pipeline.BatchConfig{MaxBatch: 1, MaxQueue: 2}, api.Options{MaxInputs: 2})
	// Cleanups run last first: a test that fails with the model held
	// opens the gate before the server waits for its handlers.
	t.Cleanup(g.open)

	// The first request holds the model; the second waits in the queue,
	// with a client that gives up.
	first := make(chan int)
	go func() {
		code, _ := post(t, s.url+"/embed", map[string]any{"inputs": "first"}, nil)
		first <- code
	}()
	select {
	case <-g.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the first request never reached the model")
	}
	ctx, cancel := context.WithCancel(context.Background())
	left := make(chan error)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.url+"/embed", strings.NewReader(`{"inputs": "leaves"}`))
		_, err := http.DefaultClient.Do(req)
		left <- err
	}()
	// The queue counts requests until they are answered: the one in the
	// model and the one waiting.
	if err := eventually(func() bool { return gauge(t, s, "bertstream_api_queued") == 2 }); err != nil {
		t.Fatal("the second request never queued")
	}
	// Two more inputs do not fit beside it: 429, without waiting.
	t0 := time.Now()
	req, _ := http.NewRequest(http.MethodPost, s.url+"/embed", strings.NewReader(`{"inputs": ["a", "b"]}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || time.Since(t0) > 2*time.Second {
		t.Errorf("full queue: %d, Retry-After %q after %v", resp.StatusCode, resp.Header.Get("Retry-After"), time.Since(t0))
	}
	code, raw := post(t, s.url+"/embed", map[string]any{"inputs": []string{"a", "b"}}, nil)
	wantError(t, "full queue", code, raw, 429, "overloaded", "overloaded")

	cancel()
	if err := <-left; err == nil {
		t.Error("the cancelled request was answered")
	}
	// The server sees the client leave when it reads the closed
	// connection; its handler then returns (499 in the metrics).
	if err := eventually(func() bool { return left499(t, s) }); err != nil {
		t.Fatal("the server never saw the client leave")
	}
	g.open()
	if c := <-first; c != 200 {
		t.Errorf("first request: %d", c)
	}
	code, raw = post(t, s.url+"/embed", map[string]any{"inputs": "fail"}, nil)
	wantError(t, "model failure", code, raw, 424, "backend", "device lost")

	g.mu.Lock()
	defer g.mu.Unlock()
	for _, text := range g.seen {
		if text == "leaves" {
			t.Error("the model ran on the request of a client that had left")
		}
	}
	if n := counter(t, s.reg, "bertstream_api_cancelled_total"); n != 1 {
		t.Errorf("%v requests dropped as cancelled, want 1", n)
	}
	if n := counter(t, s.reg, "bertstream_api_rejected_total"); n != 2 {
		t.Errorf("%v requests rejected, want 2", n)
	}
}

func gauge(t testing.TB, s *server, name string) float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}

func eventually(cond func() bool) error {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return nil
		}
	}
	return errors.New("timed out")
}

// TestAPIKey: with a key, a request without it or with another gets 401
// and costs no model time; /health stays open, /metrics needs the key.
func TestAPIKey(t *testing.T) {
	g := newGated(load(t, tiny+"bert-classifier", true))
	g.open()
	const key = "s3cret-key"
	s := start(t, g, pipeline.BatchConfig{}, api.Options{APIKey: key})
	for _, h := range [][]string{nil, {"Authorization", "Bearer wrong"}, {"Authorization", key}, {"Authorization", "Basic " + key}} {
		code, raw := post(t, s.url+"/embed", map[string]any{"inputs": "a"}, nil, h...)
		wantError(t, "embed with "+strings.Join(h, " "), code, raw, 401, "unauthorized", "API key")
		if strings.Contains(string(raw), key) {
			t.Errorf("the answer shows the key: %s", raw)
		}
		code, raw = get(t, s.url+"/metrics", nil, h...)
		wantError(t, "metrics with "+strings.Join(h, " "), code, raw, 401, "unauthorized", "API key")
	}
	if len(g.entered) != 0 {
		t.Errorf("%d model batches for unauthorized requests", len(g.entered))
	}
	if code, _ := get(t, s.url+"/health", nil); code != 200 {
		t.Errorf("/health without the key: %d", code)
	}
	auth := []string{"Authorization", "Bearer " + key}
	if code, raw := post(t, s.url+"/embed", map[string]any{"inputs": "a"}, nil, auth...); code != 200 {
		t.Errorf("with the key: %d %s", code, raw)
	}
	if code, raw := get(t, s.url+"/metrics", nil, auth...); code != 200 || !strings.Contains(string(raw), "bertstream_http_requests_total") {
		t.Errorf("/metrics with the key: %d", code)
	}
}

func left499(t testing.TB, s *server) bool {
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "bertstream_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "code" && l.GetValue() == "499" {
					return true
				}
			}
		}
	}
	return false
}
