package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// asBinary, set in the environment of this test binary, makes it the
// bertstream binary: the broker and serve tests run real processes and
// signal them.
const asBinary = "BERTSTREAM_TEST_AS_BINARY"

func TestMain(m *testing.M) {
	if os.Getenv(asBinary) != "" {
		os.Exit(runMain(os.Args[1:], os.Stdout, os.Stderr))
	}
	if model := os.Getenv(asEngine); model != "" {
		os.Exit(runEngineChild(model, os.Stdout))
	}
	os.Exit(m.Run())
}

// proc is a bertstream process.
type proc struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr *syncBuffer
	done   chan struct{}
	err    error // set before done closes
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startProc(t testing.TB, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), asBinary+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, lines: make(chan string, 1024), stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("bertstream %s stderr:\n%s", args[0], p.stderr.String())
		}
	})
	return p
}

// line waits for a line of output that matches re and returns its
// submatches.
func (p *proc) line(t testing.TB, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l := <-p.lines:
			if m := re.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-p.done:
			t.Fatalf("bertstream %s exited (%v) before printing /%s/", p.cmd.Args[1], p.err, re)
		case <-deadline:
			t.Fatalf("bertstream %s did not print /%s/ within %v", p.cmd.Args[1], re, timeout)
		}
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop(t testing.TB, timeout time.Duration) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
		if p.err != nil {
			t.Errorf("bertstream %s exited with %v after SIGTERM", p.cmd.Args[1], p.err)
		}
	case <-time.After(timeout):
		t.Errorf("bertstream %s still running %v after SIGTERM", p.cmd.Args[1], timeout)
	}
}

// waitFor polls a condition until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// startBroker runs `bertstream broker` on a free port and returns it with
// its address.
func startBroker(t *testing.T) (*proc, string) {
	t.Helper()
	broker := startProc(t, "broker", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir())
	return broker, broker.line(t, regexp.MustCompile(`^broker listening on (\S+)$`), 30*time.Second)[1]
}

