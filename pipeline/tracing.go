package pipeline

import (
	"strconv"
	"time"

	"github.com/IBM/sarama"

	"github.com/bertstream/bertstream/pipeline/trace"
)

// With a tracer (Config.Tracer, BatchConfig.Tracer) the worker records
// a span per Kafka request, from its consumption to the acknowledgement
// of its answer or dead letter, in the trace of the request's traceparent
// header (a new trace without a valid one), and the batcher a span per
// model batch, in a trace of its own.
//
// A batch serves requests of many traces, so it can be no request's
// child; the two are linked both ways instead, since Jaeger and Tempo
// show a span's own links and no reverse index: from a request's trace
// one follows its link to the batch (model time, size, the other
// requests), and from a slow batch its links to every request in it.
//
// The answer or dead letter carries the request span as its traceparent
// (W3C: the parent-id a callee sees is the caller's span), so that
// whoever reads it continues the trace under the worker's span. A
// request whose traceparent says it is not sampled gets no span, and its
// headers pass on unchanged, as the caller asked.

// Outcomes of a request span (its bertstream.outcome attribute).
const (
	outcomeAnswered     = "answered"
	outcomeDeadLettered = "dead_lettered"
	// outcomeFailed: the brokers refused the answer; the request is
	// consumed again from the committed offset.
	outcomeFailed = "produce_failed"
	// outcomeAbandoned: the partition moved to another worker, or the
	// session ended, before the answer was produced; it is answered
	// again by the partition's next owner.
	outcomeAbandoned = "abandoned"
)

// itemTrace is a Kafka request's span while it is under way.
type itemTrace struct {
	// span is the request span, zero when it is not recorded.
	span trace.SpanContext
	// parent is the request's valid traceparent, if any.
	parent trace.SpanContext
	// batch is the span of the model batch that answered the request.
	batch trace.SpanContext
}

// startSpan opens the request span of a consumed message.
func (w *Worker) startSpan(it *item) {
	var tp, ts []byte
	for _, h := range it.msg.Headers {
		switch {
		case h == nil:
		case string(h.Key) == HeaderTraceparent:
			if tp != nil {
				// W3C: more than one traceparent is none valid.
				tp = []byte{}
				continue
			}
			tp = h.Value
		case string(h.Key) == HeaderTracestate && ts == nil:
			ts = h.Value
		}
	}
	parent, err := trace.ParseTraceparent(string(tp))
	switch {
	case err != nil:
		it.tr.span = trace.NewRoot()
	case !parent.Sampled():
		return
	default:
		if s := string(ts); trace.ValidTracestate(s) {
			parent.State = s
		}
		it.tr.parent = parent
		it.tr.span = trace.Child(parent)
	}
}

// propagate sets the trace context headers of an answer or dead letter:
// the request span as the parent, where the request's span is recorded.
// A tracestate is kept only with the traceparent it belongs to: W3C asks
// that it be dropped when the traceparent was not valid.
func (it *item) propagate(hs []sarama.RecordHeader) []sarama.RecordHeader {
	if !it.tr.span.IsValid() {
		return hs
	}
	out := make([]sarama.RecordHeader, 0, len(hs)+1)
	for _, h := range hs {
		switch string(h.Key) {
		case HeaderTraceparent:
			continue
		case HeaderTracestate:
			if !it.tr.parent.IsValid() {
				continue
			}
		}
		out = append(out, h)
	}
	return append(out, sarama.RecordHeader{Key: []byte(HeaderTraceparent), Value: []byte(it.tr.span.Traceparent())})
}

// spanAcked ends the request span of an acknowledged answer or dead
// letter.
func (it *item) spanAcked() {
	if it.err != nil {
		it.endSpan(outcomeDeadLettered, nil)
		return
	}
	it.endSpan(outcomeAnswered, nil)
}

// endSpan records the request span, once: how its request ended, and err
// for a produce failure.
func (it *item) endSpan(outcome string, err error) {
	tr := it.w.cfg.Tracer
	if tr == nil || !it.tr.span.IsValid() {
		return
	}
	m := it.msg
	s := &trace.Span{
		Context:      it.tr.span,
		Parent:       it.tr.parent.SpanID,
		ParentRemote: it.tr.parent.IsValid(),
		Name:         "process " + m.Topic,
		Kind:         trace.KindConsumer,
		Start:        it.at,
		End:          time.Now(),
		Attrs: append(make([]trace.Attr, 0, 13),
			trace.String("messaging.system", "kafka"),
			trace.String("messaging.operation.type", "process"),
			trace.String("messaging.destination.name", m.Topic),
			trace.String("messaging.consumer.group.name", it.w.cfg.Group),
			trace.String("messaging.destination.partition.id", strconv.Itoa(int(m.Partition))),
			trace.Int("messaging.kafka.offset", m.Offset),
			trace.String("bertstream.outcome", outcome),
		),
	}
	if it.req.ID != "" {
		s.Attrs = append(s.Attrs, trace.String("bertstream.request.id", it.req.ID), trace.String("bertstream.task", it.req.Task))
	}
	if it.tokens > 0 {
		s.Attrs = append(s.Attrs, trace.Int("bertstream.tokens", int64(it.tokens)))
	}
	if it.tr.batch.IsValid() {
		s.Links = []trace.Link{{Context: it.tr.batch}}
	}
	switch {
	case outcome == outcomeDeadLettered:
		code := string(reasonOf(it.err))
		s.Attrs = append(s.Attrs, trace.String("bertstream.error_code", code), trace.String("error.type", code))
		s.Status, s.Message = trace.StatusError, it.err.Error()
	case err != nil:
		s.Attrs = append(s.Attrs, trace.String("error.type", outcome))
		s.Status, s.Message = trace.StatusError, err.Error()
	}
	it.tr.span = trace.SpanContext{}
	tr.Record(s)
}

// traceBatch records the span of a model batch, from t0 to t1, linked to
// the spans of its requests, and links them back to it.
func (b *Batcher) traceBatch(served []entry, t0, t1 time.Time, tokens int, n map[string]int) {
	tr := b.cfg.Tracer
	if tr == nil {
		return
	}
	sc := trace.NewRoot()
	s := &trace.Span{
		Context: sc,
		Name:    "predict " + b.pred.Name(),
		Kind:    trace.KindInternal,
		Start:   t0,
		End:     t1,
		Attrs: []trace.Attr{
			trace.String("bertstream.model", b.pred.Name()),
			trace.Int("bertstream.batch.size", int64(len(served))),
			trace.Int("bertstream.batch.kafka_requests", int64(n[SourceKafka])),
			trace.Int("bertstream.batch.http_requests", int64(n[SourceHTTP])),
		},
	}
	if b.cfg.MaxTokens > 0 {
		// Requests are sized only when batches have a token budget.
		s.Attrs = append(s.Attrs, trace.Int("bertstream.batch.tokens", int64(tokens)))
	}
	for _, e := range served {
		if it := e.it; it != nil {
			if it.tr.span.IsValid() {
				it.tr.batch = sc
				s.Links = append(s.Links, trace.Link{Context: it.tr.span})
			}
			continue
		}
		if p := trace.PendingFrom(e.c.ctx); p != nil {
			p.AddLink(sc)
			s.Links = append(s.Links, trace.Link{Context: p.Context})
		}
	}
	tr.Record(s)
}
