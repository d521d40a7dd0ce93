package trace_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bertstream/bertstream/pipeline/trace"
)

func TestFromEnv(t *testing.T) {
	for _, c := range []struct {
		name      string
		flag      string // --otlp-endpoint
		env       map[string]string
		url, from string
		err       string
	}{
		{name: "nothing"},
		{name: "flag", flag: "http://c:4318", url: "http://c:4318/v1/traces", from: "--otlp-endpoint"},
		{name: "flag with a path", flag: "https://c/otlp/", url: "https://c/otlp/v1/traces", from: "--otlp-endpoint"},
		{name: "flag over the variables", flag: "http://flag:4318", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4318/x", "OTEL_SDK_DISABLED": "true"}, url: "http://flag:4318/v1/traces", from: "--otlp-endpoint"},
		{name: "flag with /v1/traces", flag: "http://c:4318/v1/traces", err: "base URL"},
		{name: "flag without scheme", flag: "c:4318", err: "--otlp-endpoint"},
		{name: "base variable", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, url: "http://c:4318/v1/traces", from: "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{name: "traces variable as is", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:9999/custom"}, url: "http://t:9999/custom", from: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"},
		{name: "traces variable without path", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:9999"}, url: "http://t:9999/", from: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"},
		{name: "disabled", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}},
		{name: "exporter none", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}},
		{name: "grpc", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, err: "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"},
		{name: "grpc without endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}},
		{name: "bad timeout", flag: "http://c:4318", env: map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "5s"}, err: "OTEL_EXPORTER_OTLP_TIMEOUT=5s"},
		{name: "bad header", flag: "http://c:4318", env: map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "a=1,novalue"}, err: "OTEL_EXPORTER_OTLP_HEADERS: entry 2"},
		{name: "bad queue", flag: "http://c:4318", env: map[string]string{"OTEL_BSP_MAX_QUEUE_SIZE": "0"}, err: "OTEL_BSP_MAX_QUEUE_SIZE"},
		{name: "bad resource", flag: "http://c:4318", env: map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "a=1,=2"}, err: "OTEL_RESOURCE_ATTRIBUTES: entry 2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := trace.FromEnv(trace.Flags{Endpoint: c.flag}, func(k string) string { return c.env[k] })
			if !errorAsWanted(t, err, c.err) {
				return
			}
			if s.URL != c.url || s.From != c.from {
				t.Errorf("URL %q from %q, want %q from %q", s.URL, s.From, c.url, c.from)
			}
		})
	}
}

// TestFromEnvCompression: --otlp-compression over
// OTEL_EXPORTER_OTLP_TRACES_COMPRESSION over OTEL_EXPORTER_OTLP_COMPRESSION,
// none by default as OpenTelemetry's specification has it; a value other
// than gzip or none (in any case) is an error naming where it came from.
func TestFromEnvCompression(t *testing.T) {
	const (
		base   = "OTEL_EXPORTER_OTLP_COMPRESSION"
		traces = "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"
	)
	for _, c := range []struct {
		name string
		flag string // --otlp-compression
		env  map[string]string
		want string
		err  string
	}{
		{name: "default", want: "none"},
		{name: "base variable", env: map[string]string{base: "gzip"}, want: "gzip"},
		{name: "traces variable", env: map[string]string{traces: "gzip"}, want: "gzip"},
		{name: "traces over base", env: map[string]string{base: "gzip", traces: "none"}, want: "none"},
		{name: "any case", env: map[string]string{traces: " GZip "}, want: "gzip"},
		{name: "flag", flag: "gzip", want: "gzip"},
		{name: "flag over variables", flag: "none", env: map[string]string{base: "gzip", traces: "gzip"}, want: "none"},
		{name: "flag over a bad variable", flag: "gzip", env: map[string]string{traces: "zstd"}, want: "gzip"},
		{name: "bad base", env: map[string]string{base: "zstd"}, err: base + "=zstd: want gzip or none"},
		{name: "bad traces", env: map[string]string{base: "gzip", traces: "deflate"}, err: traces + "=deflate: want gzip or none"},
		{name: "bad flag", flag: "br", err: `--otlp-compression "br": want gzip or none`},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}
			for k, v := range c.env {
				env[k] = v
			}
			s, err := trace.FromEnv(trace.Flags{Compression: c.flag}, func(k string) string { return env[k] })
			if !errorAsWanted(t, err, c.err) {
				return
			}
			if s.Compression != c.want || s.Options().Compression != c.want {
				t.Errorf("compression %q (options %q), want %q", s.Compression, s.Options().Compression, c.want)
			}
		})
	}
	// With tracing off the variables are not read, as the others are not;
	// a flag given is still checked.
	off := func(k string) string { return map[string]string{traces: "zstd"}[k] }
	if _, err := trace.FromEnv(trace.Flags{}, off); err != nil {
		t.Errorf("tracing off, a bad variable: %v", err)
	}
	if _, err := trace.FromEnv(trace.Flags{Compression: "zstd"}, off); err == nil || !strings.Contains(err.Error(), "--otlp-compression") {
		t.Errorf("tracing off, a bad flag: err %v, want one naming --otlp-compression", err)
	}
}

