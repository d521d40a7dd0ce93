package pipeline_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bertstream/bertstream/pipeline"
)

// TestDeadlinesAndTraces: a request past its "deadline", or whose record is
// older than MaxAge, is dead-lettered as expired without reaching the model
// and counted; the others are answered, and an answer or a dead letter
// carries its request's W3C trace context headers.
func TestDeadlinesAndTraces(t *testing.T) {
	_, addr := newCluster(t)
	cfg := baseConfig(addr)
	cfg.MaxAge = time.Minute
	reg := prometheus.NewRegistry()
	cfg.Metrics = pipeline.NewMetrics(reg)
	pred := &countingPredictor{}
	startWorker(t, cfg, pred)

	const (
		traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		tracestate  = "vendor=opaque"
	)
	trace := []sarama.RecordHeader{{Key: []byte("traceparent"), Value: []byte(traceparent)}, {Key: []byte("tracestate"), Value: []byte(tracestate)}}
	msg := func(id string, deadline time.Time) []byte {
		r := map[string]any{"id": id, "task": "classify", "text": "some words"}
		if !deadline.IsZero() {
			r["deadline"] = deadline.Format(time.RFC3339Nano)
		}
		b, _ := json.Marshal(r)
		return b
	}
	now := time.Now()
	pms := []*sarama.ProducerMessage{
		{Key: sarama.StringEncoder("future"), Value: sarama.ByteEncoder(msg("future", now.Add(time.Hour))), Headers: trace},
		{Key: sarama.StringEncoder("plain"), Value: sarama.ByteEncoder(msg("plain", time.Time{}))},
		{Key: sarama.StringEncoder("past"), Value: sarama.ByteEncoder(msg("past", now.Add(-time.Second))), Headers: trace},
		{Key: sarama.StringEncoder("old"), Value: sarama.ByteEncoder(msg("old", time.Time{})), Timestamp: now.Add(-2 * time.Minute)},
		{Key: sarama.StringEncoder("bad"), Value: sarama.ByteEncoder(`{"id":"bad","task":"classify","text":"x","deadline":"tomorrow"}`)},
	}
	p, err := sarama.NewSyncProducer([]string{addr}, saramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range pms {
		m.Topic = inTopic
	}
	if err := p.SendMessages(pms); err != nil {
		t.Fatal(err)
	}
	p.Close()

	out := readUntil(t, addr, []string{"future", "plain"}, 30*time.Second, false)
	count, _ := decodeAnswers(t, out)
	if len(out) != 2 || count["future"] != 1 || count["plain"] != 1 {
		t.Errorf("answers %v, want future and plain once each", count)
	}
	for _, m := range out {
		if string(m.Key) == "future" && (header(m, "traceparent") != traceparent || header(m, "tracestate") != tracestate) {
			t.Errorf("the answer to future carries traceparent %q and tracestate %q, want the request's", header(m, "traceparent"), header(m, "tracestate"))
		}
		if string(m.Key) == "plain" && len(m.Headers) != 0 {
			t.Errorf("the answer to plain carries headers %v, its request had none", m.Headers)
		}
	}
	want := map[string]pipeline.Reason{"past": pipeline.ReasonExpired, "old": pipeline.ReasonExpired, "bad": pipeline.ReasonBadRequest}
	for _, m := range readAll(t, addr, dlqTopic, len(want), 30*time.Second, false) {
		k := string(m.Key)
		if got := header(m, pipeline.HeaderErrorCode); got != string(want[k]) {
			t.Errorf("%s dead-lettered with error_code %q, want %q (%s)", k, got, want[k], header(m, pipeline.HeaderError))
		}
		if k == "past" && header(m, "traceparent") != traceparent {
			t.Errorf("the dead letter of past carries traceparent %q, want the request's", header(m, "traceparent"))
		}
		delete(want, k)
	}
	if len(want) > 0 {
		t.Errorf("not dead-lettered: %v", want)
	}
	n := 0
	for _, b := range pred.batchSizes() {
		n += b
	}
	if n != 2 {
		t.Errorf("the model ran on %d requests, want 2: expired ones must not cost model time", n)
	}
	if err := eventually(5*time.Second, func() bool { return gatheredLabel(t, reg, "bertstream_dead_lettered_total", "reason", "expired") == 2 }); err != nil {
		t.Errorf("dead_lettered_total{reason=\"expired\"} is %v, want 2", gatheredLabel(t, reg, "bertstream_dead_lettered_total", "reason", "expired"))
	}
}

// gatheredLabel is the value of a counter with the given label.
func gatheredLabel(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
