package pipeline_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bertstream/bertstream/pipeline"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestOpsEndpoints checks /healthz, /readyz and that /metrics reports the
// work done, the latencies and the process's memory. The model's own
// memory is the command's to report (cmd/bertstream TestServeMetrics).
func TestOpsEndpoints(t *testing.T) {
	_, addr := newCluster(t)
	reg := prometheus.NewRegistry()
	cfg := baseConfig(addr)
	cfg.Metrics = pipeline.NewMetrics(reg)
	cfg.Logger = testLogger(t)
	w, err := pipeline.NewWorker(cfg, &countingPredictor{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(pipeline.OpsHandler(reg, w.Ready))
	defer srv.Close()
	if code, _ := get(t, srv.URL+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before the worker runs: %d", code)
	}
	if code, _ := get(t, srv.URL+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d", code)
	}

	runWorker(t, w)
	idList := ids("ops-", 40)
	produce(t, addr, append(requests(idList), testMsg{key: "bad", value: []byte("{")}))
	readUntil(t, addr, idList, 30*time.Second, false)
	if err := eventually(10*time.Second, w.Ready); err != nil {
		t.Fatal("the worker never became ready")
	}
	if code, _ := get(t, srv.URL+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz while serving: %d", code)
	}
	var body string
	err = eventually(10*time.Second, func() bool {
		_, body = get(t, srv.URL+"/metrics")
		return metric(body, `bertstream_produced_total`) == 40 && metric(body, `bertstream_dead_lettered_total{reason="malformed_json"}`) == 1
	})
	if err != nil {
		t.Errorf("metrics do not count 40 answers and 1 dead letter:\n%s", body)
	}
	for _, m := range []string{
		`bertstream_consumed_total`, `bertstream_batch_size_count`, `bertstream_model_latency_seconds_count`,
		`bertstream_request_latency_seconds_count`, `bertstream_memory_rss_bytes`, `bertstream_memory_go_heap_bytes`,
		`bertstream_commits_total`,
	} {
		if v := metric(body, m); v <= 0 {
			t.Errorf("%s is %v", m, v)
		}
	}
	for _, m := range []string{`bertstream_in_flight`, `bertstream_paused_partitions`} {
		if v := metric(body, m); v < 0 {
			t.Errorf("%s is %v", m, v)
		}
	}
	if !regexp.MustCompile(`(?m)^bertstream_consumer_lag\{partition="[0-2]"\} `).MatchString(body) {
		t.Errorf("no consumer lag per partition:\n%s", body)
	}
}

// metric is the value of one sample in a Prometheus text exposition, -1
// if absent.
func metric(body, name string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}
