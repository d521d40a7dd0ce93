package api_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bertstream/bertstream/pipeline"
	"github.com/bertstream/bertstream/pipeline/api"
	"github.com/bertstream/bertstream/pipeline/trace"
	"github.com/bertstream/bertstream/pipeline/trace/tracetest"
)

// TestTracing: a request with a sampled traceparent gets a server span in
// its caller's trace, linked to the batch that answered it and the batch
// back to it; one without, or not sampled, gets none (its batch still
// has its span).
func TestTracing(t *testing.T) {
	col := tracetest.New(t)
	tr, err := trace.New(trace.Options{URL: col.URL(), Metrics: trace.NewMetrics(prometheus.NewRegistry())})
	if err != nil {
		t.Fatal(err)
	}
	p := load(t, tasks+"st-mean", true)
	s := start(t, p, pipeline.BatchConfig{Tracer: tr}, api.Options{Tracer: tr})

	const (
		callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
		callerSpan  = "00f067aa0ba902b7"
	)
	in := map[string]any{"inputs": []string{"one text", "another one"}}
	if code, raw := post(t, s.url+"/embed", in, nil, "traceparent", "00-"+callerTrace+"-"+callerSpan+"-01", "tracestate", "v=1"); code != 200 {
		t.Fatalf("/embed: %d %s", code, raw)
	}
	if code, raw := post(t, s.url+"/embed", in, nil); code != 200 {
		t.Fatalf("/embed: %d %s", code, raw)
	}
	if code, raw := post(t, s.url+"/embed", in, nil, "traceparent", "00-"+callerTrace+"-"+callerSpan+"-00"); code != 200 {
		t.Fatalf("/embed: %d %s", code, raw)
	}
	if code, raw := post(t, s.url+"/embed", []byte("{"), nil, "traceparent", "00-"+callerTrace+"-"+callerSpan+"-01"); code != 422 {
		t.Fatalf("/embed of a broken body: %d %s", code, raw)
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	spans := col.Spans()
	server := tracetest.Named(spans, "POST /embed")
	if len(server) != 2 {
		t.Fatalf("%d server spans, want 2 (the sampled requests)", len(server))
	}
	byID := map[string]tracetest.Span{}
	for _, sp := range spans {
		byID[tracetest.Hex(sp.SpanId)] = sp
	}
	for _, sp := range server {
		if tracetest.Hex(sp.TraceId) != callerTrace || tracetest.Hex(sp.ParentSpanId) != callerSpan || sp.Kind != 2 {
			t.Errorf("server span in trace %x under %x, kind %v", sp.TraceId, sp.ParentSpanId, sp.Kind)
		}
		if tracetest.Attr(sp.Attributes, "http.route") != "/embed" {
			t.Errorf("server span attributes %v", sp.Attributes)
		}
	}
	ok := tracetest.Attr(server[0].Attributes, "http.response.status_code") == int64(200)
	answered, refused := server[0], server[1]
	if !ok {
		answered, refused = server[1], server[0]
	}
	if tracetest.Attr(answered.Attributes, "http.response.status_code") != int64(200) || answered.TraceState != "v=1" ||
		tracetest.Attr(refused.Attributes, "http.response.status_code") != int64(422) || len(refused.Links) != 0 {
		t.Errorf("server spans %v and %v: want one answered (200) and one refused (422) before any batch", answered.Span, refused.Span)
	}
	if len(answered.Links) == 0 {
		t.Fatal("the answered request's span links to no batch")
	}
	for _, l := range answered.Links {
		b, ok := byID[tracetest.Hex(l.SpanId)]
		if !ok || b.Name != "predict "+p.Name() {
			t.Fatalf("a link leads to %v, want a batch span", b.Span)
		}
		back := false
		for _, bl := range b.Links {
			back = back || tracetest.Hex(bl.SpanId) == tracetest.Hex(answered.SpanId)
		}
		if !back || tracetest.Attr(b.Attributes, "bertstream.batch.http_requests").(int64) < 1 {
			t.Errorf("batch span %v does not link back to the request", b.Span)
		}
	}
	if n := len(tracetest.Named(spans, "predict "+p.Name())); n < 3 {
		t.Errorf("%d batch spans, want one for each batch, at least 3", n)
	}
}
