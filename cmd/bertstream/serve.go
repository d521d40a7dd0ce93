package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/loader"
	"github.com/bertstream/bertstream/nn"
	"github.com/bertstream/bertstream/pipeline"
	"github.com/bertstream/bertstream/pipeline/api"
	"github.com/bertstream/bertstream/pipeline/trace"
)

func init() {
	register(&command{name: "serve", summary: "answer inference requests from a Kafka topic and/or over HTTP until SIGTERM", run: runServe})
}

// Topic and group names that serve and demo share by default.
const (
	defaultInTopic  = "bertstream.requests"
	defaultOutTopic = "bertstream.answers"
	defaultDLQTopic = "bertstream.dead-letters"
	defaultGroup    = "bertstream"
)

// pipelineFlags are the flags of the Kafka worker, shared by serve and demo.
type pipelineFlags struct {
	cfg      pipeline.Config
	maxLen   int
	truncate bool
}

func (p *pipelineFlags) register(fs *flag.FlagSet) {
	c := &p.cfg
	fs.StringVar(&c.InTopic, "in-topic", defaultInTopic, "topic the requests come from")
	fs.StringVar(&c.OutTopic, "out-topic", defaultOutTopic, "topic the answers go to")
	fs.StringVar(&c.DLQTopic, "dlq-topic", defaultDLQTopic, "topic for requests that cannot be answered")
	fs.StringVar(&c.Group, "group", defaultGroup, "consumer group of the workers")
	fs.IntVar(&c.MaxBatch, "max-batch", 32, "requests per model batch")
	fs.DurationVar(&c.MaxWait, "max-wait", 5*time.Millisecond, "longest a request waits for its batch to fill")
	fs.IntVar(&c.MaxTokens, "max-tokens", 0, "tokens per model batch (0: no limit)")
	fs.IntVar(&c.Lanes, "lanes", 1, "batches the model runs at once, each on --threads threads and the same weights (CPU only): on N cores, --lanes N --threads 1 leaves the kernels no threads to wait for each other")
	fs.IntVar(&c.MaxInFlight, "max-in-flight", 0, "requests consumed and not yet committed, at most (0: (3 + lanes) x max-batch)")
	fs.IntVar(&c.MaxTextBytes, "max-text-bytes", 64<<10, "longest text (plus text_pair) in bytes; longer requests are dead-lettered")
	fs.DurationVar(&c.MaxAge, "max-age", 0, `oldest request to answer, by its record's timestamp; older ones are dead-lettered as "expired" (0: no limit)`)
	fs.IntVar(&p.maxLen, "max-len", 0, "tokens per input, specials included (0: the model's limit)")
	fs.BoolVar(&p.truncate, "truncate", true, "cut inputs over --max-len instead of dead-lettering them")
}

// loadBERT loads a model directory as the pipeline's predictor.
func (p *pipelineFlags) loadBERT(dir string, bf *backendFlags, stderr io.Writer) (*bert.Predictor, error) {
	if l := p.cfg.Lanes; l < 1 {
		return nil, fmt.Errorf("--lanes %d: at least 1", l)
	} else if l > 1 && bf.device != "cpu" {
		// Concurrent forward passes are shown safe on the CPU backend
		// only (TestPredictConcurrently).
		return nil, fmt.Errorf("--lanes %d: more than one lane runs on the CPU backend only, not --device %s", l, bf.device)
	}
	be, err := bf.open()
	if err != nil {
		return nil, err
	}
	load := startMeter(stderr, "loading "+dir, 0)
	pr, err := loader.LoadPredictor(dir, loader.Options{Backend: be}, bert.PredictorOptions{MaxLen: p.maxLen, Truncate: p.truncate})
	load.end()
	if err != nil {
		return nil, err
	}
	// Requests are served from now on; the weights are packed meanwhile
	// instead of on the first request that needs them.
	go func() {
		if err := pr.Model.Prepack(); err != nil {
			fmt.Fprintf(stderr, "bertstream: packing the weights: %v\n", err)
		}
	}()
	return pr, nil
}

