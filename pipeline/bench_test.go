package pipeline_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/bert/task"
	"github.com/bertstream/bertstream/bert/tokenize"
	"github.com/bertstream/bertstream/loader"
	"github.com/bertstream/bertstream/nn"
	"github.com/bertstream/bertstream/pipeline"
)

// benchPredictor is the model of the benchmark: the directory in
// BERTSTREAM_BENCH_MODEL, or else random weights in the shape of the demo
// model (demo/settings.json: 4 layers, hidden 192, 4 heads, intermediate
// 768, 64 positions) with bert-base-uncased's vocabulary.
func benchPredictor(b *testing.B) *bert.Predictor {
	b.Helper()
	opts := bert.PredictorOptions{Truncate: true}
	if dir := os.Getenv("BERTSTREAM_BENCH_MODEL"); dir != "" {
		p, err := loader.LoadPredictor(dir, loader.Options{}, opts)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { p.Model.Close() })
		return p
	}
	cfg := bert.Config{
		ModelType: "bert", Architectures: []string{"BertForSequenceClassification"},
		VocabSize: 30522, HiddenSize: 192, NumHiddenLayers: 4, NumAttentionHeads: 4, IntermediateSize: 768,
		HiddenAct: "gelu", MaxPositionEmbeddings: 64, TypeVocabSize: 2, LayerNormEps: 1e-12,
		ID2Label: map[string]string{"0": "libs", "1": "python", "2": "utils", "3": "net"},
	}
	be, err := nn.Open("cpu", nn.Options{})
	if err != nil {
		b.Fatal(err)
	}
	m, err := bert.NewRandom(cfg, be, 1)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	tok, err := tokenize.Load(tinyModels + "bert-classifier")
	if err != nil {
		b.Fatal(err)
	}
	p, err := bert.NewPredictor(m, tok, "demo-shaped", opts)
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// benchTexts are n package-description-like texts of 8 to 40 words.
func benchTexts(n int) []string {
	words := strings.Fields(`library for the python language command line tool development files
		headers static shared network server client protocol documentation module interface
		fast simple secure parser format data files utilities system kernel package manager
		graphical toolkit bindings runtime compiler debugger test suite plugin extension`)
	r := rand.New(rand.NewPCG(1, 2))
	out := make([]string, n)
	for i := range out {
		w := make([]string, 8+r.IntN(33))
		for j := range w {
			w[j] = words[r.IntN(len(words))]
		}
		out[i] = strings.Join(w, " ")
	}
	return out
}

// BenchmarkPipeline compares the pipeline with the bare engine on one
// model and batch size, on this machine's CPU, with the embedded broker in
// the same process (it takes its share of the CPU, as does the client):
//
//   - engine_req/s: bert.Predictor.Predict over the texts, batch by batch;
//   - pipeline_req/s: requests queued on the input topic, answered by one
//     worker, from the first answer to the last (saturation);
//   - ratio: pipeline_req/s / engine_req/s;
//   - engine_req/cpu_s, pipeline_req/cpu_s, cpu_ratio: the same per second
//     of this process's CPU time (broker and client included for the
//     pipeline), which other work on the machine disturbs less than the
//     wall clock (through caches and cores it shares, not through time it
//     takes away);
//   - p50_ms, p99_ms: from a client's send to its receipt of the answer,
//     at half the pipeline's saturated rate, open loop.
//
// Engine and pipeline runs alternate, rounds times, and each figure is the
// median over the rounds, each ratio the median of the rounds' own ratios:
// on a machine shared with other work, a run next to its counterpart is
// disturbed about as much, and the median drops the rounds that were not.
//
// Run it once: go test -run '^$' -bench Pipeline -benchtime 1x ./pipeline/
// (BERTSTREAM_BENCH_MODEL=DIR for a model directory).
func BenchmarkPipeline(b *testing.B) {
	const (
		batch  = 32
		n      = 3000
		rounds = 5
	)
	p := benchPredictor(b)
	texts := benchTexts(n)
	reqs := make([]task.Request, n)
	for i, t := range texts {
		reqs[i] = task.Request{Task: task.Classify, Text: t}
	}
	for b.Loop() {
		p.Predict(context.Background(), reqs[:batch]) // warm up
		var engine, pipe, engineCPU, pipeCPU, ratio, cpuRatio, meanBatch []float64
		for round := range rounds {
			start, cpu0 := time.Now(), cpuTime(b)
			for i := 0; i < n; i += batch {
				for _, r := range p.Predict(context.Background(), reqs[i:min(i+batch, n)]) {
					if r.Err != nil {
						b.Fatal(r.Err)
					}
				}
			}
			e, ec := float64(n)/time.Since(start).Seconds(), float64(n)/(cpuTime(b)-cpu0).Seconds()
			r, rc, mb := saturatedRate(b, p, texts, batch)
			b.Logf("round %d: engine %.1f req/s (%.1f per CPU s), pipeline %.1f req/s (%.1f per CPU s, batches of %.1f)", round, e, ec, r, rc, mb)
			engine, engineCPU = append(engine, e), append(engineCPU, ec)
			pipe, pipeCPU = append(pipe, r), append(pipeCPU, rc)
			ratio, cpuRatio = append(ratio, r/e), append(cpuRatio, rc/ec)
			meanBatch = append(meanBatch, mb)
		}
		rate := median(pipe)
		p50, p99 := halfLoadLatency(b, p, texts, batch, rate/2)

		b.ReportMetric(median(engine), "engine_req/s")
		b.ReportMetric(rate, "pipeline_req/s")
		b.ReportMetric(median(ratio), "ratio")
		b.ReportMetric(median(engineCPU), "engine_req/cpu_s")
		b.ReportMetric(median(pipeCPU), "pipeline_req/cpu_s")
		b.ReportMetric(median(cpuRatio), "cpu_ratio")
		b.ReportMetric(median(meanBatch), "pipeline_batch")
		b.ReportMetric(float64(p50.Microseconds())/1000, "p50_ms")
		b.ReportMetric(float64(p99.Microseconds())/1000, "p99_ms")
	}
}

