// Package api serves a model over HTTP with the routes, bodies and error
// shapes of Hugging Face's text-embeddings-inference (TEI), so that TEI's
// clients (LangChain, LlamaIndex, Haystack, its own) work unchanged:
// /embed, /predict, /rerank, /tokenize, /info, /health; and, under routes
// of bertstream's with the same conventions, the tasks beyond TEI:
// /fill-mask, /ner, /nsp. The requests join the pipeline's batches
// (pipeline.Batcher), beside the Kafka worker's when one shares it.
//
// The OpenAPI document of the routes is openapi.json, served at
// /openapi.json.
package api

import (
	"context"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bertstream/bertstream/bert/task"
	"github.com/bertstream/bertstream/pipeline"
	"github.com/bertstream/bertstream/pipeline/trace"
)

//go:embed openapi.json
var openAPI []byte

// Model is what the API needs of a model beyond the task contract: its
// limits, labels and tokenizer. bert.Predictor is one.
type Model interface {
	task.Predictor
	// MaxLen is the token limit per sequence, specials included.
	MaxLen() int
	// Truncates says whether texts over MaxLen are cut (else refused).
	Truncates() bool
	// Labels are the classifier's labels in the order of its logits.
	Labels() []string
	// EmbedDefaults are embed's pooling and normalisation.
	EmbedDefaults() (pooling string, normalize bool)
	// Tokens splits a text as the model reads it.
	Tokens(text string, special bool) []task.Token
}

// Options configure a Server. The zero values of the limits take the
// defaults documented on each.
type Options struct {
	Model   Model
	Batcher *pipeline.Batcher
	// MaxBodyBytes bounds a request body; a larger one is refused (413)
	// after reading no more than the limit. Default 2 MiB.
	MaxBodyBytes int64
	// MaxInputs bounds the texts of one request (TEI's
	// max_client_batch_size); default 32.
	MaxInputs int
	// APIKey, when set, is required of every route but /health as
	// "Authorization: Bearer KEY".
	APIKey string
	// Gatherer, when set, is served at /metrics; Registerer, when set,
	// receives the API's own metrics.
	Gatherer   prometheus.Gatherer
	Registerer prometheus.Registerer
	// Healthy, when set, is asked by /health; nil means healthy.
	Healthy func() error
	Logger  *slog.Logger
	// Version is reported by /info, and DType (the model's compute
	// dtype) as its model_dtype; default "float32".
	Version string
	DType   string
	// Tracer, when set, receives a span for each request that comes
	// with a sampled W3C traceparent header, linked to the batches that
	// answer it.
	Tracer *trace.Exporter
}