// tensorCollector reports nn.Usage at each scrape: the bytes and count of
// the live tensors the engine's scopes hold per device, native and GPU
// memory that the pipeline's Go heap figure does not see.
type tensorCollector struct{ bytes, tensors *prometheus.Desc }

func newTensorCollector() tensorCollector {
	return tensorCollector{
		bytes:   prometheus.NewDesc("bertstream_tensor_bytes", "Bytes of live tensors, per device (nn.Usage).", []string{"device"}, nil),
		tensors: prometheus.NewDesc("bertstream_tensors", "Live tensors, per device (nn.Usage).", []string{"device"}, nil),
	}
}

func (c tensorCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.bytes
	ch <- c.tensors
}

func (c tensorCollector) Collect(ch chan<- prometheus.Metric) {
	for _, u := range nn.Usage() {
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(u.Bytes), u.Device)
		ch <- prometheus.MustNewConstMetric(c.tensors, prometheus.GaugeValue, float64(u.Tensors), u.Device)
	}
}

// newLogger is the structured logger of serve and demo.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want json or text", format)
}

// envFlags sets every flag not given on the command line from the
// environment: --foo-bar from BERTSTREAM_FOO_BAR. Kubernetes passes
// configuration that way, from a ConfigMap.
func envFlags(fs *flag.FlagSet) error {
	given := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		name := "BERTSTREAM_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
		}
	})
	return errors.Join(errs...)
}

// hostname is the default instance id: stable across restarts of a pod
// of a StatefulSet, and unique among them.
func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return ""
	}
	return h
}

