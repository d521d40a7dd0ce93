package main

import (
	"bytes"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestServePprof: serve --pprof adds Go's profiles to the operations
// endpoint, the blocking and mutex profiles among them with samples (they
// are empty unless turned on); without --pprof there are none, and
// --pprof without --http is refused.
func TestServePprof(t *testing.T) {
	var out, errb bytes.Buffer
	code := runMain([]string{"serve", "--api", "127.0.0.1:0", "--http", "", "--pprof", "--model", filepath.Join(fixtures, "bert-classifier")}, &out, &errb)
	if code == 0 || !strings.Contains(errb.String(), "--pprof") || !strings.Contains(errb.String(), "--http") {
		t.Fatalf("serve --pprof --http '': exit %d, stderr %q; want a refusal naming both flags", code, errb.String())
	}

	get := func(ops, path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + ops + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	serveOps := func(profile bool) (*proc, string) {
		args := []string{"serve", "--api", "127.0.0.1:0", "--http", "127.0.0.1:0", "--log-format", "text",
			"--model", filepath.Join(fixtures, "bert-classifier")}
		if profile {
			args = append(args, "--pprof")
		}
		p := startProc(t, args...)
		var m []string
		if !waitFor(30*time.Second, func() bool {
			m = regexp.MustCompile(`msg="operations endpoint" addr=(\S+)`).FindStringSubmatch(p.stderr.String())
			return m != nil
		}) {
			t.Fatal("serve never started its operations endpoint")
		}
		return p, m[1]
	}

	p, ops := serveOps(true)
	if code, body := get(ops, "/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "mutex") {
		t.Fatalf("/debug/pprof/ with --pprof: %d %q", code, body)
	}
	// A blocking event is recorded when the goroutine resumes, so requests
	// through the batcher (which waits on channels for them) give the
	// blocking profile its samples; one may not have resumed at once.
	api := regexp.MustCompile(`msg="HTTP API" addr=(\S+)`).FindStringSubmatch(p.stderr.String())
	if api == nil {
		t.Fatal("serve logged no HTTP API address")
	}
	var blockCode int
	var body string
	if !waitFor(20*time.Second, func() bool {
		resp, err := http.Post("http://"+api[1]+"/embed", "application/json", strings.NewReader(`{"inputs":"a blocking profile sample"}`))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		blockCode, body = get(ops, "/debug/pprof/block?debug=1")
		return blockCode == http.StatusOK && strings.Contains(body, "cycles/second=") && strings.Contains(body, "@ 0x")
	}) {
		t.Fatalf("/debug/pprof/block with --pprof after requests: %d %q", blockCode, body)
	}
	if code, _ := get(ops, "/metrics"); code != http.StatusOK {
		t.Fatalf("/metrics with --pprof: %d", code)
	}
	p.stop(t, 20*time.Second)

	p, ops = serveOps(false)
	if code, _ := get(ops, "/debug/pprof/"); code != http.StatusNotFound {
		t.Fatalf("/debug/pprof/ without --pprof: %d, want 404", code)
	}
	p.stop(t, 20*time.Second)
}
