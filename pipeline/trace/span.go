package trace

import (
	"math"
	"time"
)

// Kind is a span's role, as OTLP's SpanKind numbers it.
type Kind int32

// The span kinds the pipeline uses.
const (
	KindInternal Kind = 1
	KindServer   Kind = 2
	KindConsumer Kind = 5
)

// StatusCode is a span's outcome as OTLP's Status numbers it: unset for
// a span that went as it should, Error for one that failed.
type StatusCode int32

// The status codes.
const (
	StatusUnset StatusCode = 0
	StatusError StatusCode = 2
)

// Span is one finished span, as the Exporter takes it: plain values, put
// together on the answer path and encoded to OTLP in the background.
type Span struct {
	Context SpanContext
	// Parent is the parent span's id in the same trace; zero for a root.
	Parent SpanID
	// ParentRemote marks a parent from another process (a traceparent
	// header).
	ParentRemote bool
	Name         string
	Kind         Kind
	Start, End   time.Time
	Attrs        []Attr
	Links        []Link
	Status       StatusCode
	// Message says why the span failed, with StatusError.
	Message string
}

// Link relates a span to a span of another trace, or to one that is not
// its parent: a batch to the requests it answered, a request to its
// batch.
type Link struct {
	Context SpanContext
	Attrs   []Attr
}

// Attr is a span or resource attribute: a key and a string, integer,
// float or bool value.
type Attr struct {
	Key  string
	kind attrKind
	s    string
	// n holds an integer, a bool (0 or 1) or a float's bits.
	n int64
}

type attrKind uint8

const (
	attrString attrKind = iota
	attrInt
	attrFloat
	attrBool
)

// String is a string attribute.
func String(k, v string) Attr { return Attr{Key: k, kind: attrString, s: v} }

// Int is an integer attribute.
func Int(k string, v int64) Attr { return Attr{Key: k, kind: attrInt, n: v} }

// Float is a floating-point attribute.
func Float(k string, v float64) Attr {
	return Attr{Key: k, kind: attrFloat, n: int64(math.Float64bits(v))}
}

// Bool is a boolean attribute.
func Bool(k string, v bool) Attr {
	a := Attr{Key: k, kind: attrBool}
	if v {
		a.n = 1
	}
	return a
}
