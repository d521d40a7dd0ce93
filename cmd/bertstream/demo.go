package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/bert/task"
	"github.com/bertstream/bertstream/pipeline"
	"github.com/bertstream/bertstream/pipeline/broker"
)

func init() {
	register(&command{name: "demo", summary: "run broker, serve and a client that sends sample requests and prints the answers", run: runDemo})
}

// sample is one line of demo/samples.jsonl: a Debian package description
// and the section the package is filed under.
type sample struct {
	ID      string `json:"id"`
	Package string `json:"package"`
	Section string `json:"section"`
	Text    string `json:"text"`
}

// builtinSamples stand in for demo/samples.jsonl when it is absent.
var builtinSamples = []sample{
	{"b1", "libcurl4", "libs", "easy-to-use client-side URL transfer library, supporting HTTP, HTTPS, FTP and many other protocols"},
	{"b2", "python3-numpy", "python", "fast array facility to the Python 3 language: multi-dimensional arrays, linear algebra and Fourier transforms"},
	{"b3", "libssl-dev", "libdevel", "Secure Sockets Layer toolkit - development files: headers and static libraries for building against OpenSSL"},
	{"b4", "htop", "utils", "interactive processes viewer: a text-mode process viewer showing CPU and memory use, with a tree view"},
	{"b5", "golang-github-spf13-cobra-dev", "golang", "library for creating powerful modern Go command line applications, with nested subcommands and flags"},
	{"b6", "librust-serde-dev", "rust", "generic serialization and deserialization framework for Rust - Rust source code"},
	{"b7", "perl-doc", "doc", "Perl documentation reader: the perldoc program displays documentation embedded in Perl modules"},
	{"b8", "openssh-server", "net", "secure shell (SSH) server, for secure access from remote machines"},
}

// readSamples reads a samples file, one JSON object per line.
func readSamples(path string) ([]sample, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []sample
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var s sample
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		if s.ID == "" {
			s.ID = "s" + strconv.Itoa(line)
		}
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no samples", path)
	}
	return out, nil
}

