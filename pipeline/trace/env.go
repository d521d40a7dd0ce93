package trace

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Settings are an exporter's settings as the command line and the
// environment give them. URL is empty when tracing is off.
type Settings struct {
	URL string
	// From says where URL came from: the flag or a variable's name.
	From    string
	Headers map[string]string
	// The limits; zero leaves the Exporter's default.
	Timeout   time.Duration
	Interval  time.Duration
	QueueSize int
	BatchSize int
	// Compression is how the exports' bodies are encoded: CompressionGzip
	// or CompressionNone.
	Compression string
	// EnvResource holds the resource attributes the environment sets
	// (OTEL_RESOURCE_ATTRIBUTES, then OTEL_SERVICE_NAME as service.name),
	// to be laid over the process's own by Resource.
	EnvResource []Attr
}

// Resource is the exporter's resource: own, the attributes the process
// knows of itself, with the environment's (s.EnvResource) over them key by
// key, as OpenTelemetry's SDKs let OTEL_RESOURCE_ATTRIBUTES and
// OTEL_SERVICE_NAME name a fleet's services.
func (s Settings) Resource(own ...Attr) []Attr {
	out := slices.Clone(own)
	for _, a := range s.EnvResource {
		out = setAttr(out, a)
	}
	return out
}

// setAttr puts a into attrs in place of the attribute of its key, or
// after them when none has it.
func setAttr(attrs []Attr, a Attr) []Attr {
	if i := slices.IndexFunc(attrs, func(o Attr) bool { return o.Key == a.Key }); i >= 0 {
		attrs[i] = a
		return attrs
	}
	return append(attrs, a)
}

// Options are s as an Exporter's options, the rest of which the caller
// fills in.
func (s Settings) Options() Options {
	return Options{URL: s.URL, Headers: s.Headers, Timeout: s.Timeout, Interval: s.Interval, QueueSize: s.QueueSize, BatchSize: s.BatchSize, Compression: s.Compression}
}

// Flags are the command line's tracing settings, each empty when not
// given: --otlp-endpoint and --otlp-compression. A flag given wins over
// the variables that say the same.
type Flags struct {
	Endpoint    string
	Compression string
}

// FromEnv resolves where spans go and how. f holds the command line's
// flags; getenv reads the environment. The URL is, first found wins:
//
//  1. f.Endpoint + "/v1/traces";
//  2. OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, as it is (the specification's
//     rule for the per-signal variable);
//  3. OTEL_EXPORTER_OTLP_ENDPOINT + "/v1/traces";
//  4. none: tracing is off.
//
// The variables are skipped, as OpenTelemetry's SDKs skip them, when
// OTEL_SDK_DISABLED is true or OTEL_TRACES_EXPORTER is none. With a URL,
// the rest of the standard variables apply, whichever way the URL came:
// OTEL_EXPORTER_OTLP_HEADERS, then OTEL_EXPORTER_OTLP_TRACES_HEADERS over
// it key by key; OTEL_EXPORTER_OTLP[_TRACES]_TIMEOUT; OTEL_BSP_SCHEDULE_DELAY,
// OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_EXPORT_BATCH_SIZE;
// OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL, which must be http/protobuf, the
// only one spoken here; and the compression: f.Compression, else
// OTEL_EXPORTER_OTLP_TRACES_COMPRESSION, else
// OTEL_EXPORTER_OTLP_COMPRESSION, else none (the specification's
// default), each gzip or none. A value that cannot be read is an error
// that names its flag or variable; a flag's is one even with tracing off.
func FromEnv(f Flags, getenv func(string) string) (Settings, error) {
	var s Settings
	endpoint := f.Endpoint
	compression := CompressionNone
	if f.Compression != "" {
		var err error
		if compression, err = parseCompression(f.Compression); err != nil {
			return s, fmt.Errorf("--otlp-compression %q: %w", f.Compression, err)
		}
	}
	env := func(names ...string) (string, string) {
		for _, n := range names {
			if v := strings.TrimSpace(getenv(n)); v != "" {
				return n, v
			}
		}
		return "", ""
	}
	switch {
	case endpoint != "":
		u, err := baseURL(endpoint)
		if err != nil {
			return s, fmt.Errorf("--otlp-endpoint: %w", err)
		}
		if strings.HasSuffix(strings.TrimSuffix(u.Path, "/"), "/v1/traces") {
			return s, fmt.Errorf("--otlp-endpoint %q: give the collector's base URL (http://HOST:4318); /v1/traces is added to it (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT takes a full URL)", endpoint)
		}
		s.URL, s.From = tracesURL(u), "--otlp-endpoint"
	case strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") || strings.EqualFold(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")), "none"):
		return s, nil
	default:
		if n, v := env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"); v != "" {
			u, err := baseURL(v)
			if err != nil {
				return s, fmt.Errorf("%s: %w", n, err)
			}
			if u.Path == "" {
				u.Path = "/"
			}
			s.URL, s.From = u.String(), n
		} else if n, v := env("OTEL_EXPORTER_OTLP_ENDPOINT"); v != "" {
			u, err := baseURL(v)
			if err != nil {
				return s, fmt.Errorf("%s: %w", n, err)
			}
			s.URL, s.From = tracesURL(u), n
		} else {
			return s, nil
		}
	}
	if n, v := env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"); v != "" && v != "http/protobuf" {
		return s, fmt.Errorf("%s=%s: bertstream exports OTLP over HTTP as protobuf only (http/protobuf), to the collector's OTLP/HTTP port (4318 by default)", n, v)
	}
	var err error
	if s.Headers, err = headers(getenv, "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"); err != nil {
		return s, err
	}
	if n, v := env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"); v != "" {
		if s.Timeout, err = millis(n, v); err != nil {
			return s, err
		}
	}
	if n, v := env("OTEL_BSP_SCHEDULE_DELAY"); v != "" {
		if s.Interval, err = millis(n, v); err != nil {
			return s, err
		}
	}
	if n, v := env("OTEL_BSP_MAX_QUEUE_SIZE"); v != "" {
		if s.QueueSize, err = count(n, v); err != nil {
			return s, err
		}
	}
	if n, v := env("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"); v != "" {
		if s.BatchSize, err = count(n, v); err != nil {
			return s, err
		}
	}
	if n, v := env("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"); v != "" && f.Compression == "" {
		if compression, err = parseCompression(v); err != nil {
			return s, fmt.Errorf("%s=%s: %w", n, v, err)
		}
	}
	s.Compression = compression
	if s.EnvResource, err = resource(getenv); err != nil {
		return s, err
	}
	return s, nil
}

