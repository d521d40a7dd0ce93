package main

import (
	"bytes"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestServeAPIDrains: `serve --api` without brokers serves the HTTP API
// with the key from the environment, and on SIGTERM answers every request
// it accepted before it exits; the key is never logged.
func TestServeAPIDrains(t *testing.T) {
	const key = "key-from-the-environment"
	t.Setenv("BERTSTREAM_API_KEY", key)
	serve := startProc(t, "serve", "--model", "../../testdata/tasks/st-mean", "--api", "127.0.0.1:0", "--http", "127.0.0.1:0",
		"--log-format", "text", "--max-batch", "200", "--max-wait", "1s", "--api-queue", "256")
	var addr, ops string
	if !waitFor(30*time.Second, func() bool {
		log := serve.stderr.String()
		a := regexp.MustCompile(`msg="HTTP API" addr=(\S+)`).FindStringSubmatch(log)
		o := regexp.MustCompile(`msg="operations endpoint" addr=(\S+)`).FindStringSubmatch(log)
		if a != nil && o != nil {
			addr, ops = a[1], o[1]
		}
		return addr != ""
	}) {
		t.Fatal("serve never started its API")
	}
	embed := func(auth string) (int, error) {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/embed", bytes.NewReader([]byte(`{"inputs": "a sentence to embed"}`)))
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := embed(""); err != nil || code != http.StatusUnauthorized {
		t.Fatalf("without the key: %d %v", code, err)
	}
	// The requests wait for their batch to fill (up to --max-wait) when
	// SIGTERM comes.
	const n = 150
	codes := make([]int, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { codes[i], errs[i] = embed(key) })
	}
	queued := regexp.MustCompile(`(?m)^bertstream_api_queued (\d+)`)
	if !waitFor(10*time.Second, func() bool {
		m := queued.FindSubmatch(getMetrics(t, ops))
		q, _ := strconv.Atoi(string(m[1]))
		return q == n
	}) {
		t.Fatal("the requests never all queued")
	}
	serve.stop(t, 15*time.Second)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || codes[i] != http.StatusOK {
			t.Fatalf("request %d queued before SIGTERM: %d %v", i, codes[i], errs[i])
		}
	}
	if _, err := embed(key); err == nil {
		t.Error("a request after shutdown was answered")
	}
	if strings.Contains(serve.stderr.String(), key) {
		t.Error("the log shows the API key")
	}
}