func runDemo(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", "demo [--model DIR] [--samples FILE] [flags]", stderr)
	model := fs.String("model", "demo/model", "classifier model directory")
	samplesPath := fs.String("samples", "demo/samples.jsonl", `sample requests, JSON lines {"id","package","section","text"} (built-in samples when the default file is absent)`)
	listen := fs.String("listen", "127.0.0.1:0", "address of the embedded broker")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up waiting for answers after this long")
	logLevel := fs.String("log-level", "warn", "log level of the broker and worker: debug, info, warn or error")
	var pf pipelineFlags
	pf.register(fs)
	var bf backendFlags
	bf.register(fs)
	var tf tracingFlags
	tf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	traceSettings, err := tf.settings()
	if err != nil {
		return err
	}
	samplesGiven := false
	fs.Visit(func(f *flag.Flag) { samplesGiven = samplesGiven || f.Name == "samples" })
	samples, err := readSamples(*samplesPath)
	if errors.Is(err, os.ErrNotExist) && !samplesGiven {
		samples, err = builtinSamples, nil
	}
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, "text", *logLevel)
	if err != nil {
		return err
	}
	if _, err := os.Stat(*model); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no model at %s: `make demo-model` trains the demo model there, or pass --model DIR (testdata/bert-tiny/bert-classifier works)", *model)
	}

	p, err := pf.loadBERT(*model, &bf, stderr)
	if err != nil {
		return err
	}
	defer p.Model.Close()
	if !slices.Contains(p.Tasks(), task.Classify) {
		return fmt.Errorf("model %s has no classifier head (tasks: %v); the demo classifies", *model, p.Tasks())
	}
	cfg := pf.cfg
	kafka, err := broker.Start(broker.Config{Listen: *listen, Topics: []string{cfg.InTopic, cfg.OutTopic, cfg.DLQTopic}})
	if err != nil {
		return err
	}
	defer kafka.Close()
	addr := kafka.ListenAddrs()[0]
	cfg.Brokers = []string{addr}
	cfg.Logger = log
	// The demo serves no /metrics: the exporter's counters go unread.
	tracer, err := startTracer(traceSettings, "", p.Name(), prometheus.NewRegistry(), log)
	if err != nil {
		return err
	}
	// Deferred before the worker's stop, so run after it: every span has
	// ended by then.
	defer flushTracer(tracer, log)
	cfg.Tracer = tracer
	w, err := pipeline.NewWorker(cfg, p)
	if err != nil {
		return err
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- w.Run(ctx) }()
	defer func() {
		stop()
		if err := <-served; err != nil {
			log.Error("worker", "err", err)
		}
	}()

	if tracer != nil {
		fmt.Fprintf(stdout, "demo: spans go to %s\n", tracer.URL())
	}
	fmt.Fprintf(stdout, "demo: embedded broker on %s; serving %s (tasks %v) from %s; sending %d requests\n\n", addr, p.Name(), p.Tasks(), *model, len(samples))
	res, err := demoClient(addr, cfg, samples, *timeout)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPACKAGE\tSECTION\tANSWER\tSCORE\tLATENCY")
	answered, dead, match, labelled := 0, 0, 0, 0
	for _, s := range samples {
		r := res[s.ID]
		answer, score := "-", "-"
		switch {
		case r.dead != "":
			dead++
			answer = "dead letter: " + r.dead
		case r.label != "":
			answered++
			answer, score = r.label, fmt.Sprintf("%.2f", r.score)
		}
		if s.Section != "" && r.label != "" {
			labelled++
			if r.label == s.Section {
				match++
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\n", s.ID, or(s.Package, "-"), or(s.Section, "-"), answer, score, r.latency.Round(time.Millisecond))
	}
	tw.Flush()
	fmt.Fprintf(stdout, "\n%d answered, %d dead-lettered", answered, dead)
	if labelled > 0 {
		fmt.Fprintf(stdout, "; the answer is the package's section for %d of %d", match, labelled)
	}
	fmt.Fprintln(stdout)
	if answered+dead < len(samples) {
		return fmt.Errorf("%d of %d requests unanswered after %v", len(samples)-answered-dead, len(samples), *timeout)
	}
	return nil
}

func or(s, dflt string) string {
	if s == "" {
		return dflt
	}
	return s
}

// demoResult is what became of one sample request.
type demoResult struct {
	label   string
	score   float64
	dead    string // the dead-letter reason
	latency time.Duration
}

// demoClient is a Kafka client of the pipeline, as any application would
// be: it sends the samples as classify requests and collects answers and
// dead letters until each request has one.
func demoClient(addr string, cfg pipeline.Config, samples []sample, timeout time.Duration) (map[string]demoResult, error) {
	sc := sarama.NewConfig()
	sc.Version = sarama.V3_0_0_0
	sc.Producer.Return.Successes = true
	sc.Producer.RequiredAcks = sarama.WaitForAll
	consumer, err := sarama.NewConsumer([]string{addr}, sc)
	if err != nil {
		return nil, fmt.Errorf("demo client: %w", err)
	}
	defer consumer.Close()
	type got struct {
		msg  *sarama.ConsumerMessage
		dead bool
	}
	ch := make(chan got, 64)
	done := make(chan struct{})
	defer close(done)
	for _, topic := range []string{cfg.OutTopic, cfg.DLQTopic} {
		parts, err := consumer.Partitions(topic)
		if err != nil {
			return nil, fmt.Errorf("demo client: partitions of %s: %w", topic, err)
		}
		for _, part := range parts {
			pc, err := consumer.ConsumePartition(topic, part, sarama.OffsetOldest)
			if err != nil {
				return nil, fmt.Errorf("demo client: consuming %s/%d: %w", topic, part, err)
			}
			defer pc.Close()
			go func() {
				for m := range pc.Messages() {
					select {
					case ch <- got{m, topic == cfg.DLQTopic}:
					case <-done:
						return
					}
				}
			}()
		}
	}

	producer, err := sarama.NewSyncProducer([]string{addr}, sc)
	if err != nil {
		return nil, fmt.Errorf("demo client: %w", err)
	}
	defer producer.Close()
	sent := make(map[string]time.Time, len(samples))
	for _, s := range samples {
		v, err := json.Marshal(map[string]any{"v": pipeline.SchemaVersion, "id": s.ID, "task": task.Classify, "text": s.Text})
		if err != nil {
			return nil, err
		}
		sent[s.ID] = time.Now()
		if _, _, err := producer.SendMessage(&sarama.ProducerMessage{Topic: cfg.InTopic, Key: sarama.StringEncoder(s.ID), Value: sarama.ByteEncoder(v)}); err != nil {
			return nil, fmt.Errorf("demo client: sending %s: %w", s.ID, err)
		}
	}

	res := make(map[string]demoResult, len(samples))
	deadline := time.After(timeout)
	for len(res) < len(samples) {
		select {
		case g := <-ch:
			id := string(g.msg.Key)
			r := demoResult{latency: time.Since(sent[id])}
			if g.dead {
				for _, h := range g.msg.Headers {
					if string(h.Key) == pipeline.HeaderErrorCode {
						r.dead = string(h.Value)
					}
				}
			} else {
				var a struct {
					Result bert.ClassifyResult `json:"result"`
				}
				if err := json.Unmarshal(g.msg.Value, &a); err != nil {
					return nil, fmt.Errorf("demo client: answer to %s: %w", id, err)
				}
				r.label, r.score = a.Result.Label, a.Result.Score
			}
			if _, ok := sent[id]; ok {
				res[id] = r
			}
		case <-deadline:
			return res, nil
		}
	}
	return res, nil
}