func runServe(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("serve", "serve [--brokers HOST:PORT[,...]] [--api HOST:PORT] --model DIR [flags]", stderr)
	brokers := fs.String("brokers", "", "Kafka bootstrap brokers, comma-separated (none: serve the HTTP API alone)")
	model := fs.String("model", "", "model directory")
	httpAddr := fs.String("http", ":9090", `address of /metrics, /healthz and /readyz ("": none)`)
	var tf tracingFlags
	tf.register(fs)
	profile := fs.Bool("pprof", false, "also serve Go's profiles (CPU, heap, goroutines, and blocking and mutex contention, which this turns on) under /debug/pprof/ on --http")
	var af apiFlags
	af.register(fs)
	logFormat := fs.String("log-format", "json", "log format: json or text")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	var pf pipelineFlags
	pf.register(fs)
	c := &pf.cfg
	fs.BoolVar(&c.ExactlyOnce, "exactly-once", false, "produce answers and commit offsets in Kafka transactions")
	fs.StringVar(&c.TransactionalID, "transactional-id", "", "transactional id of this replica with --exactly-once (default GROUP-INSTANCEID, or GROUP-HOSTNAME)")
	fs.DurationVar(&c.TransactionTimeout, "transaction-timeout", 10*time.Second, "how long the brokers keep an abandoned transaction open")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 10*time.Second, "how long a rebalance or shutdown waits for the requests in flight")
	fs.DurationVar(&c.SessionTimeout, "session-timeout", 10*time.Second, "consumer group session timeout: how soon a dead worker's partitions move")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat", time.Second, "consumer group heartbeat interval")
	fs.StringVar(&c.InstanceID, "instance-id", hostname(), `static group membership id of this replica, unique per replica (a StatefulSet pod's name): restarted within the session timeout it keeps its partitions without a rebalance ("": a dynamic member)`)
	fs.StringVar(&c.Rebalance, "rebalance", pipeline.RebalanceCooperative, `how the group moves partitions: "cooperative" moves only those that change owner and the others are answered through the rebalance; "eager" stops every worker at every join or leave (every worker of a group must use the same)`)
	fs.StringVar(&c.ClientID, "client-id", "bertstream", "client id the brokers see")
	fs.StringVar(&c.KafkaVersion, "kafka-version", "3.0.0", "Kafka protocol version to speak")
	s := &c.Security
	fs.BoolVar(&s.TLS, "tls", false, "connect with TLS")
	fs.StringVar(&s.CAFile, "tls-ca", "", "PEM file of the CAs that sign the brokers' certificates (default: system roots)")
	fs.StringVar(&s.CertFile, "tls-cert", "", "PEM client certificate, for mutual TLS")
	fs.StringVar(&s.KeyFile, "tls-key", "", "PEM key of the client certificate")
	fs.StringVar(&s.ServerName, "tls-server-name", "", "name to verify the brokers' certificates against (default: the broker host)")
	fs.StringVar(&s.SASLMechanism, "sasl-mechanism", "", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
	fs.StringVar(&s.SASLUser, "sasl-user", "", "SASL user")
	fs.StringVar(&s.SASLPasswordFile, "sasl-password-file", "", "file holding the SASL password (or set BERTSTREAM_SASL_PASSWORD)")
	var bf backendFlags
	bf.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: bertstream serve [--brokers HOST:PORT[,...]] [--api HOST:PORT] --model DIR [flags]\n\n")
		fmt.Fprintf(stderr, "Kafka requests (--brokers), HTTP requests (--api), or both, in the same batches.\n")
		fmt.Fprintf(stderr, "Every flag can also be set in the environment: --max-batch as BERTSTREAM_MAX_BATCH.\n")
		fmt.Fprintf(stderr, "The SASL password comes from BERTSTREAM_SASL_PASSWORD or --sasl-password-file, never a flag;\n")
		fmt.Fprintf(stderr, "the API key from BERTSTREAM_API_KEY or --api-key-file, never a flag.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := envFlags(fs); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *profile && *httpAddr == "" {
		return errors.New("--pprof serves the profiles on --http, which is off")
	}
	if *brokers == "" && af.addr == "" || *model == "" {
		fs.Usage()
		return errors.New("--model and --brokers or --api (or both) are required")
	}
	s.SASLPassword = os.Getenv("BERTSTREAM_SASL_PASSWORD")
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	c.Logger = log
	// The API's settings are checked before the model loads: a key file
	// that cannot be read stops the server (it fails closed).
	key, tlsCfg, err := af.security()
	if err != nil {
		return err
	}
	traceSettings, err := tf.settings()
	if err != nil {
		return err
	}

	p, err := pf.loadBERT(*model, &bf, stderr)
	if err != nil {
		return err
	}
	defer p.Model.Close()
	reg := prometheus.NewRegistry()
	c.Metrics = pipeline.NewMetrics(reg)
	reg.MustRegister(newTensorCollector())
	tracer, err := startTracer(traceSettings, c.InstanceID, p.Name(), reg, log)
	if err != nil {
		return err
	}
	c.Tracer = tracer
	// One batcher for both sources, so that their requests share batches.
	batcher := pipeline.NewBatcher(p, pipeline.BatchConfig{MaxBatch: c.MaxBatch, MaxWait: c.MaxWait, MaxTokens: c.MaxTokens, Lanes: c.Lanes, MaxQueue: af.queue, Tracer: tracer}, c.Metrics)
	c.Batcher = batcher
	var w *pipeline.Worker
	ready := func() bool { return true }
	if *brokers != "" {
		c.Brokers = strings.Split(*brokers, ",")
		if w, err = pipeline.NewWorker(*c, p); err != nil {
			return err
		}
		ready = w.Ready
	}
	log.Info("serving", "model", p.Name(), "tasks", p.Tasks(), "max_len", p.MaxLen(), "truncate", pf.truncate, "kafka", *brokers != "", "api", af.addr, "cpu_tuning", bf.tuningFrom, "cpu_blocking", bf.blocking())

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	// The batcher outlives both sources: on shutdown it answers what they
	// have queued until each has drained.
	batchCtx, stopBatch := context.WithCancel(context.Background())
	batchDone := make(chan struct{})
	go func() {
		defer close(batchDone)
		batcher.Run(batchCtx)
	}()
	defer func() {
		stopBatch()
		<-batchDone
	}()
	if *httpAddr != "" {
		ln, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			return fmt.Errorf("--http %s: %w", *httpAddr, err)
		}
		var h http.Handler = pipeline.OpsHandler(reg, ready)
		if *profile {
			h = withProfiles(h)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				log.Error("operations endpoint", "err", err)
			}
		}()
		defer srv.Close()
		log.Info("operations endpoint", "addr", ln.Addr().String())
	}
	var apiSrv *http.Server
	if af.addr != "" {
		var draining atomic.Bool
		h, err := api.New(api.Options{
			Model: p, Batcher: batcher, MaxBodyBytes: af.maxBody, MaxInputs: af.maxInputs, APIKey: key,
			Gatherer: reg, Registerer: reg, Logger: log, Version: buildVersion(), DType: bf.dtype, Tracer: tracer,
			Healthy: func() error {
				if draining.Load() {
					return errors.New("shutting down")
				}
				return nil
			},
		})
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", af.addr)
		if err != nil {
			return fmt.Errorf("--api %s: %w", af.addr, err)
		}
		apiSrv = &http.Server{Handler: h, TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second}
		apiSrv.RegisterOnShutdown(func() { draining.Store(true) })
		go func() {
			var err error
			if tlsCfg != nil {
				err = apiSrv.ServeTLS(ln, "", "")
			} else {
				err = apiSrv.Serve(ln)
			}
			if !errors.Is(err, http.ErrServerClosed) {
				log.Error("API listener", "err", err)
			}
		}()
		log.Info("HTTP API", "addr", ln.Addr().String(), "tls", tlsCfg != nil, "mutual_tls", tlsCfg != nil && tlsCfg.ClientCAs != nil, "api_key", key != "")
	}

	// Both sources drain at once: the worker answers and commits what it
	// consumed, the API answers the requests it accepted and refuses new
	// connections; then the batcher stops.
	var wg sync.WaitGroup
	var runErr error
	if w != nil {
		wg.Go(func() { runErr = w.Run(ctx) })
	}
	if apiSrv != nil {
		wg.Go(func() {
			<-ctx.Done()
			dctx, cancel := context.WithTimeout(context.Background(), c.DrainTimeout)
			defer cancel()
			if err := apiSrv.Shutdown(dctx); err != nil {
				log.Warn("the API did not drain within the drain timeout; closing its connections", "err", err)
				_ = apiSrv.Close()
			}
		})
	}
	wg.Wait()
	// Every span has ended: the sources have drained.
	flushTracer(tracer, log)
	log.Info("stopped")
	return runErr
}

