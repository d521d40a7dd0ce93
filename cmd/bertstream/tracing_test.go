package main

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bertstream/bertstream/pipeline/trace"
	"github.com/bertstream/bertstream/pipeline/trace/tracetest"
)

// TestServeTracing runs the binary as a user would, with kcat as the
// client: a request sent with a traceparent is answered with the request
// span of the worker as the parent, and that span reaches the collector
// of --otlp-endpoint, with the service's resource, when serve stops on
// SIGTERM (the spans wait for a batch that never fills: only the flush at
// shutdown sends them), gzipped as --otlp-compression says over the
// variable.
func TestServeTracing(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat is not installed (apt-get install -y kcat, or make kcat): skipping the outside-client test")
	}
	col := tracetest.New(t)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-scope-orgid=tenant%201")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod%20eu,service.name=overridden")
	t.Setenv("OTEL_SERVICE_NAME", "nlp-fleet")
	t.Setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "none")
	broker, addr := startBroker(t)
	serve := startProc(t, "serve", "--brokers", addr, "--model", filepath.Join(fixtures, "bert-classifier"),
		"--http", "127.0.0.1:0", "--log-format", "text", "--instance-id", "worker-7", "--otlp-endpoint", col.Endpoint(), "--otlp-compression", "gzip")
	if !waitFor(30*time.Second, func() bool { return strings.Contains(serve.stderr.String(), `msg="group session started"`) }) {
		t.Fatal("serve never joined the group")
	}

	const (
		callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
		callerSpan  = "00f067aa0ba902b7"
	)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	produce := exec.CommandContext(ctx, kcat, "-P", "-b", addr, "-t", defaultInTopic, "-k", "k1",
		"-H", "traceparent=00-"+callerTrace+"-"+callerSpan+"-01", "-H", "tracestate=v=1")
	produce.Stdin = strings.NewReader(`{"id":"t1","task":"classify","text":"a traced request"}`)
	if out, err := produce.CombinedOutput(); err != nil {
		t.Fatalf("kcat -P: %v\n%s", err, out)
	}
	consume := exec.CommandContext(ctx, kcat, "-C", "-b", addr, "-t", defaultOutTopic, "-o", "beginning", "-c", "1", "-f", "%h\n")
	out, err := consume.Output()
	if err != nil {
		t.Fatalf("kcat -C: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`traceparent=(\S+?)(,|$)`).FindStringSubmatch(strings.TrimSpace(string(out)))
	if m == nil || !strings.Contains(string(out), "tracestate=v=1") {
		t.Fatalf("the answer's headers %q lack the trace context", out)
	}
	tp, err := trace.ParseTraceparent(m[1])
	if err != nil || tp.TraceID.String() != callerTrace || tp.SpanID.String() == callerSpan {
		t.Fatalf("the answer's traceparent %q: want the caller's trace under the worker's span (%v)", m[1], err)
	}
	if n := len(col.Requests()); n != 0 {
		t.Errorf("%d exports before shutdown, with a 10-minute interval", n)
	}
	serve.stop(t, 30*time.Second)
	broker.stop(t, 10*time.Second)

	var span tracetest.Span
	for _, s := range col.Spans() {
		if tracetest.Hex(s.SpanId) == tp.SpanID.String() {
			span = s
		}
	}
	if span.Span == nil {
		t.Fatalf("the collector has no span %s (it has %d spans)", tp.SpanID, len(col.Spans()))
	}
	if tracetest.Hex(span.TraceId) != callerTrace || tracetest.Hex(span.ParentSpanId) != callerSpan || len(span.Links) != 1 {
		t.Errorf("request span %v", span.Span)
	}
	for k, want := range map[string]any{"service.name": "nlp-fleet", "deployment.environment": "prod eu", "service.instance.id": "worker-7", "bertstream.model": "bert-classifier"} {
		if got := tracetest.Attr(span.Resource, k); got != want {
			t.Errorf("resource %s = %#v, want %#v", k, got, want)
		}
	}
	if reqs := col.Requests(); len(reqs) == 0 || reqs[0].Header.Get("X-Scope-Orgid") != "tenant 1" || reqs[0].Header.Get("Content-Encoding") != "gzip" {
		t.Errorf("exports %v: want OTEL_EXPORTER_OTLP_HEADERS' header, gzipped", reqs)
	}
}

// TestDemoTracing: demo --otlp-endpoint has its worker export a span per
// request and per batch, linked, gzipped as the variable says; the spans
// wait for a batch that never fills, so only the flush before demo
// returns sends them.
func TestDemoTracing(t *testing.T) {
	col := tracetest.New(t)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")
	out, _ := run(t, "demo", "--model", filepath.Join(fixtures, "bert-classifier"), "--otlp-endpoint", col.Endpoint())
	if !strings.Contains(out, "demo: spans go to "+col.URL()) {
		t.Errorf("demo does not say where the spans go:\n%s", out)
	}
	spans := col.Spans()
	requests := tracetest.Named(spans, "process "+defaultInTopic)
	batches := tracetest.Named(spans, "predict bert-classifier")
	if len(requests) != len(builtinSamples) || len(batches) == 0 {
		t.Fatalf("%d request spans and %d batch spans of %d spans, want %d and some", len(requests), len(batches), len(spans), len(builtinSamples))
	}
	batchIDs := make(map[string]bool)
	for _, b := range batches {
		batchIDs[tracetest.Hex(b.SpanId)] = true
	}
	for _, r := range requests {
		if len(r.Links) != 1 || !batchIDs[tracetest.Hex(r.Links[0].SpanId)] {
			t.Errorf("request span %s links %v, want one to a batch span", tracetest.Attr(r.Attributes, "bertstream.request.id"), r.Links)
		}
	}
	for _, r := range col.Requests() {
		if r.Header.Get("Content-Encoding") != "gzip" {
			t.Errorf("an export with Content-Encoding %q, want gzip", r.Header.Get("Content-Encoding"))
		}
	}
}

// TestOTLPCompressionRefused: serve and demo stop at a compression they
// do not speak, naming the flag or variable and its value.
func TestOTLPCompressionRefused(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  string
		says string
	}{
		{args: []string{"serve", "--brokers", "x:1", "--model", "m", "--otlp-compression", "zstd"}, says: `--otlp-compression "zstd"`},
		{args: []string{"demo", "--otlp-compression", "br"}, says: `--otlp-compression "br"`},
		{args: []string{"demo", "--otlp-endpoint", "http://127.0.0.1:4318"}, env: "lz4", says: "OTEL_EXPORTER_OTLP_COMPRESSION=lz4"},
	} {
		t.Setenv("OTEL_EXPORTER_OTLP_COMPRESSION", c.env)
		var out, errb bytes.Buffer
		if code := runMain(c.args, &out, &errb); code != 1 || !strings.Contains(errb.String(), c.says) {
			t.Errorf("%s with OTEL_EXPORTER_OTLP_COMPRESSION=%q: exit %d, %s; want an error saying %s", strings.Join(c.args, " "), c.env, code, errb.String(), c.says)
		}
	}
}