func median(x []float64) float64 {
	s := slices.Clone(x)
	slices.Sort(s)
	return s[len(s)/2]
}

func benchConfig(addr string, batch int) pipeline.Config {
	cfg := baseConfig(addr)
	cfg.MaxBatch = batch
	cfg.MaxWait = 5 * time.Millisecond
	return cfg
}

func benchRequests(texts []string) []testMsg {
	msgs := make([]testMsg, len(texts))
	for i, t := range texts {
		msgs[i] = request("b"+strconv.Itoa(i), t)
	}
	return msgs
}

// cpuTime is the CPU time this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// saturatedRate queues every text on the input topic, then starts a
// worker and times its answers from the first to the last; it returns the
// rate per second of wall clock and of CPU time, and the mean size of the
// worker's batches.
func saturatedRate(b *testing.B, p task.Predictor, texts []string, batch int) (float64, float64, float64) {
	c, addr := newCluster(b)
	defer c.Close()
	produce(b, addr, benchRequests(texts))
	cfg := benchConfig(addr, batch)
	cfg.Logger = testLogger(b)
	reg := prometheus.NewRegistry()
	cfg.Metrics = pipeline.NewMetrics(reg)
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
	}()
	// The answers counted are those between the first poll that sees any
	// and the one that sees them all, so neither the poll interval nor the
	// size of the first batch skews the rate. Polls are 10ms apart: each
	// is a call into the broker's goroutine, which at 2ms took a tenth of
	// the pipeline's throughput from it.
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
			rate := float64(got-firstGot) / time.Since(first).Seconds()
			cpuRate := float64(got-firstGot) / (cpuTime(b) - firstCPU).Seconds()
			var m dto.Metric
			if err := cfg.Metrics.BatchSize.Write(&m); err != nil {
				b.Fatal(err)
			}
			return rate, cpuRate, m.GetHistogram().GetSampleSum() / float64(m.GetHistogram().GetSampleCount())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkPipelineOverhead is what a worker costs beside its model: the
// requests of BenchmarkPipeline, queued, answered at saturation by a
// predictor that answers at once (a classify answer of one label), with
// the broker in this process. cpu_us/req is this process's CPU time (the
// broker's and the worker's) per answer, to set beside the model's own.
func BenchmarkPipelineOverhead(b *testing.B) {
	texts := benchTexts(20000)
	for b.Loop() {
		rate, cpuRate, batch := saturatedRate(b, &countingPredictor{}, texts, 32)
		b.ReportMetric(rate, "req/s")
		b.ReportMetric(1e6/cpuRate, "cpu_us/req")
		b.ReportMetric(batch, "batch")
	}
}

// halfLoadLatency sends the texts at rate requests per second, open loop,
// and returns the median and 99th percentile of the time from each send to
// the client's receipt of its answer.
func halfLoadLatency(b *testing.B, p *bert.Predictor, texts []string, batch int, rate float64) (time.Duration, time.Duration) {
	_, addr := newCluster(b)
	cfg := benchConfig(addr, batch)
	cfg.Logger = testLogger(b)
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
	}()
	for !w.Ready() {
		time.Sleep(10 * time.Millisecond)
	}

	var mu sync.Mutex
	sent := make(map[string]time.Time, len(texts))
	lat := make([]time.Duration, 0, len(texts))
	received := make(chan struct{})
	consumer, err := sarama.NewConsumer([]string{addr}, saramaConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer consumer.Close()
	for part := range int32(3) {
		pc, err := consumer.ConsumePartition(outTopic, part, sarama.OffsetOldest)
		if err != nil {
			b.Fatal(err)
		}
		defer pc.Close()
		go func() {
			for m := range pc.Messages() {
				at := time.Now()
				var r struct{ ID string }
				if json.Unmarshal(m.Value, &r) != nil {
					continue
				}
				mu.Lock()
				lat = append(lat, at.Sub(sent[r.ID]))
				if len(lat) == len(texts) {
					close(received)
				}
				mu.Unlock()
			}
		}()
	}

	sc := saramaConfig()
	sc.Producer.Return.Successes = false
	sc.Producer.Flush.Frequency = 0
	producer, err := sarama.NewAsyncProducer([]string{addr}, sc)
	if err != nil {
		b.Fatal(err)
	}
	defer producer.Close()
	msgs := benchRequests(texts)
	gap := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	for i, m := range msgs {
		time.Sleep(time.Until(start.Add(time.Duration(i) * gap)))
		mu.Lock()
		sent[m.key] = time.Now()
		mu.Unlock()
		producer.Input() <- &sarama.ProducerMessage{Topic: inTopic, Key: sarama.StringEncoder(m.key), Value: sarama.ByteEncoder(m.value)}
	}
	select {
	case <-received:
	case <-time.After(2 * time.Minute):
		mu.Lock()
		defer mu.Unlock()
		b.Fatalf("only %d of %d answers within 2 minutes", len(lat), len(texts))
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100]
}