// startServe runs `bertstream serve` with the bert-tiny classifier against
// the brokers at addr, waits until it is ready and returns it with the
// address of its operations endpoint.
func startServe(t *testing.T, addr string) (*proc, string) {
	t.Helper()
	serve := startProc(t, "serve", "--brokers", addr, "--model", filepath.Join(fixtures, "bert-classifier"),
		"--http", "127.0.0.1:0", "--log-format", "text", "--max-batch", "8")
	var ops string
	if !waitFor(30*time.Second, func() bool {
		m := regexp.MustCompile(`msg="operations endpoint" addr=(\S+)`).FindStringSubmatch(serve.stderr.String())
		if m != nil {
			ops = m[1]
		}
		return m != nil
	}) {
		t.Fatal("serve never started its operations endpoint")
	}
	ready := func() bool {
		resp, err := http.Get("http://" + ops + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	if !waitFor(30*time.Second, ready) {
		t.Fatal("serve never became ready")
	}
	return serve, ops
}

// getMetrics reads /metrics from the operations endpoint at ops.
func getMetrics(t *testing.T, ops string) []byte {
	t.Helper()
	resp, err := http.Get("http://" + ops + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestServeMetrics: serve's /metrics reports, beside the pipeline's
// figures, the memory the model's tensors hold, which the command, not the
// pipeline, registers.
func TestServeMetrics(t *testing.T) {
	broker, addr := startBroker(t)
	serve, ops := startServe(t, addr)
	metrics := getMetrics(t, ops)
	for _, m := range []string{`bertstream_tensor_bytes{device="cpu"}`, `bertstream_tensors{device="cpu"}`, `bertstream_memory_rss_bytes`} {
		v := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(m) + ` (\S+)$`).FindSubmatch(metrics)
		if v == nil || string(v[1]) == "0" {
			t.Errorf("%s is absent or 0 in /metrics:\n%s", m, metrics)
		}
	}
	serve.stop(t, 30*time.Second)
	broker.stop(t, 10*time.Second)
}

// TestKcatAgainstBrokerAndServe uses kcat, librdkafka's command line
// client, as the outside application: it writes requests to `bertstream
// broker` and reads the answers `bertstream serve` writes, and every
// request must be answered. Both processes must stop cleanly on SIGTERM.
func TestKcatAgainstBrokerAndServe(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat is not installed (apt-get install -y kcat, or make kcat): skipping the outside-client test")
	}
	broker, addr := startBroker(t)
	serve, ops := startServe(t, addr)

	const n = 60
	var in bytes.Buffer
	for i := range n {
		fmt.Fprintf(&in, "key-%d\t{\"id\":\"k%d\",\"task\":\"classify\",\"text\":\"request number %d from kcat\"}\n", i%7, i, i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	produce := exec.CommandContext(ctx, kcat, "-P", "-b", addr, "-t", defaultInTopic, "-K", "\t")
	produce.Stdin = &in
	if out, err := produce.CombinedOutput(); err != nil {
		t.Fatalf("kcat -P: %v\n%s", err, out)
	}
	consume := exec.CommandContext(ctx, kcat, "-C", "-b", addr, "-t", defaultOutTopic, "-o", "beginning", "-c", fmt.Sprint(n), "-f", "%k\t%s\n")
	var out, errb bytes.Buffer
	consume.Stdout, consume.Stderr = &out, &errb
	if err := consume.Run(); err != nil {
		t.Fatalf("kcat -C: %v\n%s\nanswers so far:\n%s", err, errb.String(), out.String())
	}
	seen := make(map[string]bool)
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		key, val, _ := strings.Cut(l, "\t")
		var a struct {
			ID     string         `json:"id"`
			Task   string         `json:"task"`
			Model  string         `json:"model"`
			Result map[string]any `json:"result"`
			Error  *string        `json:"error"`
		}
		if err := json.Unmarshal([]byte(val), &a); err != nil {
			t.Fatalf("answer %q: %v", l, err)
		}
		if a.Task != "classify" || a.Model != "bert-classifier" || a.Result["label"] == nil || a.Error != nil || !strings.HasPrefix(key, "key-") {
			t.Errorf("answer %q", l)
		}
		seen[a.ID] = true
	}
	if len(seen) != n {
		t.Errorf("%d distinct requests answered, want %d", len(seen), n)
	}

	// kcat can read an answer before the worker has taken the broker's
	// acknowledgement of it, which is when the counter moves: wait for it.
	produced := regexp.MustCompile(`(?m)^bertstream_produced_total 60$`)
	var metrics []byte
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		metrics = getMetrics(t, ops)
		if produced.Match(metrics) || time.Now().After(deadline) {
			break
		}
	}
	if !produced.Match(metrics) {
		t.Errorf("/metrics does not count the 60 answers:\n%s", metrics)
	}
	serve.stop(t, 30*time.Second)
	broker.stop(t, 10*time.Second)
}

// TestDemo runs the demo on the bert-tiny classifier, first with its
// built-in samples, then with a samples file.
func TestDemo(t *testing.T) {
	model := filepath.Join(fixtures, "bert-classifier")
	t.Run("built-in", func(t *testing.T) {
		// The default samples file does not exist relative to this test's
		// directory, so the built-in samples are used.
		out, _ := run(t, "demo", "--model", model)
		for _, s := range builtinSamples {
			if !regexp.MustCompile(`(?m)^` + s.ID + ` +` + regexp.QuoteMeta(s.Package) + ` +` + s.Section + ` +(business|science|sports) +0\.\d\d `).MatchString(out) {
				t.Errorf("no answer line for %s in:\n%s", s.ID, out)
			}
		}
		if !strings.Contains(out, fmt.Sprintf("%d answered, 0 dead-lettered", len(builtinSamples))) {
			t.Errorf("no summary line in:\n%s", out)
		}
	})
	t.Run("samples-file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "samples.jsonl")
		writeFile(t, f, `{"id":"x1","package":"python3-yaml","section":"python","text":"YAML parser and emitter for Python 3"}
{"id":"x2","package":"empty","section":"misc","text":""}
`)
		out, _ := run(t, "demo", "--model", model, "--samples", f)
		if !regexp.MustCompile(`(?m)^x1 +python3-yaml +python +\w+ +0\.\d\d `).MatchString(out) ||
			!regexp.MustCompile(`(?m)^x2 +empty +misc +dead letter: missing_text `).MatchString(out) ||
			!strings.Contains(out, "1 answered, 1 dead-lettered") {
			t.Errorf("demo output:\n%s", out)
		}
	})
	t.Run("missing-samples-file", func(t *testing.T) {
		var out, errb bytes.Buffer
		absent := filepath.Join(t.TempDir(), "absent.jsonl")
		if code := runMain([]string{"demo", "--model", model, "--samples", absent}, &out, &errb); code != 1 || !strings.Contains(errb.String(), absent) {
			t.Errorf("demo with a samples file that does not exist: exit %d, %s", code, errb.String())
		}
	})
}

func TestEnvFlags(t *testing.T) {
	var out, errb bytes.Buffer
	t.Setenv("BERTSTREAM_MAX_BATCH", "many")
	if code := runMain([]string{"serve", "--brokers", "x:1", "--model", "m"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "BERTSTREAM_MAX_BATCH") {
		t.Errorf("serve with a bad BERTSTREAM_MAX_BATCH: exit %d, %s", code, errb.String())
	}
	t.Setenv("BERTSTREAM_MAX_BATCH", "8")
	t.Setenv("BERTSTREAM_PARTITIONS", "0")
	errb.Reset()
	if code := runMain([]string{"broker"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "--partitions must be at least 1") {
		t.Errorf("broker with BERTSTREAM_PARTITIONS=0: exit %d, %s", code, errb.String())
	}
}
