package trace_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/bertstream/bertstream/pipeline/trace"
)

func TestParseTraceparent(t *testing.T) {
	const (
		tid = "4bf92f3577b34da6a3ce929d0e0e4736"
		sid = "00f067aa0ba902b7"
	)
	for _, c := range []struct {
		in    string
		ok    bool
		flags byte
	}{
		{"00-" + tid + "-" + sid + "-01", true, 0x01},
		{"00-" + tid + "-" + sid + "-00", true, 0x00},
		{"00-" + tid + "-" + sid + "-03", true, 0x03},
		// Reserved flags are cleared.
		{"00-" + tid + "-" + sid + "-ff", true, 0x03},
		// A later version is read as 00 when it starts like one.
		{"01-" + tid + "-" + sid + "-01", true, 0x01},
		{"cc-" + tid + "-" + sid + "-01-what-the-future-holds", true, 0x01},
		{"cc-" + tid + "-" + sid + "-01x", false, 0},
		{"ff-" + tid + "-" + sid + "-01", false, 0},
		{"00-" + tid + "-" + sid + "-01-", false, 0},
		{"00-" + tid + "-" + sid + "-1", false, 0},
		{"00-" + strings.ToUpper(tid) + "-" + sid + "-01", false, 0},
		{"00-" + tid + "-" + strings.ToUpper("00f067aa0ba902bb") + "-01", false, 0},
		{"00-00000000000000000000000000000000-" + sid + "-01", false, 0},
		{"00-" + tid + "-0000000000000000-01", false, 0},
		{"00_" + tid + "-" + sid + "-01", false, 0},
		{"00-" + tid + "_" + sid + "-01", false, 0},
		{"0g-" + tid + "-" + sid + "-01", false, 0},
		{"00-" + tid[:31] + "z-" + sid + "-01", false, 0},
		{"", false, 0},
	} {
		sc, err := trace.ParseTraceparent(c.in)
		if (err == nil) != c.ok {
			t.Errorf("%q: err %v, want ok=%v", c.in, err, c.ok)
			continue
		}
		if !c.ok {
			if !errors.Is(err, trace.ErrTraceparent) {
				t.Errorf("%q: error %v is not ErrTraceparent", c.in, err)
			}
			continue
		}
		if sc.TraceID.String() != tid || sc.SpanID.String() != sid || sc.Flags != c.flags || !sc.Remote {
			t.Errorf("%q: got %s-%s-%02x remote=%v", c.in, sc.TraceID, sc.SpanID, sc.Flags, sc.Remote)
		}
		if want := "00-" + tid + "-" + sid + "-" + string("0123456789abcdef"[c.flags>>4]) + string("0123456789abcdef"[c.flags&15]); sc.Traceparent() != want {
			t.Errorf("%q: written back as %q, want %q", c.in, sc.Traceparent(), want)
		}
	}
}

func TestChildAndRoot(t *testing.T) {
	parent, err := trace.ParseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if err != nil {
		t.Fatal(err)
	}
	parent.State = "k=v"
	c := trace.Child(parent)
	if c.TraceID != parent.TraceID || c.SpanID == parent.SpanID || !c.SpanID.IsValid() || c.Flags != parent.Flags || c.State != "k=v" || c.Remote {
		t.Errorf("child %+v of %+v", c, parent)
	}
	a, b := trace.NewRoot(), trace.NewRoot()
	if !a.IsValid() || !a.Sampled() || a.TraceID == b.TraceID || a.SpanID == b.SpanID {
		t.Errorf("roots %+v and %+v", a, b)
	}
	if back, err := trace.ParseTraceparent(a.Traceparent()); err != nil || back.TraceID != a.TraceID || back.SpanID != a.SpanID || back.Flags != a.Flags {
		t.Errorf("root %s read back as %+v, %v", a.Traceparent(), back, err)
	}
}

func TestValidTracestate(t *testing.T) {
	for in, want := range map[string]bool{
		"":                          true,
		"rojo=00f067aa0ba902b7":     true,
		"congo=t61rcWkgMzE, rojo=1": true,
		"bad=\xff":                  false,
		"bad=\n":                    false,
		strings.Repeat("a", 513):    false,
	} {
		if got := trace.ValidTracestate(in); got != want {
			t.Errorf("ValidTracestate(%q) = %v, want %v", in, got, want)
		}
	}
}

// FuzzParseTraceparent: any header is refused with ErrTraceparent or read
// into a valid context that writes back to a header that reads the same.
func FuzzParseTraceparent(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Add("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
	f.Add("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Add("00-00000000000000000000000000000000-00f067aa0ba902b7-01")
	f.Fuzz(func(t *testing.T, h string) {
		sc, err := trace.ParseTraceparent(h)
		if err != nil {
			if !errors.Is(err, trace.ErrTraceparent) {
				t.Fatalf("%q: error %v is not ErrTraceparent", h, err)
			}
			return
		}
		if !sc.IsValid() {
			t.Fatalf("%q: read as an invalid context %+v", h, sc)
		}
		back, err := trace.ParseTraceparent(sc.Traceparent())
		if err != nil || back != sc {
			t.Fatalf("%q: written as %q, read back as %+v, %v", h, sc.Traceparent(), back, err)
		}
		if h[:2] == "00" && sc.Traceparent() != h[:53]+sc.Traceparent()[53:] {
			t.Fatalf("%q: written back as %q", h, sc.Traceparent())
		}
	})
}
