package main

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/bert/task"
	"github.com/bertstream/bertstream/loader"
	"github.com/bertstream/bertstream/nn"
)

// BenchmarkScaleOut is issue 10's scale-out ratio with real processes: the
// same requests answered by one `bertstream serve --threads 2` and by two
// `bertstream serve --threads 1` in one group, on `bertstream broker` with
// six partitions. The workers join first; then the requests are queued at
// once, and each rate counts the answers from the first to the last (by
// their record timestamps). ratio is two workers' rate over one's. Beside
// them, the bare engine (the model's Predict in this process, 2 threads,
// batches of 32, as serve --max-batch 32): pipeline_ratio is the one
// worker's rate over the engine's, with the broker in a process of its own
// as in production. The three run one after the other in each round.
// `make scale-out`; BERTSTREAM_SCALE_MODEL picks the model (default
// demo/model).
func BenchmarkScaleOut(b *testing.B) {
	model := os.Getenv("BERTSTREAM_SCALE_MODEL")
	if model == "" {
		model = "../../demo/model"
	}
	const n = 3000
	be, err := nn.Open("cpu", nn.Options{Threads: 2})
	if err != nil {
		b.Fatal(err)
	}
	pred, err := loader.LoadPredictor(model, loader.Options{Backend: be}, bert.PredictorOptions{Truncate: true})
	if err != nil {
		b.Fatal(err)
	}
	defer pred.Model.Close()
	reqs := make([]task.Request, n)
	for i, t := range benchTexts(n) {
		reqs[i] = task.Request{Task: task.Classify, Text: t}
	}
	pred.Predict(context.Background(), reqs[:32]) // warm up
	for b.Loop() {
		start := time.Now()
		for i := 0; i < n; i += 32 {
			for _, r := range pred.Predict(context.Background(), reqs[i:min(i+32, n)]) {
				if r.Err != nil {
					b.Fatal(r.Err)
				}
			}
		}
		engine := float64(n) / time.Since(start).Seconds()
		one := scaleOutRate(b, model, n, 1, 2)
		two := scaleOutRate(b, model, n, 2, 1)
		b.Logf("engine (2 threads): %.1f req/s; one worker --threads 2: %.1f req/s (%.2f of the engine); two workers --threads 1: %.1f req/s; ratio %.2f",
			engine, one, one/engine, two, two/one)
		b.ReportMetric(engine, "engine_req/s")
		b.ReportMetric(one, "one_x2_req/s")
		b.ReportMetric(two, "two_x1_req/s")
		b.ReportMetric(two/one, "ratio")
		b.ReportMetric(one/engine, "pipeline_ratio")
	}
}

// scaleOutRate is the rate at which workers serve processes with threads
// threads each answer n queued requests.
func scaleOutRate(b *testing.B, model string, n, workers, threads int) float64 {
	broker := startProc(b, "broker", "--listen", "127.0.0.1:0", "--partitions", "6")
	defer broker.stop(b, 10*time.Second)
	addr := broker.line(b, regexp.MustCompile(`^broker listening on (\S+)$`), 30*time.Second)[1]
	for i := range workers {
		name := "w" + strconv.Itoa(i)
		p := startProc(b, "serve", "--brokers", addr, "--model", model, "--http", "", "--log-format", "text",
			"--client-id", name, "--instance-id", name, "--threads", strconv.Itoa(threads), "--max-batch", "32")
		defer p.stop(b, 20*time.Second)
	}
	sc := sarama.NewConfig()
	sc.Version = sarama.V3_0_0_0
	sc.Producer.Return.Successes = true
	sc.Producer.Partitioner = sarama.NewHashPartitioner
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	admin, err := sarama.NewClusterAdmin([]string{addr}, sc)
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close()
	if !waitFor(60*time.Second, func() bool {
		ds, err := admin.DescribeConsumerGroups([]string{defaultGroup})
		if err != nil || len(ds) != 1 || ds[0].State != "Stable" || len(ds[0].Members) != workers {
			return false
		}
		assigned := 0
		for _, m := range ds[0].Members {
			if a, err := m.GetMemberAssignment(); err == nil && a != nil {
				assigned += len(a.Topics[defaultInTopic])
			}
		}
		return assigned == 6
	}) {
		b.Fatalf("the %d workers never shared the six partitions", workers)
	}

	texts := benchTexts(n)
	msgs := make([]*sarama.ProducerMessage, n)
	for i, t := range texts {
		id := "s" + strconv.Itoa(i)
		v, _ := json.Marshal(map[string]any{"id": id, "task": "classify", "text": t})
		msgs[i] = &sarama.ProducerMessage{Topic: defaultInTopic, Key: sarama.StringEncoder(id), Value: sarama.ByteEncoder(v)}
	}
	prod, err := sarama.NewSyncProducer([]string{addr}, sc)
	if err != nil {
		b.Fatal(err)
	}
	if err := prod.SendMessages(msgs); err != nil {
		b.Fatal(err)
	}
	prod.Close()

	consumer, err := sarama.NewConsumer([]string{addr}, sc)
	if err != nil {
		b.Fatal(err)
	}
	defer consumer.Close()
	parts, err := consumer.Partitions(defaultOutTopic)
	if err != nil {
		b.Fatal(err)
	}
	ts := make(chan time.Time, n)
	for _, p := range parts {
		pc, err := consumer.ConsumePartition(defaultOutTopic, p, sarama.OffsetOldest)
		if err != nil {
			b.Fatal(err)
		}
		defer pc.Close()
		go func() {
			for m := range pc.Messages() {
				ts <- m.Timestamp
			}
		}()
	}
	var got []time.Time
	deadline := time.After(5 * time.Minute)
	for len(got) < n {
		select {
		case t := <-ts:
			got = append(got, t)
		case <-deadline:
			b.Fatalf("%d of %d answers after 5 minutes", len(got), n)
		}
	}
	first, last := slices.MinFunc(got, time.Time.Compare), slices.MaxFunc(got, time.Time.Compare)
	return float64(n-1) / last.Sub(first).Seconds()
}

// benchTexts are n package-description-like texts of 8 to 40 words, as
// the pipeline's benchmark sends.
func benchTexts(n int) []string {
	words := strings.Fields(`library for the python language command line tool development files
		headers static shared network server client protocol documentation module interface
		fast simple secure parser format data files utilities system kernel package manager`)
	out := make([]string, n)
	for i := range out {
		w := make([]string, 8+(i*7919)%33)
		for j := range w {
			w[j] = words[(i*31+j*17)%len(words)]
		}
		out[i] = strings.Join(w, " ")
	}
	return out
}