// Server is the HTTP API; it is an http.Handler.
type Server struct {
	o        Options
	mux      *http.ServeMux
	tasks    map[string]bool
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// New checks o and builds the server's routes.
func New(o Options) (*Server, error) {
	if o.Model == nil || o.Batcher == nil {
		return nil, errors.New("api: a model and a batcher are required")
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 2 << 20
	}
	if o.MaxInputs <= 0 {
		o.MaxInputs = 32
	}
	if q := o.Batcher.Config().MaxQueue; o.MaxInputs > q {
		return nil, fmt.Errorf("api: at most %d inputs per request, but the queue holds %d: such a request could never be served", o.MaxInputs, q)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := &Server{o: o, mux: http.NewServeMux(), tasks: map[string]bool{}}
	for _, t := range o.Model.Tasks() {
		s.tasks[t] = true
	}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "bertstream", Name: "http_requests_total", Help: "HTTP API requests, by route and status code."}, []string{"route", "code"})
	s.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "bertstream", Name: "http_request_duration_seconds", Help: "HTTP API request time, from the request's headers to its answer, by route.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"route"})
	if o.Registerer != nil {
		if err := o.Registerer.Register(s.requests); err != nil {
			return nil, fmt.Errorf("api metrics: %w", err)
		}
		if err := o.Registerer.Register(s.duration); err != nil {
			return nil, fmt.Errorf("api metrics: %w", err)
		}
	}
	s.route("POST /embed", s.embed)
	s.route("POST /predict", s.predict)
	s.route("POST /rerank", s.rerank)
	s.route("POST /tokenize", s.tokenize)
	s.route("POST /fill-mask", s.fillMask)
	s.route("POST /ner", s.ner)
	s.route("POST /nsp", s.nsp)
	s.route("GET /info", s.info)
	s.route("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) error {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openAPI)
		return nil
	})
	s.mux.HandleFunc("GET /health", s.health)
	if o.Gatherer != nil {
		s.mux.Handle("GET /metrics", s.auth(promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{})))
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &Error{Status: http.StatusNotFound, Type: "not_found", Msg: fmt.Sprintf("no route %s %s (see /openapi.json)", r.Method, r.URL.Path)})
	})
	return s, nil
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// route registers a handler behind the key check, with its metrics; a
// handler returns an *Error, which it has not written, or nil once it
// has answered.
func (s *Server) route(pattern string, h func(http.ResponseWriter, *http.Request) error) {
	name := pattern[strings.IndexByte(pattern, ' ')+1:]
	s.mux.Handle(pattern, s.auth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t0 := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		span := s.startSpan(r)
		if span != nil {
			r = r.WithContext(trace.WithPending(r.Context(), span))
		}
		if err := h(sw, r); err != nil {
			var e *Error
			if !errors.As(err, &e) {
				e = &Error{Status: http.StatusInternalServerError, Type: "backend", Msg: err.Error()}
			}
			writeError(sw, e)
		}
		s.requests.WithLabelValues(name, strconv.Itoa(sw.code)).Inc()
		s.duration.WithLabelValues(name).Observe(time.Since(t0).Seconds())
		s.endSpan(span, r, pattern, name, sw.code, t0)
	})))
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// auth refuses a request without the API key before anything else is
// done for it: no body is read and no model time is spent.
func (s *Server) auth(h http.Handler) http.Handler {
	if s.o.APIKey == "" {
		return h
	}
	want := []byte("Bearer " + s.o.APIKey)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="bertstream"`)
			msg := "missing API key: send Authorization: Bearer KEY"
			if len(got) > 0 {
				msg = "wrong API key"
			}
			writeError(w, &Error{Status: http.StatusUnauthorized, Type: "unauthorized", Msg: msg})
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (s *Server) health(w http.ResponseWriter, _ *http.Request) {
	if s.o.Healthy != nil {
		if err := s.o.Healthy(); err != nil {
			writeError(w, &Error{Status: http.StatusServiceUnavailable, Type: "unhealthy", Msg: err.Error()})
			return
		}
	}
	w.WriteHeader(http.StatusOK)
}

// Error is an API error: its status and TEI's {"error", "error_type"}.
type Error struct {
	Status     int
	Type       string
	Msg        string
	RetryAfter int
}

func (e *Error) Error() string { return e.Msg }

func writeError(w http.ResponseWriter, e *Error) {
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	writeJSON(w, e.Status, struct {
		Error string `json:"error"`
		Type  string `json:"error_type"`
	}{e.Msg, e.Type})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":"encoding the answer failed","error_type":"backend"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func invalid(format string, args ...any) *Error {
	return &Error{Status: http.StatusUnprocessableEntity, Type: "validation", Msg: fmt.Sprintf(format, args...)}
}

// decode reads a JSON body into v, reading no more than MaxBodyBytes.
func (s *Server) decode(r *http.Request, v any) error {
	limit := s.o.MaxBodyBytes
	tooLarge := &Error{Status: http.StatusRequestEntityTooLarge, Type: "validation", Msg: fmt.Sprintf("request body over the limit of %d bytes", limit)}
	if r.ContentLength > limit {
		return tooLarge
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return invalid("reading the request body: %v", err)
	}
	if int64(len(body)) > limit {
		return tooLarge
	}
	// encoding/json would replace invalid UTF-8 with U+FFFD and answer
	// for a text the client did not send.
	if !utf8.Valid(body) {
		return invalid("request body is not valid UTF-8")
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	if err := dec.Decode(v); err != nil {
		return invalid("malformed JSON body: %v", err)
	}
	if dec.More() {
		return invalid("trailing data after the JSON body at offset %d", dec.InputOffset())
	}
	return nil
}

// need refuses a task the model has no head for.
func (s *Server) need(t string) error {
	if !s.tasks[t] {
		return invalid("the model %s has no %s head (it serves %s)", s.o.Model.Name(), t, strings.Join(s.o.Model.Tasks(), ", "))
	}
	return nil
}

// checkText refuses an empty text and, when the request asks for no
// truncation, one over the model's limit, as TEI does (413).
func (s *Server) checkText(what, text, pair string, hasPair, truncate bool) error {
	if strings.TrimSpace(text) == "" || hasPair && strings.TrimSpace(pair) == "" {
		return invalid("%s is empty", what)
	}
	if truncate {
		return nil
	}
	n := len(s.o.Model.Tokens(text, true))
	if hasPair {
		n += len(s.o.Model.Tokens(pair, false)) + 1
	}
	if max := s.o.Model.MaxLen(); n > max {
		return &Error{Status: http.StatusRequestEntityTooLarge, Type: "validation", Msg: fmt.Sprintf("%s must have less than %d tokens. Given: %d", what, max+1, n)}
	}
	return nil
}

// truncation resolves a request's "truncate": absent, the server's
// setting; true on a server that refuses long texts is refused.
func (s *Server) truncation(t *bool) (bool, error) {
	if t == nil {
		return s.o.Model.Truncates(), nil
	}
	if *t && !s.o.Model.Truncates() {
		return false, invalid("truncate: this server refuses texts over %d tokens (started with --truncate=false)", s.o.Model.MaxLen())
	}
	return *t, nil
}

// run has the batcher answer reqs and turns what refuses them into API
// errors: the queue full 429, a request's fault 422 (413 when too long),
// the model's 424.
func (s *Server) run(ctx context.Context, reqs []task.Request) ([]any, error) {
	res, err := s.o.Batcher.Submit(ctx, reqs)
	switch {
	case errors.Is(err, pipeline.ErrQueueFull):
		return nil, &Error{Status: http.StatusTooManyRequests, Type: "overloaded", Msg: "Model is overloaded: " + err.Error(), RetryAfter: 1}
	case errors.Is(err, pipeline.ErrStopped):
		return nil, &Error{Status: http.StatusServiceUnavailable, Type: "unhealthy", Msg: "the server is shutting down"}
	case err != nil:
		// The client left; nobody reads the answer.
		return nil, &Error{Status: 499, Type: "cancelled", Msg: err.Error()}
	}
	vals := make([]any, len(res))
	for i, r := range res {
		if r.Err == nil {
			vals[i] = r.Value
			continue
		}
		prefix := ""
		if len(res) > 1 {
			prefix = fmt.Sprintf("input %d: ", i)
		}
		switch {
		case errors.Is(r.Err, task.ErrTooLong):
			return nil, &Error{Status: http.StatusRequestEntityTooLarge, Type: "validation", Msg: prefix + r.Err.Error()}
		case errors.Is(r.Err, task.ErrBadRequest):
			return nil, invalid("%s%v", prefix, r.Err)
		case errors.Is(r.Err, context.Canceled), errors.Is(r.Err, context.DeadlineExceeded):
			return nil, &Error{Status: 499, Type: "cancelled", Msg: r.Err.Error()}
		}
		return nil, &Error{Status: http.StatusFailedDependency, Type: "backend", Msg: "Inference failed: " + prefix + r.Err.Error()}
	}
	return vals, nil
}

// as converts a task's result to the JSON shape dst describes: the API
// knows results only through their JSON form, the pipeline's schema.
func as(v any, dst any) error {
	b, err := json.Marshal(v)
	if err == nil {
		err = json.Unmarshal(b, dst)
	}
	if err != nil {
		return &Error{Status: http.StatusFailedDependency, Type: "backend", Msg: fmt.Sprintf("the model's answer has an unexpected shape: %v", err)}
	}
	return nil
}
