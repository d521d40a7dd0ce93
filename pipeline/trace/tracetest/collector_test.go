package tracetest

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// errRecorder keeps the errors the collector reports instead of failing
// the test, for the tests of what the collector refuses.
type errRecorder struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *errRecorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// take returns the errors reported since the last take.
func (r *errRecorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	errs := r.errs
	r.errs = nil
	return errs
}

func export(t testing.TB, names ...string) []byte {
	t.Helper()
	var spans []*tracepb.Span
	for _, n := range names {
		spans = append(spans, &tracepb.Span{Name: n, TraceId: bytes.Repeat([]byte{1}, 16), SpanId: bytes.Repeat([]byte{2}, 8)})
	}
	b, err := proto.Marshal(&tracepb.TracesData{ResourceSpans: []*tracepb.ResourceSpans{{ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}}}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestContentEncoding: a gzipped export is taken when its Content-Encoding
// says gzip; a body that does not gunzip, and an encoding other than gzip
// or none, get 400 and are reported as errors of the test.
func TestContentEncoding(t *testing.T) {
	rec := &errRecorder{TB: t}
	c := New(rec)
	post := func(encoding string, body []byte) int {
		req, err := http.NewRequest(http.MethodPost, c.URL(), bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-protobuf")
		if encoding != "" {
			req.Header.Set("Content-Encoding", encoding)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	body := export(t, "a", "b")
	if code := post("gzip", gzipped(t, body)); code != http.StatusOK {
		t.Errorf("a gzipped export: %d", code)
	}
	if code := post("", body); code != http.StatusOK {
		t.Errorf("a plain export: %d", code)
	}
	if n, errs := len(Named(c.Spans(), "a")), rec.take(); n != 2 || len(errs) != 0 {
		t.Fatalf("%d spans a, errors %q: want 2 and none", n, errs)
	}
	truncated := gzipped(t, body)
	truncated = truncated[:len(truncated)-5]
	for _, bad := range []struct {
		encoding string
		body     []byte
		says     string
	}{
		{"gzip", body, "gunzipping"},
		{"gzip", truncated, "gunzipping"},
		{"br", body, `Content-Encoding "br"`},
	} {
		if code := post(bad.encoding, bad.body); code != http.StatusBadRequest {
			t.Errorf("%s body of %d bytes: %d, want 400", bad.encoding, len(bad.body), code)
		}
		if errs := rec.take(); len(errs) != 1 || !strings.Contains(errs[0], bad.says) {
			t.Errorf("%s body of %d bytes: errors %q, want one saying %q", bad.encoding, len(bad.body), errs, bad.says)
		}
	}
	if n := len(c.Spans()); n != 4 {
		t.Errorf("%d spans after the refusals, want the 4 taken before", n)
	}
}

// FuzzDecode: whatever the bytes, decode returns spans or an error, never
// a panic; and gzipped, the same bytes decode to the same spans, or fail
// as they fail plain.
func FuzzDecode(f *testing.F) {
	body := export(f, "a")
	f.Add(body)
	f.Add([]byte{})
	f.Add(gzipped(f, body))
	f.Add([]byte{0x1f, 0x8b, 0x08, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		// As an untrusted gzip body: only no panic to check.
		_, _ = decode("gzip", b)
		plain, perr := decode("", b)
		zipped, zerr := decode("gzip", gzipped(t, b))
		if (perr == nil) != (zerr == nil) {
			t.Fatalf("%x: plain %v, gzipped %v", b, perr, zerr)
		}
		if perr == nil && !proto.Equal(plain, zipped) {
			t.Fatalf("%x: gzipped decodes to %v, plain to %v", b, zipped, plain)
		}
	})
}
