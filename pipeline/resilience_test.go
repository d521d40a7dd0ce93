package pipeline_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/bertstream/bertstream/bert/task"
	"github.com/bertstream/bertstream/pipeline"
	"github.com/bertstream/bertstream/pipeline/broker"
)

// produceOverTime produces msgs in chunks, one chunk every gap, so that
// requests keep arriving while the test changes things; the returned
// channel closes when all are produced.
func produceOverTime(t *testing.T, addr string, msgs []testMsg, chunk int, gap time.Duration) <-chan struct{} {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < len(msgs); i += chunk {
			produce(t, addr, msgs[i:min(i+chunk, len(msgs))])
			time.Sleep(gap)
		}
	}()
	return done
}

// TestWorkersJoinAndLeave runs the group through joins and graceful leaves
// while requests keep coming, in both delivery modes: every request is
// answered, every partition committed to its end, and, since a worker
// drains and commits before a rebalance goes on, nothing is answered twice.
func TestWorkersJoinAndLeave(t *testing.T) {
	for _, eos := range []bool{false, true} {
		t.Run(map[bool]string{false: "at-least-once", true: "exactly-once"}[eos], func(t *testing.T) {
			c, addr := newCluster(t)
			idList, msgs := keyedRequests(480, 24)
			produced := produceOverTime(t, addr, msgs, 30, 120*time.Millisecond)

			cfg := func(i int) pipeline.Config {
				cfg := baseConfig(addr)
				cfg.ClientID = "worker-" + strconv.Itoa(i)
				cfg.ExactlyOnce = eos
				cfg.TransactionalID = cfg.ClientID
				return cfg
			}
			slow := func() task.Predictor { return &countingPredictor{delay: 5 * time.Millisecond} }
			a := startWorker(t, cfg(0), slow())
			time.Sleep(400 * time.Millisecond)
			b := startWorker(t, cfg(1), slow())
			time.Sleep(400 * time.Millisecond)
			startWorker(t, cfg(2), slow())
			time.Sleep(400 * time.Millisecond)
			a.shutdown(t)
			time.Sleep(400 * time.Millisecond)
			startWorker(t, cfg(3), slow())
			time.Sleep(400 * time.Millisecond)
			b.shutdown(t)
			<-produced

			out := readUntil(t, addr, idList, 60*time.Second, eos)
			count, _ := decodeAnswers(t, out)
			if dups := checkAllAnswered(t, idList, count); dups != 0 {
				t.Errorf("%d requests answered twice across graceful rebalances", dups)
			}
			checkKeyOrder(t, out)
			waitCommitted(t, c, 20*time.Second)
			if gi := c.GroupInfo(group); gi == nil || len(gi.Members) != 2 || gi.NumAssigned() != 3 {
				t.Errorf("group after the churn: %+v, want 2 members sharing the 3 partitions", gi)
			}
		})
	}
}

