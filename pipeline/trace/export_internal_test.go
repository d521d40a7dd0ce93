package trace

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// partialSuccess is a collector's answer that rejects n spans.
func partialSuccess(n int64, msg string) []byte {
	var ps []byte
	ps = protowire.AppendTag(ps, 1, protowire.VarintType)
	ps = protowire.AppendVarint(ps, uint64(n))
	ps = protowire.AppendTag(ps, 2, protowire.BytesType)
	ps = protowire.AppendString(ps, msg)
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	return protowire.AppendBytes(b, ps)
}

func TestDecodePartialSuccess(t *testing.T) {
	n, msg, err := decodePartialSuccess(partialSuccess(3, "too old"))
	if err != nil || n != 3 || msg != "too old" {
		t.Errorf("got %d %q %v", n, msg, err)
	}
	if n, _, err := decodePartialSuccess(nil); err != nil || n != 0 {
		t.Errorf("empty answer: %d %v", n, err)
	}
	if _, _, err := decodePartialSuccess([]byte{0x0a, 0x05, 0x08}); err == nil {
		t.Error("a truncated answer decoded")
	}
}

// TestPartialSuccess: spans the collector rejects from an accepted batch
// are counted as dropped, the others as exported.
func TestPartialSuccess(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(partialSuccess(2, "too old"))
	}))
	defer srv.Close()
	m := NewMetrics(prometheus.NewRegistry())
	e, err := New(Options{URL: srv.URL, Metrics: m, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		e.Record(&Span{Context: NewRoot(), Name: "s"})
	}
	if err := e.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	var ex, rej dto.Metric
	_ = m.Exported.Write(&ex)
	_ = m.Dropped.WithLabelValues(DropRejected).Write(&rej)
	if ex.GetCounter().GetValue() != 3 || rej.GetCounter().GetValue() != 2 {
		t.Errorf("exported %v, rejected %v; want 3 and 2", ex.GetCounter().GetValue(), rej.GetCounter().GetValue())
	}
}

func TestRetryAfterHeader(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for h, want := range map[string]time.Duration{
		"":                              0,
		"2":                             2 * time.Second,
		"0":                             0,
		"-1":                            0,
		"soon":                          0,
		"Fri, 02 Jan 2026 03:04:15 GMT": 10 * time.Second,
		"Fri, 02 Jan 2026 03:04:00 GMT": 0,
		"99999999999":                   24 * time.Hour,
	} {
		if got := retryAfter(h, now); got != want {
			t.Errorf("Retry-After %q: %v, want %v", h, got, want)
		}
	}
}

func TestStatusMessage(t *testing.T) {
	var st []byte
	st = protowire.AppendTag(st, 1, protowire.VarintType)
	st = protowire.AppendVarint(st, 3)
	st = protowire.AppendTag(st, 2, protowire.BytesType)
	st = protowire.AppendString(st, "bad span")
	if got := statusMessage("application/x-protobuf", st); got != "bad span" {
		t.Errorf("protobuf status: %q", got)
	}
	if got := statusMessage("text/plain", []byte(" upstream down \n")); got != "upstream down" {
		t.Errorf("text: %q", got)
	}
}

// TestCompressReusesWriter: gzipping a batch allocates its output, not a
// compressor (800 KB of tables) per batch; what it writes gunzips to the
// batch.
func TestCompressReusesWriter(t *testing.T) {
	e, err := New(Options{URL: "http://c:4318/v1/traces", Compression: CompressionGzip, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = e.Shutdown(t.Context()) }()
	batch := make([]*Span, 64)
	for i := range batch {
		batch[i] = &Span{Context: NewRoot(), Name: "process requests", Attrs: []Attr{String("messaging.system", "kafka"), Int("messaging.kafka.offset", int64(i))}}
	}
	body, err := proto.Marshal(e.encode(batch))
	if err != nil {
		t.Fatal(err)
	}
	gz, err := e.compress(body)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	if back, err := io.ReadAll(zr); err != nil || !bytes.Equal(back, body) {
		t.Fatalf("the gzipped batch reads back as %d bytes (%v), want the %d encoded", len(back), err, len(body))
	}
	const runs = 20
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		if _, err := e.compress(body); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > 64<<10 {
		t.Errorf("%d bytes allocated per compressed batch of %d bytes: a compressor per batch", per, len(body))
	}
}

// FuzzDecodeResponse: a collector's answer, whatever its bytes, decodes to
// a count of at least zero and a valid UTF-8 message, or an error; never
// a panic.
func FuzzDecodeResponse(f *testing.F) {
	f.Add(partialSuccess(3, "too old"))
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x05, 0x08})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, msg, err := decodePartialSuccess(b)
		if err == nil && (n < 0 || !validUTF8(msg)) {
			t.Fatalf("%x: %d %q", b, n, msg)
		}
		if s := statusMessage("application/x-protobuf", b); !validUTF8(s) || len(s) > 67 {
			t.Fatalf("%x: status message %q", b, s)
		}
	})
}

func validUTF8(s string) bool { return valid(s) == s }

// BenchmarkEncode is the exporter's background work per span: a request
// span as the pipeline makes it, encoded to OTLP protobuf in a batch of
// 512, and gzipped in the gzip case; cpu_ns/span is the process's CPU
// time per span, body_bytes/span what is sent of it.
func BenchmarkEncode(b *testing.B) {
	parent := NewRoot()
	batch := make([]*Span, 512)
	for i := range batch {
		now := time.Now()
		batch[i] = &Span{
			Context: Child(parent), Parent: parent.SpanID, ParentRemote: true, Name: "process requests", Kind: KindConsumer,
			Start: now, End: now.Add(time.Millisecond),
			Attrs: []Attr{
				String("messaging.system", "kafka"), String("messaging.operation.type", "process"),
				String("messaging.destination.name", "requests"), String("messaging.consumer.group.name", "g"),
				String("messaging.destination.partition.id", "3"), Int("messaging.kafka.offset", int64(12345+i)),
				String("bertstream.outcome", "answered"), String("bertstream.request.id", "r1"), String("bertstream.task", "classify"),
			},
			Links: []Link{{Context: NewRoot()}},
		}
	}
	for _, c := range []string{CompressionNone, CompressionGzip} {
		b.Run(c, func(b *testing.B) {
			e, err := New(Options{URL: "http://c:4318/v1/traces", Compression: c, Interval: time.Hour, Resource: []Attr{String("service.name", "bertstream")}})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = e.Shutdown(b.Context()) }()
			b.ReportAllocs()
			var body []byte
			var ru0, ru1 syscall.Rusage
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			for b.Loop() {
				if body, err = proto.Marshal(e.encode(batch)); err != nil {
					b.Fatal(err)
				}
				if body, err = e.compress(body); err != nil {
					b.Fatal(err)
				}
			}
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			cpu := ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()
			b.ReportMetric(float64(cpu)/float64(b.N*len(batch)), "cpu_ns/span")
			b.ReportMetric(float64(len(body))/float64(len(batch)), "body_bytes/span")
		})
	}
}
