package pipeline_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/bertstream/bertstream/pipeline"
	"github.com/bertstream/bertstream/pipeline/broker"
)

// workerEnv, set in the environment of this test binary, makes it a worker
// process instead of running tests: the crash and shutdown tests need a
// real process to kill.
const workerEnv = "PIPELINE_TEST_WORKER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(workerEnv); spec != "" {
		os.Exit(workerProcess(spec))
	}
	os.Exit(m.Run())
}

// workerSpec configures a worker process.
type workerSpec struct {
	Brokers         []string
	ExactlyOnce     bool
	TransactionalID string
	MaxBatch        int
	MaxInFlight     int
	Delay           time.Duration
	SessionTimeout  time.Duration
	DrainTimeout    time.Duration
	InstanceID      string
	Rebalance       string
}

func (s workerSpec) config() pipeline.Config {
	cfg := baseConfig(s.Brokers[0])
	cfg.ExactlyOnce = s.ExactlyOnce
	cfg.TransactionalID = s.TransactionalID
	cfg.MaxBatch = s.MaxBatch
	cfg.MaxInFlight = s.MaxInFlight
	if s.SessionTimeout > 0 {
		cfg.SessionTimeout = s.SessionTimeout
	}
	if s.DrainTimeout > 0 {
		cfg.DrainTimeout = s.DrainTimeout
	}
	cfg.InstanceID = s.InstanceID
	cfg.Rebalance = s.Rebalance
	return cfg
}

// workerProcess runs a worker until SIGTERM or SIGINT. It prints "ready"
// once in a group session, "batch N" as the model starts on its Nth batch,
// and "stopped" after a clean shutdown.
func workerProcess(specJSON string) int {
	var spec workerSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "worker spec:", err)
		return 2
	}
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Printf(format+"\n", args...)
	}
	pred := &countingPredictor{delay: spec.Delay, onBatch: func(n int) { say("batch %d", n) }}
	cfg := spec.config()
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	w, err := pipeline.NewWorker(cfg, pred)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		for !w.Ready() {
			time.Sleep(10 * time.Millisecond)
		}
		say("ready")
	}()
	if err := w.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 1
	}
	say("stopped")
	return 0
}

// child is a worker process.
type child struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr *lockedBuffer
	done   chan struct{}
	err    error // set before done closes
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startChild(t *testing.T, spec workerSpec) *child {
	t.Helper()
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), workerEnv+"="+string(b))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, lines: make(chan string, 4096), stderr: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stderr = c.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		c.err = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			_ = cmd.Process.Kill()
			<-c.done
		}
		if t.Failed() {
			t.Logf("worker process stderr:\n%s", c.stderr.String())
		}
	})
	return c
}

// waitLine waits for a line of the child's output.
func (c *child) waitLine(t *testing.T, line string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l := <-c.lines:
			if l == line {
				return
			}
		case <-c.done:
			t.Fatalf("worker process exited (%v) before printing %q", c.err, line)
		case <-deadline:
			t.Fatalf("worker process did not print %q within %v", line, timeout)
		}
	}
}

// wait waits for the child to exit and returns how it exited.
func (c *child) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-c.done:
		return c.err
	case <-time.After(timeout):
		t.Fatalf("worker process still running after %v", timeout)
		return nil
	}
}

// sumHighWatermarks is the number of records (and transaction markers) a
// topic holds.
func sumHighWatermarks(c *broker.Cluster, topic string) int64 {
	var n int64
	for _, p := range c.PartitionInfos(topic) {
		n += p.HighWatermark
	}
	return n
}

// committedTotal is the sum of the group's committed offsets on the input
// topic: how many requests are done for good.
func committedTotal(c *broker.Cluster) int64 {
	gi := c.GroupInfo(group)
	if gi == nil {
		return 0
	}
	var n int64
	for _, cm := range gi.Commits[inTopic] {
		n += cm.Offset
	}
	return n
}