// TestZombieFenced makes an exactly-once worker a zombie: a heartbeat fails
// while its model is on a slow batch, which ends its session on its side,
// and no heartbeat follows while it finishes the batch, so the coordinator
// drops it from the group. The transaction of that batch commits its
// offsets with the generation the worker joined in; the coordinator must
// refuse them, and the transaction is aborted. The worker then rejoins and
// everything is answered once on the read-committed output.
func TestZombieFenced(t *testing.T) {
	c, addr := newCluster(t, kfake.GroupMinSessionTimeout(500*time.Millisecond))
	idList, msgs := keyedRequests(60, 6)
	produce(t, addr, msgs)
	refused := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.TxnOffsetCommit}, Observe: true, Count: -1})

	pred := &countingPredictor{onBatch: func(n int) {
		if n == 1 {
			c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Heartbeat}, Err: kerr.UnknownServerError})
			// Long enough for the coordinator to time the member out.
			time.Sleep(2500 * time.Millisecond)
		}
	}}
	cfg := baseConfig(addr)
	cfg.ExactlyOnce = true
	cfg.TransactionalID = "zombie"
	cfg.SessionTimeout = time.Second
	cfg.HeartbeatInterval = 200 * time.Millisecond
	reg := prometheus.NewRegistry()
	cfg.Metrics = pipeline.NewMetrics(reg)
	startWorker(t, cfg, pred)

	out := readUntil(t, addr, idList, 60*time.Second, true)
	count, _ := decodeAnswers(t, out)
	if dups := checkAllAnswered(t, idList, count); dups != 0 {
		t.Errorf("%d duplicates on the read-committed output", dups)
	}
	waitCommitted(t, c, 20*time.Second)
	if fails := gathered(t, reg, "bertstream_produce_failures_total"); fails < 1 {
		t.Errorf("no transaction failed: the zombie's offsets were taken (%d offset commits in transactions)", refused.Hits())
	}
	all := readAll(t, addr, outTopic, len(idList)+1, 20*time.Second, false)
	if len(all) <= len(idList) {
		t.Errorf("read uncommitted, the output holds %d answers: the zombie's transaction left none", len(all))
	}
}

// TestBrokerRestart stops the broker mid-run and starts it again on the
// same port and data directory: the worker reconnects and carries on, and
// nothing is lost.
func TestBrokerRestart(t *testing.T) {
	dir := t.TempDir()
	bc := broker.Config{Topics: []string{inTopic, outTopic, dlqTopic}, DataDir: dir}
	c1, err := broker.Start(bc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c1.Close)
	addr := c1.ListenAddrs()[0]

	startWorker(t, baseConfig(addr), &countingPredictor{})
	idList, msgs := keyedRequests(300, 12)
	produce(t, addr, msgs[:150])
	readAll(t, addr, outTopic, 50, 30*time.Second, false)
	c1.Close()
	time.Sleep(300 * time.Millisecond)

	bc.Listen = addr
	c2, err := broker.Start(bc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c2.Close)
	produce(t, addr, msgs[150:])
	out := readUntil(t, addr, idList, 60*time.Second, false)
	count, _ := decodeAnswers(t, out)
	dups := checkAllAnswered(t, idList, count)
	t.Logf("%d duplicates after the restart", dups)
	waitCommitted(t, c2, 30*time.Second)
}

// TestInjectedErrors makes the broker fail the worker's produce, fetch and
// commit requests, first with errors a client retries, then with errors it
// does not: the worker must answer everything and commit to the end.
func TestInjectedErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		faults []kfake.Fault
	}{
		{"produce", []kfake.Fault{
			{Keys: []kmsg.Key{kmsg.Produce}, Topic: outTopic, Err: kerr.NotEnoughReplicas, Count: 3},
			{Keys: []kmsg.Key{kmsg.Produce}, Topic: outTopic, Err: kerr.UnknownServerError, Count: 2},
		}},
		{"fetch", []kfake.Fault{
			{Keys: []kmsg.Key{kmsg.Fetch}, Topic: inTopic, Err: kerr.NotLeaderForPartition, Count: 3},
			{Keys: []kmsg.Key{kmsg.Fetch}, Topic: inTopic, Err: kerr.UnknownServerError, Count: 2},
		}},
		{"commit", []kfake.Fault{
			{Keys: []kmsg.Key{kmsg.OffsetCommit}, Group: group, Err: kerr.CoordinatorNotAvailable, Count: 3},
			{Keys: []kmsg.Key{kmsg.OffsetCommit}, Group: group, Err: kerr.UnknownServerError, Count: 2},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, addr := newCluster(t)
			idList, msgs := keyedRequests(200, 12)
			produce(t, addr, msgs[:100])
			h := c.Fault(tc.faults...)
			startWorker(t, baseConfig(addr), &countingPredictor{delay: 2 * time.Millisecond})
			produce(t, addr, msgs[100:])
			out := readUntil(t, addr, idList, 60*time.Second, false)
			count, _ := decodeAnswers(t, out)
			dups := checkAllAnswered(t, idList, count)
			waitCommitted(t, c, 30*time.Second)
			want := 0
			for _, f := range tc.faults {
				want += f.Count
			}
			if h.Hits() != want {
				t.Errorf("%d of the %d injected errors reached the worker", h.Hits(), want)
			}
			t.Logf("%d duplicates", dups)
		})
	}
}

