// Package trace gives the pipeline OpenTelemetry traces without the
// OpenTelemetry SDK: W3C trace context (the traceparent and tracestate
// headers) parsed and written, spans as plain values, and an Exporter
// that sends them to a collector over OTLP/HTTP (protobuf), in the
// background and within bounded memory, so that tracing never holds up an
// answer. The wire types are the OTLP project's generated ones
// (go.opentelemetry.io/proto/otlp); the SDK's API, samplers and
// processors are left out to keep the serving binary lean.
//
// Settings reads the standard OTEL_EXPORTER_OTLP_* and OTEL_BSP_*
// environment variables; tracetest holds an in-process collector for
// tests.
package trace

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"unicode/utf8"
)

// TraceID identifies a trace; the zero value is invalid.
type TraceID [16]byte

// SpanID identifies a span within its trace; the zero value is invalid
// (and, as a parent, means none).
type SpanID [8]byte

func (t TraceID) String() string { return hex.EncodeToString(t[:]) }
func (s SpanID) String() string  { return hex.EncodeToString(s[:]) }

// IsValid reports whether t is not all zeros.
func (t TraceID) IsValid() bool { return t != TraceID{} }

// IsValid reports whether s is not all zeros.
func (s SpanID) IsValid() bool { return s != SpanID{} }

// The trace flags this package knows: W3C Trace Context level 1's
// sampled, and level 2's random (the trace id's low 7 bytes are random).
// Other bits are reserved: they are cleared, as level 1 requires of
// whoever forwards a traceparent.
const (
	FlagSampled byte = 0x01
	FlagRandom  byte = 0x02
	knownFlags       = FlagSampled | FlagRandom
)

// SpanContext is what identifies a span across process boundaries: what
// a traceparent header carries, plus the tracestate. Remote marks a
// context that came from a header rather than from a span of this process.
type SpanContext struct {
	TraceID TraceID
	SpanID  SpanID
	Flags   byte
	// State is the tracestate header, as received; only a valid one
	// (ValidTracestate) is kept.
	State  string
	Remote bool
}

// IsValid reports whether both ids are set.
func (sc SpanContext) IsValid() bool { return sc.TraceID.IsValid() && sc.SpanID.IsValid() }

// Sampled reports whether the span is recorded: a caller that did not
// record its span asks its callees not to record theirs either.
func (sc SpanContext) Sampled() bool { return sc.Flags&FlagSampled != 0 }

// Traceparent is sc as a version 00 traceparent header.
func (sc SpanContext) Traceparent() string {
	var b [55]byte
	b[0], b[1], b[2] = '0', '0', '-'
	hex.Encode(b[3:35], sc.TraceID[:])
	b[35] = '-'
	hex.Encode(b[36:52], sc.SpanID[:])
	b[52] = '-'
	hex.Encode(b[53:55], []byte{sc.Flags})
	return string(b[:])
}

// NewRoot starts a trace: fresh random ids, sampled (this process decides
// to record the traces it starts).
func NewRoot() SpanContext {
	var t TraceID
	for !t.IsValid() {
		putUint64(t[:8], rand.Uint64())
		putUint64(t[8:], rand.Uint64())
	}
	return SpanContext{TraceID: t, SpanID: newSpanID(), Flags: FlagSampled | FlagRandom}
}

// Child is a new span of parent's trace, with parent's flags and state:
// the span that this process records under a caller's span.
func Child(parent SpanContext) SpanContext {
	return SpanContext{TraceID: parent.TraceID, SpanID: newSpanID(), Flags: parent.Flags, State: parent.State}
}

func newSpanID() SpanID {
	var s SpanID
	for !s.IsValid() {
		putUint64(s[:], rand.Uint64())
	}
	return s
}

func putUint64(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (56 - 8*i))
	}
}

// ErrTraceparent is the error of ParseTraceparent.
var ErrTraceparent = errors.New("invalid traceparent")