func TestFromEnvSettings(t *testing.T) {
	env := map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT":       "http://c:4318",
		"OTEL_EXPORTER_OTLP_HEADERS":        "Authorization=Bearer%20k1, x-tenant = a",
		"OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-tenant=b",
		"OTEL_EXPORTER_OTLP_TIMEOUT":        "3000",
		"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "2000",
		"OTEL_EXPORTER_OTLP_PROTOCOL":       "http/protobuf",
		"OTEL_BSP_SCHEDULE_DELAY":           "250",
		"OTEL_BSP_MAX_QUEUE_SIZE":           "100",
		"OTEL_BSP_MAX_EXPORT_BATCH_SIZE":    "10",
	}
	s, err := trace.FromEnv(trace.Flags{}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if s.Headers["Authorization"] != "Bearer k1" || s.Headers["X-Tenant"] != "b" || len(s.Headers) != 2 {
		t.Errorf("headers %v", s.Headers)
	}
	if s.Timeout != 2*time.Second || s.Interval != 250*time.Millisecond || s.QueueSize != 100 || s.BatchSize != 10 {
		t.Errorf("settings %+v", s)
	}
}

// The environment's resource attributes lie over the process's own, and
// OTEL_SERVICE_NAME over a service.name among them, as the OpenTelemetry
// specification orders them.
func TestFromEnvResource(t *testing.T) {
	env := map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
		"OTEL_RESOURCE_ATTRIBUTES":    "service.name=attrs, deployment.environment=prod%20eu,team=a,team=nlp",
		"OTEL_SERVICE_NAME":           "fleet",
	}
	s, err := trace.FromEnv(trace.Flags{}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	got := s.Resource(trace.String("service.name", "bertstream"), trace.String("service.instance.id", "w1"))
	want := []trace.Attr{
		trace.String("service.name", "fleet"),
		trace.String("service.instance.id", "w1"),
		trace.String("deployment.environment", "prod eu"),
		trace.String("team", "nlp"),
	}
	if !slices.Equal(got, want) {
		t.Errorf("resource %v, want %v", got, want)
	}
	delete(env, "OTEL_SERVICE_NAME")
	delete(env, "OTEL_RESOURCE_ATTRIBUTES")
	if s, err = trace.FromEnv(trace.Flags{}, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if got := s.Resource(trace.String("service.name", "bertstream")); !slices.Equal(got, []trace.Attr{trace.String("service.name", "bertstream")}) {
		t.Errorf("resource without the variables %v", got)
	}
}

// errorAsWanted fails t unless err says want (or, want empty, is nil); it
// reports whether the case goes on to check a result.
func errorAsWanted(t *testing.T, err error, want string) bool {
	t.Helper()
	if want != "" {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("err %v, want one that says %q", err, want)
		}
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}
