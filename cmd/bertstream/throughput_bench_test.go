package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/bert/task"
	"github.com/bertstream/bertstream/loader"
	"github.com/bertstream/bertstream/nn"
	"github.com/bertstream/bertstream/pipeline"
	"github.com/bertstream/bertstream/pipeline/broker"
)

// BenchmarkThroughput is issue 10's throughput ratio: the same requests
// answered by the bare engine and through the pipeline, at saturation, with
// the broker in the pipeline's process and in a process of its own (as in
// production). Each round runs, one after the other:
//
//   - engine: the model's Predict in this process over the texts, in
//     batches of 32 in order (the batches the pipeline makes at
//     saturation: 32 requests of the same texts);
//   - inproc: a pipeline.Worker in this process on the same predictor,
//     against the embedded broker, also in this process;
//   - engine in a process of its own (this test binary run again), as
//     the first;
//   - proc: `bertstream serve` against `bertstream broker`, each a process
//     of its own.
//
// inproc is compared with the engine in this process, proc with the engine
// in a process of its own: on a machine shared with other work, a fresh
// process gets another share of the CPU than this one, which would be
// taken for the pipeline's doing.
//
// All use the same model, 2 threads and batches of at most 32 (5 ms
// wait). The requests are queued before the worker starts, behind warmUp
// others that it answers first (the engine is warm from its warm-up call
// and earlier rounds); each rate counts the answers from the first to the
// last (engine: the ends of the first and last Predict calls; pipelines:
// the answers' record timestamps). inproc_ratio and proc_ratio are the
// medians of each round's rate over the same round's rate of its engine;
// *_cpu_ratio the same of the answers per second of CPU time (of this
// process for engine and inproc, of serve and broker for proc), which
// other work on the machine disturbs less; *_batch is the mean batch size
// and *_model_ms the mean time of a batch in Predict (from the worker's
// metrics), which tell whether a pipeline loses its time in the model
// (its batches take longer than the engine's: something takes the CPU
// from it) or beside it (the model waits).
//
// `make throughput`; BERTSTREAM_THROUGHPUT_MODEL picks the model (default
// demo/model), BERTSTREAM_THROUGHPUT_REQUESTS the timed requests of each
// measurement (default 12000), BERTSTREAM_THROUGHPUT_WARMUP the requests
// answered before them (see warmUp), BERTSTREAM_THROUGHPUT_ROUNDS the rounds (default 5),
// BERTSTREAM_THROUGHPUT_LANES the batches run at once (default 1: the
// engine runs its batches on as many goroutines, the pipelines with as
// many lanes) and BERTSTREAM_THROUGHPUT_THREADS the model's threads in
// each (default 2 divided by the lanes).
func BenchmarkThroughput(b *testing.B) {
	model := os.Getenv("BERTSTREAM_THROUGHPUT_MODEL")
	if model == "" {
		model = "../../demo/model"
	}
	rounds := 5
	if s := os.Getenv("BERTSTREAM_THROUGHPUT_ROUNDS"); s != "" {
		var err error
		if rounds, err = strconv.Atoi(s); err != nil || rounds < 1 {
			b.Fatalf("BERTSTREAM_THROUGHPUT_ROUNDS=%q: want a positive number", s)
		}
	}
	n, batch := tputRequests(), tputBatch
	threads, lanes := tputThreads(), tputLanes()
	be, err := nn.Open("cpu", nn.Options{Threads: threads})
	if err != nil {
		b.Fatal(err)
	}
	pred, err := loader.LoadPredictor(model, loader.Options{Backend: be}, bert.PredictorOptions{Truncate: true})
	if err != nil {
		b.Fatal(err)
	}
	defer pred.Model.Close()
	texts := benchTexts(n)
	reqs := make([]task.Request, n)
	for i, t := range texts {
		reqs[i] = task.Request{Task: task.Classify, Text: t}
	}
	for b.Loop() {
		pred.Predict(context.Background(), reqs[:batch]) // warm up
		runs := map[string][]pipeRun{}
		for round := range rounds {
			// Odd rounds measure each pipeline before its engine: this
			// machine's speed drifts over minutes, and a fixed order would
			// charge the drift to one side.
			var e, i, ep, p pipeRun
			engine := func() {
				var err error
				if e, err = engineRate(pred, reqs, batch, lanes); err != nil {
					b.Fatal(err)
				}
			}
			inproc := func() { i = inprocRate(b, pred, texts, batch, lanes) }
			engineProc := func() { ep = engineProcRate(b, model) }
			proc := func() { p = procRate(b, model, texts, batch, threads, lanes) }
			if round%2 == 0 {
				engine()
				inproc()
				engineProc()
				proc()
			} else {
				inproc()
				engine()
				proc()
				engineProc()
			}
			b.Logf("round %d: engine %.1f req/s (%.1f per CPU s, %.2f ms a batch); inproc %.1f req/s (%.3f; %.3f per CPU s; batches of %.1f, %.2f ms)",
				round, e.rate, e.cpuRate, e.modelMs, i.rate, i.rate/e.rate, i.cpuRate/e.cpuRate, i.batch, i.modelMs)
			b.Logf("round %d: engine process %.1f req/s (%.1f per CPU s, %.2f ms a batch); proc %.1f req/s (%.3f; %.3f per CPU s; batches of %.1f, %.2f ms)",
				round, ep.rate, ep.cpuRate, ep.modelMs, p.rate, p.rate/ep.rate, p.cpuRate/ep.cpuRate, p.batch, p.modelMs)
			runs["engine"] = append(runs["engine"], e)
			runs["inproc"] = append(runs["inproc"], i)
			runs["engineproc"] = append(runs["engineproc"], ep)
			runs["proc"] = append(runs["proc"], p)
		}
		of := func(name string, f func(r pipeRun, e pipeRun) float64) float64 {
			base := map[string]string{"inproc": "engine", "proc": "engineproc"}[name]
			var x []float64
			for k, r := range runs[name] {
				var e pipeRun
				if base != "" {
					e = runs[base][k]
				}
				x = append(x, f(r, e))
			}
			return median(x)
		}
		for _, name := range []string{"engine", "inproc", "engineproc", "proc"} {
			b.ReportMetric(of(name, func(r, _ pipeRun) float64 { return r.rate }), name+"_req/s")
			b.ReportMetric(of(name, func(r, _ pipeRun) float64 { return r.modelMs }), name+"_model_ms")
			if name == "inproc" || name == "proc" {
				b.ReportMetric(of(name, func(r, e pipeRun) float64 { return r.rate / e.rate }), name+"_ratio")
				b.ReportMetric(of(name, func(r, e pipeRun) float64 { return r.cpuRate / e.cpuRate }), name+"_cpu_ratio")
				b.ReportMetric(of(name, func(r, _ pipeRun) float64 { return r.batch }), name+"_batch")
			}
		}
	}
}