// TestKillBeforeCommit kills a worker process with SIGKILL after it has
// produced answers and before their offsets are committed: the broker
// holds back the worker's third commit (or, exactly-once, its third
// transaction's end), and the process is killed while it waits. Another
// worker then takes over the partitions. Nothing may be lost; at least once
// may answer again what was answered and not committed, at most the
// in-flight bound; exactly once answers nothing twice on the read-committed
// output.
func TestKillBeforeCommit(t *testing.T) {
	for _, eos := range []bool{false, true} {
		name := "at-least-once"
		if eos {
			name = "exactly-once"
		}
		t.Run(name, func(t *testing.T) {
			c, addr := newCluster(t, kfake.GroupMinSessionTimeout(500*time.Millisecond))
			idList, msgs := keyedRequests(300, 12)
			produce(t, addr, msgs)

			held := make(chan struct{}, 1)
			key, seen := kmsg.OffsetCommit, 0
			if eos {
				key = kmsg.EndTxn
			}
			c.ControlKey(int16(key), func(kmsg.Request) (kmsg.Response, error, bool) {
				if seen++; seen < 3 {
					return nil, nil, false
				}
				held <- struct{}{}
				// Handled without an answer: the worker waits on it.
				return nil, nil, true
			})

			spec := workerSpec{
				Brokers: []string{addr}, ExactlyOnce: eos, TransactionalID: "worker-0",
				MaxBatch: 8, MaxInFlight: 32, Delay: 10 * time.Millisecond,
				SessionTimeout: 1500 * time.Millisecond,
			}
			proc := startChild(t, spec)
			select {
			case <-held:
			case <-proc.done:
				t.Fatalf("worker process exited: %v", proc.err)
			case <-time.After(30 * time.Second):
				t.Fatal("the worker never reached its third commit")
			}
			// Let it answer what its in-flight bound allows while the commit
			// hangs.
			time.Sleep(300 * time.Millisecond)
			if err := proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			proc.wait(t, 10*time.Second)
			answered, committed := sumHighWatermarks(c, outTopic), committedTotal(c)
			t.Logf("killed with %d records on the output topic and %d requests committed", answered, committed)

			cfg := spec.config()
			cfg.SessionTimeout = 1500 * time.Millisecond
			startWorker(t, cfg, &countingPredictor{})
			out := readUntil(t, addr, idList, 60*time.Second, eos)
			count, _ := decodeAnswers(t, out)
			dups := checkAllAnswered(t, idList, count)
			waitCommitted(t, c, 20*time.Second)
			t.Logf("%d duplicate answers", dups)
			if eos {
				if dups != 0 {
					t.Errorf("%d duplicates on the read-committed output in exactly-once mode", dups)
				}
				// The killed worker's open transaction had answers in it:
				// they are in the log, aborted.
				all := readAll(t, addr, outTopic, len(idList)+1, 20*time.Second, false)
				if len(all) <= len(idList) {
					t.Errorf("read uncommitted, the output holds %d answers: the killed transaction had none", len(all))
				}
				return
			}
			if uncommitted := answered - committed; dups != int(uncommitted) || dups < 1 || dups > spec.MaxInFlight {
				t.Errorf("%d duplicates, %d answered and not committed at the kill: want them equal, between 1 and the in-flight bound %d", dups, uncommitted, spec.MaxInFlight)
			}
		})
	}
}

// TestSIGTERMDrains stops a worker process with SIGTERM while its model is
// in the middle of a batch: it must finish what it consumed, produce,
// commit, leave the group and exit 0; a worker started after it answers
// the rest and nothing twice.
func TestSIGTERMDrains(t *testing.T) {
	c, addr := newCluster(t)
	idList, msgs := keyedRequests(240, 12)
	produce(t, addr, msgs)

	spec := workerSpec{Brokers: []string{addr}, MaxBatch: 8, MaxInFlight: 32, Delay: 150 * time.Millisecond}
	proc := startChild(t, spec)
	proc.waitLine(t, "batch 4", 30*time.Second)
	start := time.Now()
	if err := proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	proc.waitLine(t, "stopped", 20*time.Second)
	if err := proc.wait(t, 5*time.Second); err != nil {
		t.Fatalf("worker process exited with %v after SIGTERM", err)
	}
	t.Logf("drained and stopped in %v", time.Since(start).Round(time.Millisecond))
	answered, committed := sumHighWatermarks(c, outTopic), committedTotal(c)
	if answered < 4*8 || answered >= int64(len(idList)) {
		t.Fatalf("%d answers before the restart: SIGTERM did not come mid-run", answered)
	}
	if answered != committed {
		t.Errorf("after the drain %d requests answered and %d committed", answered, committed)
	}
	if gi := c.GroupInfo(group); gi != nil && len(gi.Members) != 0 {
		t.Errorf("the group still has %d members: the worker did not leave", len(gi.Members))
	}

	startWorker(t, baseConfig(addr), &countingPredictor{})
	out := readUntil(t, addr, idList, 60*time.Second, false)
	count, _ := decodeAnswers(t, out)
	if dups := checkAllAnswered(t, idList, count); dups != 0 {
		t.Errorf("%d requests answered again after the restart", dups)
	}
	waitCommitted(t, c, 20*time.Second)
}
