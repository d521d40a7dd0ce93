package pipeline

import (
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are a worker's Prometheus collectors. One Metrics may serve one
// worker; tests give each worker its own registry.
type Metrics struct {
	Consumed     prometheus.Counter
	Produced     prometheus.Counter
	DeadLettered *prometheus.CounterVec
	ProduceFails prometheus.Counter
	Commits      prometheus.Counter
	Rebalances   prometheus.Counter
	BatchSize    prometheus.Histogram
	BatchTokens  prometheus.Histogram
	ModelLatency prometheus.Histogram
	// Latency is from a request's consumption to its answer's
	// acknowledgement by the brokers.
	Latency prometheus.Histogram
	// BatchRequests is the requests of each source (SourceKafka,
	// SourceHTTP) in the model batches that hold any of that source.
	BatchRequests *prometheus.HistogramVec
	// AnswerLatency is, per source, from a request's arrival (consumed,
	// or submitted) to its model result.
	AnswerLatency *prometheus.HistogramVec
	// Queued is the submitted requests not yet answered; Rejected counts
	// the submissions refused because the queue was full, Cancelled the
	// requests dropped before the model because their client left.
	Queued    prometheus.Gauge
	Rejected  prometheus.Counter
	Cancelled prometheus.Counter
	InFlight  prometheus.Gauge
	Paused    prometheus.Gauge
	Lag       *prometheus.GaugeVec
}

// NewMetrics creates the collectors and registers them, together with the
// process's memory figures: its resident set and the Go heap. The memory
// the model holds outside the Go heap (native and GPU tensors) is the
// model's to report: the command that wires the model in registers it.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns = "bertstream"
	lat := prometheus.ExponentialBuckets(0.0005, 2, 16)
	m := &Metrics{
		Consumed:      prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "consumed_total", Help: "Requests consumed from the input topic."}),
		Produced:      prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "produced_total", Help: "Answers acknowledged on the output topic."}),
		DeadLettered:  prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "dead_lettered_total", Help: "Requests acknowledged on the dead-letter topic, by reason."}, []string{"reason"}),
		ProduceFails:  prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "produce_failures_total", Help: "Answers or dead letters the brokers did not take after retries."}),
		Commits:       prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "commits_total", Help: "Offset commits (or committed transactions) sent."}),
		Rebalances:    prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "group_sessions_total", Help: "Consumer group sessions started (one per rebalance with eager rebalancing; a cooperative session lives through rebalances)."}),
		BatchSize:     prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "batch_size", Help: "Requests per model batch.", Buckets: prometheus.ExponentialBuckets(1, 2, 10)}),
		BatchTokens:   prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "batch_tokens", Help: "Tokens per model batch, when batches have a token budget (--max-tokens).", Buckets: prometheus.ExponentialBuckets(8, 2, 14)}),
		ModelLatency:  prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "model_latency_seconds", Help: "Time of one model call on a batch.", Buckets: lat}),
		Latency:       prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "request_latency_seconds", Help: "From consumption of a request to the acknowledgement of its answer.", Buckets: lat}),
		BatchRequests: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "batch_requests", Help: "Requests of one source per model batch that holds any of that source.", Buckets: prometheus.ExponentialBuckets(1, 2, 10)}, []string{"source"}),
		AnswerLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "answer_latency_seconds", Help: "From a request's arrival (consumed from Kafka, received over HTTP) to its model result, by source.", Buckets: lat}, []string{"source"}),
		Queued:        prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "api_queued", Help: "Requests received over HTTP and not yet answered."}),
		Rejected:      prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "api_rejected_total", Help: "HTTP requests refused because the queue was full (429)."}),
		Cancelled:     prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "api_cancelled_total", Help: "HTTP requests dropped before the model because their client left."}),
		InFlight:      prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "in_flight", Help: "Requests consumed and not yet committed."}),
		Paused:        prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "paused_partitions", Help: "Partitions paused because the in-flight bound is reached."}),
		Lag:           prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "consumer_lag", Help: "Messages behind the high watermark, per claimed input partition."}, []string{"partition"}),
	}
	reg.MustRegister(m.Consumed, m.Produced, m.DeadLettered, m.ProduceFails, m.Commits, m.Rebalances,
		m.BatchSize, m.BatchTokens, m.ModelLatency, m.Latency, m.InFlight, m.Paused, m.Lag,
		m.BatchRequests, m.AnswerLatency, m.Queued, m.Rejected, m.Cancelled)
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "memory_rss_bytes", Help: "Resident set size of the process."}, rssBytes),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "memory_go_heap_bytes", Help: "Bytes of allocated Go heap objects."}, func() float64 {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			return float64(ms.HeapAlloc)
		}),
	)
	return m
}

// rssBytes reads the resident set size from /proc; 0 where there is none.
func rssBytes() float64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseFloat(f[1], 64)
	if err != nil {
		return 0
	}
	return pages * float64(os.Getpagesize())
}
