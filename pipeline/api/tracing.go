package api

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/bertstream/bertstream/pipeline/trace"
)

// startSpan opens the span of a request that comes with a valid, sampled
// traceparent, or returns nil: a client that does not trace its request
// gets no span of ours (the Kafka worker, by contrast, starts a trace for
// every request, since its answers carry the trace on).
func (s *Server) startSpan(r *http.Request) *trace.Pending {
	if s.o.Tracer == nil {
		return nil
	}
	tps := r.Header.Values("Traceparent")
	if len(tps) != 1 {
		// W3C: several traceparents are none valid.
		return nil
	}
	parent, err := trace.ParseTraceparent(tps[0])
	if err != nil || !parent.Sampled() {
		return nil
	}
	if ts := r.Header.Values("Tracestate"); len(ts) > 0 {
		// W3C: several tracestate headers are one list.
		if st := strings.Join(ts, ","); trace.ValidTracestate(st) {
			parent.State = st
		}
	}
	return &trace.Pending{Context: trace.Child(parent), Parent: parent}
}

// endSpan records a request's span, named by its route as OpenTelemetry's
// HTTP conventions name server spans; a 5xx answer is an error of the
// server's.
func (s *Server) endSpan(sp *trace.Pending, r *http.Request, pattern, route string, code int, t0 time.Time) {
	if sp == nil {
		return
	}
	span := &trace.Span{
		Context:      sp.Context,
		Parent:       sp.Parent.SpanID,
		ParentRemote: true,
		Name:         pattern,
		Kind:         trace.KindServer,
		Start:        t0,
		End:          time.Now(),
		Attrs: []trace.Attr{
			trace.String("http.request.method", r.Method),
			trace.String("http.route", route),
			trace.String("url.path", r.URL.Path),
			trace.Int("http.response.status_code", int64(code)),
		},
		Links: sp.Links(),
	}
	if code >= 500 {
		span.Status, span.Message = trace.StatusError, http.StatusText(code)
		span.Attrs = append(span.Attrs, trace.String("error.type", strconv.Itoa(code)))
	}
	s.o.Tracer.Record(span)
}
