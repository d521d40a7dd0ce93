package trace

import (
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protowire"
)

// OTLP's span flags beside the W3C trace flags (its SpanFlags enum): the
// parent, or a link's span, is from another process.
const (
	flagHasIsRemote = 0x100
	flagIsRemote    = 0x200
)

// encode is the body of an export.
//
// OTLP/HTTP's body is an ExportTraceServiceRequest, whose only field is
// "repeated ResourceSpans resource_spans = 1", the same as TracesData's:
// the two are one message on the wire (the OTLP specification says so of
// TracesData). TracesData lives in the trace package, the request type in
// the collector package, which brings gRPC and its gateway with it.
func (e *Exporter) encode(batch []*Span) *tracepb.TracesData {
	spans := make([]*tracepb.Span, len(batch))
	for i, s := range batch {
		spans[i] = encodeSpan(s)
	}
	return &tracepb.TracesData{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: encodeAttrs(e.o.Resource)},
		ScopeSpans: []*tracepb.ScopeSpans{{
			Scope: &commonpb.InstrumentationScope{Name: valid(e.o.Scope), Version: valid(e.o.ScopeVersion)},
			Spans: spans,
		}},
	}}}
}

func encodeSpan(s *Span) *tracepb.Span {
	p := &tracepb.Span{
		TraceId:           s.Context.TraceID[:],
		SpanId:            s.Context.SpanID[:],
		TraceState:        traceState(s.Context.State),
		Name:              valid(s.Name),
		Kind:              tracepb.Span_SpanKind(s.Kind),
		StartTimeUnixNano: unixNano(s.Start),
		EndTimeUnixNano:   unixNano(s.End),
		Attributes:        encodeAttrs(s.Attrs),
		Flags:             uint32(s.Context.Flags) | flagHasIsRemote,
	}
	if s.Parent.IsValid() {
		p.ParentSpanId = s.Parent[:]
		if s.ParentRemote {
			p.Flags |= flagIsRemote
		}
	}
	if s.Status != StatusUnset {
		p.Status = &tracepb.Status{Code: tracepb.Status_StatusCode(s.Status), Message: valid(s.Message)}
	}
	for _, l := range s.Links {
		f := uint32(l.Context.Flags) | flagHasIsRemote
		if l.Context.Remote {
			f |= flagIsRemote
		}
		p.Links = append(p.Links, &tracepb.Span_Link{
			TraceId:    l.Context.TraceID[:],
			SpanId:     l.Context.SpanID[:],
			TraceState: traceState(l.Context.State),
			Attributes: encodeAttrs(l.Attrs),
			Flags:      f,
		})
	}
	return p
}

func encodeAttrs(as []Attr) []*commonpb.KeyValue {
	if len(as) == 0 {
		return nil
	}
	// One allocation per kind of thing rather than three per attribute:
	// this runs for every attribute of every span.
	kvs := make([]*commonpb.KeyValue, len(as))
	kv := make([]commonpb.KeyValue, len(as))
	vs := make([]commonpb.AnyValue, len(as))
	var strs []commonpb.AnyValue_StringValue
	var ints []commonpb.AnyValue_IntValue
	for i, a := range as {
		switch a.kind {
		case attrInt:
			if ints == nil {
				ints = make([]commonpb.AnyValue_IntValue, 0, len(as))
			}
			ints = append(ints, commonpb.AnyValue_IntValue{IntValue: a.n})
			vs[i].Value = &ints[len(ints)-1]
		case attrFloat:
			vs[i].Value = &commonpb.AnyValue_DoubleValue{DoubleValue: math.Float64frombits(uint64(a.n))}
		case attrBool:
			vs[i].Value = &commonpb.AnyValue_BoolValue{BoolValue: a.n != 0}
		default:
			if strs == nil {
				strs = make([]commonpb.AnyValue_StringValue, 0, len(as))
			}
			strs = append(strs, commonpb.AnyValue_StringValue{StringValue: valid(a.s)})
			vs[i].Value = &strs[len(strs)-1]
		}
		kv[i].Key, kv[i].Value = valid(a.Key), &vs[i]
		kvs[i] = &kv[i]
	}
	return kvs
}

func unixNano(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.UnixNano())
}

// valid makes s valid UTF-8, as protobuf strings must be: one bad string
// (an error message quoting a client's bytes) would fail the whole batch.
func valid(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// traceState is a tracestate as a span may carry it: dropped when not
// valid.
func traceState(s string) string {
	if !ValidTracestate(s) {
		return ""
	}
	return s
}

// decodePartialSuccess reads a collector's ExportTraceServiceResponse:
// how many spans it rejected of an accepted batch, and why. An empty
// answer is full success.
//
//	ExportTraceServiceResponse { ExportTracePartialSuccess partial_success = 1; }
//	ExportTracePartialSuccess { int64 rejected_spans = 1; string error_message = 2; }
func decodePartialSuccess(b []byte) (rejected int64, msg string, err error) {
	err = fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		if num != 1 || typ != protowire.BytesType {
			return nil
		}
		return fields(v, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
			switch {
			case num == 1 && typ == protowire.VarintType:
				rejected = int64(x)
			case num == 2 && typ == protowire.BytesType:
				msg = valid(string(v))
			}
			return nil
		})
	})
	if err != nil {
		return 0, "", fmt.Errorf("OTLP export response: %w", err)
	}
	return max(rejected, 0), msg, nil
}

// statusMessage is what a refusal's body says: the message of an OTLP
// google.rpc.Status (string message = 2), or the start of a text body (a
// proxy's page).
func statusMessage(contentType string, b []byte) string {
	if strings.HasPrefix(contentType, "application/x-protobuf") || strings.HasPrefix(contentType, "application/protobuf") {
		var msg string
		err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
			if num == 2 && typ == protowire.BytesType {
				msg = string(v)
			}
			return nil
		})
		if err == nil {
			return truncate(valid(msg))
		}
	}
	return truncate(strings.TrimSpace(valid(string(b))))
}

// fields calls f for each field of a protobuf message: its number and
// type, and its value, as bytes (length-delimited) or an integer
// (varint, fixed).
func fields(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var (
			v []byte
			x uint64
		)
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var u uint32
			u, n = protowire.ConsumeFixed32(b)
			x = uint64(u)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := f(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}