// tracingFlags are the flags of the span exporter, shared by serve and
// demo; the OpenTelemetry variables fill in what they leave out.
type tracingFlags struct{ endpoint, compression string }

func (t *tracingFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.endpoint, "otlp-endpoint", "", "OpenTelemetry collector base URL (http://HOST:4318): export a span per request and per batch over OTLP/HTTP to its /v1/traces (default: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT; none: no tracing)")
	fs.StringVar(&t.compression, "otlp-compression", "", "compression of the span exports: gzip or none (default: OTEL_EXPORTER_OTLP_TRACES_COMPRESSION, OTEL_EXPORTER_OTLP_COMPRESSION; else none)")
}

// settings resolves the flags and the environment into the exporter's
// settings; no URL when neither asks for tracing.
func (t *tracingFlags) settings() (trace.Settings, error) {
	return trace.FromEnv(trace.Flags{Endpoint: t.endpoint, Compression: t.compression}, os.Getenv)
}

// tracerFlushTimeout bounds how long a stopping server sends its last
// spans: a collector that is down must not hold up a rolling update.
const tracerFlushTimeout = 5 * time.Second

// flushTracer sends the spans still queued and stops the exporter, once
// every span has ended; nothing without one.
func flushTracer(tracer *trace.Exporter, log *slog.Logger) {
	if tracer == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), tracerFlushTimeout)
	defer cancel()
	if err := tracer.Shutdown(ctx); err != nil {
		log.Warn("the last spans were not all sent", "err", err)
	}
}