// ParseTraceparent reads a W3C traceparent header: version-traceid-
// parentid-flags in lowercase hex. A version above 00 is read as 00 when
// its first four fields have 00's shape, as the recommendation asks, so
// that a newer client's traces are still followed; version ff, ids of
// all zeros, and anything else malformed are refused. The context is
// Remote, and its flags keep only the bits this package knows.
func ParseTraceparent(h string) (SpanContext, error) {
	var sc SpanContext
	bad := func(format string, args ...any) (SpanContext, error) {
		return SpanContext{}, fmt.Errorf("%w %q: %s", ErrTraceparent, truncate(h), fmt.Sprintf(format, args...))
	}
	if len(h) < 55 {
		return bad("%d characters, want 55", len(h))
	}
	var v [1]byte
	if !lowerHex(h[0:2]) || h[2] != '-' {
		return bad("the version is not two lowercase hex digits and a dash")
	}
	_, _ = hex.Decode(v[:], []byte(h[0:2]))
	switch {
	case v[0] == 0xff:
		return bad("version ff is forbidden")
	case v[0] == 0 && len(h) != 55:
		return bad("%d characters, version 00 has 55", len(h))
	case len(h) > 55 && h[55] != '-':
		return bad("a field of version %s runs on past its length", h[0:2])
	}
	if h[35] != '-' || h[52] != '-' {
		return bad("the fields are not separated by dashes at 35 and 52")
	}
	if !lowerHex(h[3:35]) || !lowerHex(h[36:52]) || !lowerHex(h[53:55]) {
		return bad("the ids and flags must be lowercase hex")
	}
	_, _ = hex.Decode(sc.TraceID[:], []byte(h[3:35]))
	_, _ = hex.Decode(sc.SpanID[:], []byte(h[36:52]))
	var f [1]byte
	_, _ = hex.Decode(f[:], []byte(h[53:55]))
	if !sc.TraceID.IsValid() {
		return bad("the trace id is all zeros")
	}
	if !sc.SpanID.IsValid() {
		return bad("the parent id is all zeros")
	}
	sc.Flags = f[0] & knownFlags
	sc.Remote = true
	return sc, nil
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// truncate keeps an untrusted header short in an error message.
func truncate(s string) string {
	if len(s) <= 64 {
		return s
	}
	n := 64
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

// maxTracestate is the longest tracestate kept: W3C asks that 512
// characters at least be propagated, and allows cutting longer ones.
const maxTracestate = 512

// ValidTracestate reports whether h may be carried as a tracestate: at
// most 512 printable ASCII characters, the character set of W3C's
// list-members and their separators. It does not check each member's
// grammar: the value is passed on, never interpreted, and this check is
// what keeps an export valid (OTLP strings must be UTF-8).
func ValidTracestate(h string) bool {
	if len(h) > maxTracestate {
		return false
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

type ctxKey struct{}

// Pending is a span under way in another goroutine's hands: the HTTP
// API's request span, which the batcher links to the batches that answer
// it. Its context is fixed; links may be added while it is open.
type Pending struct {
	Context SpanContext
	// Parent is the caller's span, from its traceparent.
	Parent SpanContext

	mu    sync.Mutex
	links []Link
}

// maxPendingLinks bounds the batches one request span records: an HTTP
// request holds at most a few dozen inputs, each answered in one batch.
const maxPendingLinks = 64

// AddLink records that the span relates to sc (a batch that answered
// it), once per span; past maxPendingLinks links, further ones are
// dropped.
func (p *Pending) AddLink(sc SpanContext) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.links) >= maxPendingLinks || slices.ContainsFunc(p.links, func(l Link) bool { return l.Context.SpanID == sc.SpanID }) {
		return
	}
	p.links = append(p.links, Link{Context: sc})
}

// Links returns the links added so far.
func (p *Pending) Links() []Link {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.links)
}

// WithPending returns ctx carrying p.
func WithPending(ctx context.Context, p *Pending) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// PendingFrom returns the pending span ctx carries, or nil.
func PendingFrom(ctx context.Context) *Pending {
	p, _ := ctx.Value(ctxKey{}).(*Pending)
	return p
}