// parseCompression reads a compression as OpenTelemetry names it, in any
// case (the specification's rule for its enumerations).
func parseCompression(v string) (string, error) {
	switch c := strings.ToLower(strings.TrimSpace(v)); c {
	case CompressionGzip, CompressionNone:
		return c, nil
	}
	return "", errors.New("want gzip or none")
}

// resource reads OTEL_RESOURCE_ATTRIBUTES (key=value pairs separated by
// commas, values percent-encoded, as W3C Baggage writes them; later keys
// over earlier) and OTEL_SERVICE_NAME, which the specification puts over
// a service.name among those attributes.
func resource(getenv func(string) string) ([]Attr, error) {
	const name = "OTEL_RESOURCE_ATTRIBUTES"
	kvs, err := baggage(name, getenv(name), "not empty", func(k string) bool { return k != "" })
	if err != nil {
		return nil, err
	}
	var out []Attr
	for _, kv := range kvs {
		out = setAttr(out, String(kv[0], kv[1]))
	}
	if v := strings.TrimSpace(getenv("OTEL_SERVICE_NAME")); v != "" {
		out = setAttr(out, String("service.name", v))
	}
	return out, nil
}

// baggage splits the variable name's value v as W3C Baggage writes
// pairs: KEY=VALUE separated by commas, values percent-encoded; each key
// must pass valid (what, for the error).
func baggage(name, v, what string, valid func(string) bool) ([][2]string, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil, nil
	}
	var out [][2]string
	for i, kv := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok || !valid(k) {
			return nil, fmt.Errorf("%s: entry %d is not KEY=VALUE with KEY %s", name, i+1, what)
		}
		dec, err := url.PathUnescape(strings.TrimSpace(val))
		if err != nil {
			return nil, fmt.Errorf("%s: the value of %s: %w", name, k, err)
		}
		out = append(out, [2]string{k, dec})
	}
	return out, nil
}

// baseURL checks an endpoint: an http or https URL with a host.
func baseURL(v string) (*url.URL, error) {
	u, err := url.Parse(v)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("%q: want an http:// or https:// URL with a host, such as http://localhost:4318", v)
	}
	return u, nil
}

// tracesURL is a base endpoint's traces URL: the path /v1/traces under
// whatever path the base has.
func tracesURL(u *url.URL) string {
	t := *u
	t.Path = strings.TrimSuffix(u.Path, "/") + "/v1/traces"
	t.RawPath = ""
	return t.String()
}

// headers reads the header variables, the later ones over the earlier key
// by key. Their format is W3C Baggage's: key=value pairs separated by
// commas, values percent-encoded.
func headers(getenv func(string) string, names ...string) (map[string]string, error) {
	var h map[string]string
	for _, n := range names {
		kvs, err := baggage(n, getenv(n), "an HTTP header name", validHeaderName)
		if err != nil {
			return nil, err
		}
		for _, kv := range kvs {
			if strings.ContainsAny(kv[1], "\r\n\x00") {
				return nil, fmt.Errorf("%s: the value of %s holds a line break or NUL", n, kv[0])
			}
			if h == nil {
				h = make(map[string]string)
			}
			h[http.CanonicalHeaderKey(kv[0])] = kv[1]
		}
	}
	return h, nil
}

// validHeaderName reports whether k is an HTTP token.
func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

var errNotPositive = errors.New("want a positive integer")

// millis reads a duration in milliseconds, as OpenTelemetry's variables
// give them.
func millis(name, v string) (time.Duration, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err == nil && n <= 0 {
		err = errNotPositive
	}
	if err != nil {
		return 0, fmt.Errorf("%s=%s: milliseconds: %w", name, v, err)
	}
	return time.Duration(n) * time.Millisecond, nil
}

func count(name, v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err == nil && n <= 0 {
		err = errNotPositive
	}
	if err != nil {
		return 0, fmt.Errorf("%s=%s: %w", name, v, err)
	}
	return n, nil
}