// gathered is the value of a counter or gauge without labels in reg.
func gathered(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.GetMetric()) != 1 {
			continue
		}
		m := mf.GetMetric()[0]
		if m.GetCounter() != nil {
			return m.GetCounter().GetValue()
		}
		return m.GetGauge().GetValue()
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestTransactionalIDTakenOver starts a second exactly-once worker with
// the first one's transactional id, as a restarted replica would: the first
// is fenced, must stop with an error that says so rather than fence the
// second in turn, and every request is answered once.
//
// Under -race it is skipped: once a transactional producer is fenced,
// Sarama v1.61.1 writes transactionManager.lastError under statusLock in one
// goroutine (transitionTo) and reads it under partitionInTxnLock in another
// (publishTxnPartitions), IBM/sarama#2913, unfixed in the newest release.
// The race is in Sarama's goroutines before any of ours sees the error, so
// no change here can avoid it; the test still runs in `make test`.
func TestTransactionalIDTakenOver(t *testing.T) {
	if raceDetector {
		t.Skip("Sarama v1.61.1 races on its transaction manager's lastError after fencing (IBM/sarama#2913)")
	}
	_, addr := newCluster(t)
	idList, msgs := keyedRequests(300, 12)
	produced := produceOverTime(t, addr, msgs, 30, 100*time.Millisecond)
	cfg := baseConfig(addr)
	cfg.ExactlyOnce = true
	cfg.TransactionalID = "replica-0"
	cfg.Logger = testLogger(t)
	first, err := pipeline.NewWorker(cfg, &countingPredictor{delay: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- first.Run(context.Background()) }()
	readAll(t, addr, outTopic, 20, 30*time.Second, true)

	startWorker(t, cfg, &countingPredictor{delay: 5 * time.Millisecond})
	select {
	case err := <-stopped:
		if err == nil || !strings.Contains(err.Error(), `took over transactional id "replica-0"`) {
			t.Errorf("the fenced worker stopped with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the fenced worker still runs")
	}
	<-produced
	out := readUntil(t, addr, idList, 60*time.Second, true)
	count, _ := decodeAnswers(t, out)
	if dups := checkAllAnswered(t, idList, count); dups != 0 {
		t.Errorf("%d duplicates on the read-committed output", dups)
	}
}

// TestProduceRetryWritesOnce checks the tests' own input producer: the
// broker applies a produce and answers REQUEST_TIMED_OUT, as when the answer
// is lost, and the retry must not write the requests again. A request
// written twice is answered twice, which the exactly-once tests would blame
// on the worker (TestWorkersJoinAndLeave did, under load).
func TestProduceRetryWritesOnce(t *testing.T) {
	c, addr := newCluster(t)
	h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: inTopic, Err: kerr.RequestTimedOut, Count: 1})
	idList, msgs := keyedRequests(30, 3)
	produce(t, addr, msgs)
	if h.Hits() != 1 {
		t.Fatalf("the injected timeout reached the producer %d times, want 1", h.Hits())
	}
	in := readAll(t, addr, inTopic, len(idList), 10*time.Second, false)
	count := make(map[string]int)
	for _, m := range in {
		var r struct{ ID string }
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatalf("request at %d@%d: %v", m.Partition, m.Offset, err)
		}
		count[r.ID]++
	}
	if dups := checkAllAnswered(t, idList, count); dups != 0 {
		t.Errorf("%d requests written twice to the input topic after a retried produce", dups)
	}
}