func median(x []float64) float64 {
	s := slices.Clone(x)
	slices.Sort(s)
	return s[len(s)/2]
}

// engineRate runs Predict over reqs in batches of batch and returns the
// rate from the end of the first call to the end of the last (n-1
// answers, as the pipelines count them), and the mean
// time of a call in milliseconds.
func engineRate(pred *bert.Predictor, reqs []task.Request, batch, lanes int) (pipeRun, error) {
	var (
		mu          sync.Mutex
		first, last time.Time
		cpu0        time.Duration
		inModel     time.Duration
		failed      error
		next        atomic.Int64
		wg          sync.WaitGroup
	)
	for range lanes {
		wg.Go(func() {
			for {
				i := int(next.Add(int64(batch))) - batch
				if i >= len(reqs) {
					return
				}
				t0 := time.Now()
				res := pred.Predict(context.Background(), reqs[i:min(i+batch, len(reqs))])
				end := time.Now()
				mu.Lock()
				for _, r := range res {
					if r.Err != nil && failed == nil {
						failed = r.Err
					}
				}
				inModel += end.Sub(t0)
				if first.IsZero() {
					first, cpu0 = end, selfCPU()
				}
				last = end
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if failed != nil {
		return pipeRun{}, failed
	}
	calls := (len(reqs) + batch - 1) / batch
	return pipeRun{
		rate:    float64(len(reqs)-1) / last.Sub(first).Seconds(),
		cpuRate: float64(len(reqs)-1) / (selfCPU() - cpu0).Seconds(),
		batch:   float64(len(reqs)) / float64(calls),
		modelMs: float64(inModel.Microseconds()) / 1000 / float64(calls),
	}, nil
}

// selfCPU is the CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(fmt.Sprintf("getrusage: %v", err)) // only for a bad argument
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the CPU time the processes have used, from /proc (in the
// kernel's clock ticks, 100 a second on Linux).
func procCPU(b *testing.B, procs ...*proc) time.Duration {
	var total time.Duration
	for _, p := range procs {
		st, err := os.ReadFile("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/stat")
		if err != nil {
			b.Fatal(err)
		}
		// The fields after the command's name, which is in parentheses
		// and may hold spaces: state is the first, utime the 12th.
		f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
		for _, s := range f[11:13] {
			t, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				b.Fatalf("/proc/%d/stat: %v", p.cmd.Process.Pid, err)
			}
			total += time.Duration(t) * 10 * time.Millisecond
		}
	}
	return total
}

// asEngine, set in the environment of this test binary to a model
// directory, makes it run engineRate on that model (after warmUp requests)
// and print the result as JSON: the engine in a process of its own.
const asEngine = "BERTSTREAM_TEST_AS_ENGINE"

// tputBatch is the batch of BenchmarkThroughput's engine and workers.
const tputBatch = 32

// tputRequests is how many timed requests a measurement answers:
// BERTSTREAM_THROUGHPUT_REQUESTS, or 12000. At 3000 a window lasted 1.2 s
// on demo/model: a stall of the machine of 100 ms was 8% of it, and the
// end of the queue, where the last batches leave a core idle, weighed
// four times as much as now.
func tputRequests() int {
	if n, err := strconv.Atoi(os.Getenv("BERTSTREAM_THROUGHPUT_REQUESTS")); err == nil && n > 0 {
		return n
	}
	return 12000
}

// tputThreads is the model's threads in each lane:
// BERTSTREAM_THROUGHPUT_THREADS, or 2 divided by the lanes.
func tputThreads() int {
	if n, err := strconv.Atoi(os.Getenv("BERTSTREAM_THROUGHPUT_THREADS")); err == nil && n > 0 {
		return n
	}
	return max(1, 2/tputLanes())
}

// tputLanes is how many batches the engine and the pipelines run at once:
// BERTSTREAM_THROUGHPUT_LANES, or 1.
func tputLanes() int {
	if n, err := strconv.Atoi(os.Getenv("BERTSTREAM_THROUGHPUT_LANES")); err == nil && n > 0 {
		return n
	}
	return 1
}

// runEngineChild is the test binary run with asEngine.
func runEngineChild(model string, stdout io.Writer) int {
	be, err := nn.Open("cpu", nn.Options{Threads: tputThreads()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	pred, err := loader.LoadPredictor(model, loader.Options{Backend: be}, bert.PredictorOptions{Truncate: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer pred.Model.Close()
	n := tputRequests()
	texts := benchTexts(n)
	reqs := make([]task.Request, 0, warmUp+n)
	for _, t := range append(texts[n-warmUp:n:n], texts...) {
		reqs = append(reqs, task.Request{Task: task.Classify, Text: t})
	}
	for i := 0; i < warmUp; i += tputBatch {
		pred.Predict(context.Background(), reqs[i:min(i+tputBatch, warmUp)])
	}
	r, err := engineRate(pred, reqs[warmUp:], tputBatch, tputLanes())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := json.NewEncoder(stdout).Encode(map[string]float64{"rate": r.rate, "cpu_rate": r.cpuRate, "batch": r.batch, "model_ms": r.modelMs}); err != nil {
		return 1
	}
	return 0
}

// engineProcRate runs engineRate in a process of its own.
func engineProcRate(b *testing.B, model string) pipeRun {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), asEngine+"="+model)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("the engine process: %v", err)
	}
	var v map[string]float64
	if err := json.Unmarshal(out, &v); err != nil {
		b.Fatalf("the engine process said %q: %v", out, err)
	}
	return pipeRun{rate: v["rate"], cpuRate: v["cpu_rate"], batch: v["batch"], modelMs: v["model_ms"]}
}

// pipeRun is one pipeline measurement.
type pipeRun struct {
	rate    float64 // answers a second, first to last
	cpuRate float64 // answers a CPU second of the processes that serve them
	batch   float64 // mean batch size
	modelMs float64 // mean time of a batch in the model
}

// inprocRate queues texts on the embedded broker in this process and
// answers them with a worker in this process on pred.
func inprocRate(b *testing.B, pred *bert.Predictor, texts []string, batch, lanes int) pipeRun {
	c, err := broker.Start(broker.Config{Topics: []string{defaultInTopic, defaultOutTopic, defaultDLQTopic}})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	addr := c.ListenAddrs()[0]
	queueRequests(b, addr, texts)
	reg := prometheus.NewRegistry()
	m := pipeline.NewMetrics(reg)
	w, err := pipeline.NewWorker(pipeline.Config{
		Brokers: []string{addr}, InTopic: defaultInTopic, OutTopic: defaultOutTopic, DLQTopic: defaultDLQTopic,
		Group: defaultGroup, MaxBatch: batch, MaxWait: 5 * time.Millisecond, Lanes: lanes, Metrics: m,
		Logger: discardLogger(),
	}, pred)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	rate, cpuRate := answerRate(b, addr, len(texts), func() time.Duration { return selfCPU() })
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	var bs, ml dto.Metric
	if err := m.BatchSize.Write(&bs); err != nil {
		b.Fatal(err)
	}
	if err := m.ModelLatency.Write(&ml); err != nil {
		b.Fatal(err)
	}
	return pipeRun{
		rate:    rate,
		cpuRate: cpuRate,
		batch:   bs.GetHistogram().GetSampleSum() / float64(bs.GetHistogram().GetSampleCount()),
		modelMs: 1000 * ml.GetHistogram().GetSampleSum() / float64(ml.GetHistogram().GetSampleCount()),
	}
}

// procRate queues texts on a `bertstream broker` process and answers them
// with a `bertstream serve` process.
func procRate(b *testing.B, model string, texts []string, batch, threads, lanes int) pipeRun {
	brk := startProc(b, "broker", "--listen", "127.0.0.1:0", "--partitions", "3")
	defer brk.stop(b, 10*time.Second)
	addr := brk.line(b, regexp.MustCompile(`^broker listening on (\S+)$`), 30*time.Second)[1]
	queueRequests(b, addr, texts)
	serve := startProc(b, "serve", "--brokers", addr, "--model", model, "--http", "127.0.0.1:0", "--log-format", "text",
		"--threads", strconv.Itoa(threads), "--lanes", strconv.Itoa(lanes), "--max-batch", strconv.Itoa(batch), "--max-wait", "5ms")
	defer serve.stop(b, 20*time.Second)
	rate, cpuRate := answerRate(b, addr, len(texts), func() time.Duration { return procCPU(b, serve, brk) })
	var ops []string
	if !waitFor(10*time.Second, func() bool {
		ops = regexp.MustCompile(`msg="operations endpoint" addr=(\S+)`).FindStringSubmatch(serve.stderr.String())
		return ops != nil
	}) {
		b.Fatalf("serve never said where its operations endpoint is:\n%s", serve.stderr.String())
	}
	resp, err := http.Get("http://" + ops[1] + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	v := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 {
			if x, err := strconv.ParseFloat(f[1], 64); err == nil {
				v[f[0]] = x
			}
		}
	}
	get := func(k string) float64 {
		x, ok := v[k]
		if !ok {
			b.Fatalf("serve's /metrics lack %s", k)
		}
		return x
	}
	return pipeRun{
		rate:    rate,
		cpuRate: cpuRate,
		batch:   get("bertstream_batch_size_sum") / get("bertstream_batch_size_count"),
		modelMs: 1000 * get("bertstream_model_latency_seconds_sum") / get("bertstream_model_latency_seconds_count"),
	}
}

// warmUp is how many requests a worker answers before those timed: the
// first batches of a process fill its memory pools and caches, which the
// engine, warm from its earlier rounds, does not pay for; a worker in
// production runs for days. BERTSTREAM_THROUGHPUT_WARMUP sets it, 1000 by
// default (90 s of a bert-base classifier's time on two cores); at most the
// timed requests, whose last texts the warm-up repeats.
var warmUp = func() int {
	n, err := strconv.Atoi(os.Getenv("BERTSTREAM_THROUGHPUT_WARMUP"))
	if err != nil || n <= 0 {
		n = 1000
	}
	return min(n, tputRequests())
}()

// queueRequests puts warmUp requests (ids w0, w1, ...) and then a classify
// request for each text (ids t0, t1, ...) on the input topic.
func queueRequests(b *testing.B, addr string, texts []string) {
	sc := sarama.NewConfig()
	sc.Version = sarama.V3_0_0_0
	sc.Producer.Return.Successes = true
	sc.Producer.Partitioner = sarama.NewHashPartitioner
	var msgs []*sarama.ProducerMessage
	for i, t := range append(texts[len(texts)-warmUp:len(texts):len(texts)], texts...) {
		id := "t" + strconv.Itoa(i-warmUp)
		if i < warmUp {
			id = "w" + strconv.Itoa(i)
		}
		v, _ := json.Marshal(map[string]any{"id": id, "task": "classify", "text": t})
		msgs = append(msgs, &sarama.ProducerMessage{Topic: defaultInTopic, Key: sarama.StringEncoder(id), Value: sarama.ByteEncoder(v)})
	}
	prod, err := sarama.NewSyncProducer([]string{addr}, sc)
	if err != nil {
		b.Fatal(err)
	}
	defer prod.Close()
	if err := prod.SendMessages(msgs); err != nil {
		b.Fatal(err)
	}
}

// answerRate waits until the n timed requests and the warmUp before them
// are answered on the output topic, polling its high watermarks, then reads
// the answers and returns the rate from the first timed one to the last by
// their record timestamps, which the worker's producer sets as it takes
// each answer (warm-up answers in that window count too); and the answers
// per second of cpu, which is sampled every 20 ms, over the samples around
// them.
func answerRate(b *testing.B, addr string, n int, cpu func() time.Duration) (float64, float64) {
	sc := sarama.NewConfig()
	sc.Version = sarama.V3_0_0_0
	client, err := sarama.NewClient([]string{addr}, sc)
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	// The CPU is sampled every 20 ms, the answers counted every 250 ms:
	// each count is work for the broker, whose CPU time is the pipeline's.
	type sample struct {
		at  time.Time
		cpu time.Duration
	}
	var (
		mu      sync.Mutex
		samples []sample
		stop    = make(chan struct{})
		stopped = make(chan struct{})
	)
	go func() {
		defer close(stopped)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			mu.Lock()
			samples = append(samples, sample{time.Now(), cpu()})
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	var parts []int32
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if parts == nil {
			if err := client.RefreshMetadata(defaultOutTopic); err == nil {
				parts, _ = client.Partitions(defaultOutTopic)
			}
		}
		var got int64
		for _, p := range parts {
			if off, err := client.GetOffset(defaultOutTopic, p, sarama.OffsetNewest); err == nil {
				got += off
			}
		}
		if got >= int64(warmUp+n) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d answers after 5 minutes", got, warmUp+n)
		}
		time.Sleep(250 * time.Millisecond)
	}
	close(stop)
	<-stopped
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		b.Fatal(err)
	}
	defer consumer.Close()
	var first, last time.Time
	var stamps []time.Time // of every answer, warm-up ones too
	got := 0
	for _, p := range parts {
		hw, err := client.GetOffset(defaultOutTopic, p, sarama.OffsetNewest)
		if err != nil {
			b.Fatal(err)
		}
		if hw == 0 {
			continue
		}
		pc, err := consumer.ConsumePartition(defaultOutTopic, p, sarama.OffsetOldest)
		if err != nil {
			b.Fatal(err)
		}
		for m := range pc.Messages() {
			if m.Offset == hw-1 {
				pc.AsyncClose()
			}
			stamps = append(stamps, m.Timestamp)
			if !bytes.HasPrefix(m.Key, []byte("t")) {
				continue
			}
			if first.IsZero() || m.Timestamp.Before(first) {
				first = m.Timestamp
			}
			if m.Timestamp.After(last) {
				last = m.Timestamp
			}
			got++
		}
	}
	if got != n {
		b.Fatalf("%d answers to %d requests", got, n)
	}
	// The partitions finish their warm-up requests at different times, so
	// some warm-up answers come after the first timed one: the window holds
	// every answer between its first and last, less one, as the engine's
	// count (the answers, in milliseconds, of one batch share a stamp).
	answered := -1
	for _, at := range stamps {
		if !at.Before(first) && !at.After(last) {
			answered++
		}
	}
	// The CPU from the last sample before the first answer to the first
	// after the last, scaled down to the answers' share of that time.
	i := max(0, sort.Search(len(samples), func(i int) bool { return samples[i].at.After(first) })-1)
	j := min(len(samples)-1, sort.Search(len(samples), func(i int) bool { return samples[i].at.After(last) }))
	span := samples[j].at.Sub(samples[i].at)
	if j <= i || span <= 0 {
		b.Fatalf("the answers came between two polls: n too small to time")
	}
	cpuUsed := time.Duration(float64(samples[j].cpu-samples[i].cpu) * last.Sub(first).Seconds() / span.Seconds())
	if answered > n-1 {
		b.Logf("%d warm-up answers came after the first timed one", answered-(n-1))
	}
	return float64(answered) / last.Sub(first).Seconds(), float64(answered) / cpuUsed.Seconds()
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