// startTracer starts the span exporter that the tracing flags or the
// OpenTelemetry variables ask for (s); nil without either.
func startTracer(s trace.Settings, instanceID, model string, reg prometheus.Registerer, log *slog.Logger) (*trace.Exporter, error) {
	if s.URL == "" {
		return nil, nil
	}
	if instanceID == "" {
		// A dynamic member has no stable name; OpenTelemetry asks only
		// that the id be unique among the service's instances.
		instanceID = fmt.Sprintf("%s-%d", hostname(), os.Getpid())
	}
	o := s.Options()
	o.Resource = s.Resource(
		trace.String("service.name", "bertstream"),
		trace.String("service.instance.id", instanceID),
		trace.String("service.version", buildVersion()),
		trace.String("bertstream.model", model),
	)
	o.Scope, o.ScopeVersion = "github.com/bertstream/bertstream/pipeline", buildVersion()
	o.Logger, o.Metrics = log, trace.NewMetrics(reg)
	e, err := trace.New(o)
	if err != nil {
		return nil, err
	}
	log.Info("tracing", "otlp_url", s.URL, "from", s.From, "headers", len(s.Headers), "compression", s.Compression)
	return e, nil
}

// apiFlags are the flags of the HTTP API.
type apiFlags struct {
	addr                         string
	queue                        int
	maxBody                      int64
	maxInputs                    int
	keyFile                      string
	tlsCert, tlsKey, tlsClientCA string
}

func (a *apiFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.addr, "api", "", `address of the HTTP API, text-embeddings-inference's routes ("": none)`)
	fs.IntVar(&a.queue, "api-queue", 0, "HTTP inputs queued at most; past it requests get 429 (0: 4 x max-batch)")
	fs.Int64Var(&a.maxBody, "api-max-body", 2<<20, "largest HTTP request body in bytes; larger ones get 413")
	fs.IntVar(&a.maxInputs, "api-max-inputs", 32, "texts per HTTP request at most (TEI's max_client_batch_size)")
	fs.StringVar(&a.keyFile, "api-key-file", "", "file holding the API key clients send as Authorization: Bearer KEY (or set BERTSTREAM_API_KEY)")
	fs.StringVar(&a.tlsCert, "api-tls-cert", "", "PEM certificate of the API listener (with --api-tls-key: HTTPS)")
	fs.StringVar(&a.tlsKey, "api-tls-key", "", "PEM key of --api-tls-cert")
	fs.StringVar(&a.tlsClientCA, "api-tls-client-ca", "", "PEM file of the CAs whose client certificates the API requires (mutual TLS)")
}

// security reads the API key and the TLS settings. The key comes from the
// environment or a file, never a flag, so that it shows in no process
// listing; it is never logged.
func (a *apiFlags) security() (string, *tls.Config, error) {
	if a.addr == "" {
		return "", nil, nil
	}
	key := os.Getenv("BERTSTREAM_API_KEY")
	if a.keyFile != "" {
		if key != "" {
			return "", nil, errors.New("the API key is set twice: BERTSTREAM_API_KEY and --api-key-file")
		}
		var err error
		if key, err = api.ReadKey(a.keyFile); err != nil {
			return "", nil, err
		}
	}
	if a.tlsCert == "" && a.tlsKey == "" && a.tlsClientCA == "" {
		return key, nil, nil
	}
	c, err := api.TLSConfig(a.tlsCert, a.tlsKey, a.tlsClientCA)
	return key, c, err
}

// buildVersion is the module version the binary was built from.
func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return bi.Main.Version
	}
	return "unknown"
}
