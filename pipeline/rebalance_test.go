package pipeline_test

import (
	"encoding/json"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bertstream/bertstream/bert/task"
	"github.com/bertstream/bertstream/pipeline"
	"github.com/bertstream/bertstream/pipeline/broker"
)

// namedPredictor answers under its own model name, so that an answer
// tells which worker gave it.
type namedPredictor struct {
	task.Predictor
	name string
}

func (p namedPredictor) Name() string { return p.name }

// TestJoinKeepsAnswering is issue 10's scale-out: a third worker joins a
// group of two while requests keep coming, and one of the two is in the
// middle of a slow batch when the rebalance comes. With cooperative
// rebalancing the fast worker keeps its group session (one from start to
// end) and keeps answering the partitions it keeps while the slow one
// drains: their longest gap between two answers stays short. With eager
// rebalancing (logged for comparison) every partition of the group waits
// for the slow worker's drain. In both, nothing is lost or answered twice.
func TestJoinKeepsAnswering(t *testing.T) {
	for _, mode := range []string{pipeline.RebalanceCooperative, pipeline.RebalanceEager} {
		t.Run(mode, func(t *testing.T) { joinKeepsAnswering(t, mode) })
	}
}

func joinKeepsAnswering(t *testing.T, mode string) {
	const (
		parts = 6
		slow  = 1500 * time.Millisecond
	)
	c, err := broker.Start(broker.Config{Partitions: parts, Topics: []string{inTopic, outTopic, dlqTopic}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	addr := c.ListenAddrs()[0]
	idList, msgs := keyedRequests(1800, 120)
	produced := produceOverTime(t, addr, msgs, 12, 40*time.Millisecond)

	cfg := func(name string, reg *prometheus.Registry) pipeline.Config {
		cfg := baseConfig(addr)
		cfg.ClientID = name
		cfg.Rebalance = mode
		cfg.Metrics = pipeline.NewMetrics(reg)
		return cfg
	}
	start := func(name string, reg *prometheus.Registry, pred *countingPredictor) {
		t.Helper()
		w := startWorker(t, cfg(name, reg), namedPredictor{pred, name})
		if err := eventually(10*time.Second, w.w.Ready); err != nil {
			t.Fatalf("worker %s never joined", name)
		}
	}
	regA := prometheus.NewRegistry()
	start("A", regA, &countingPredictor{delay: 10 * time.Millisecond})
	var slowNext atomic.Bool
	start("C", prometheus.NewRegistry(), &countingPredictor{delay: 10 * time.Millisecond, onBatch: func(int) {
		if slowNext.CompareAndSwap(true, false) {
			time.Sleep(slow)
		}
	}})
	time.Sleep(time.Second)
	slowNext.Store(true)
	joined := time.Now()
	start("B", prometheus.NewRegistry(), &countingPredictor{delay: 10 * time.Millisecond})
	window := joined.Add(3 * time.Second)
	time.Sleep(time.Until(window))
	select {
	case <-produced:
		t.Fatal("the requests ran out before the end of the window")
	default:
	}
	<-produced

	out := readUntil(t, addr, idList, 60*time.Second, false)
	count := make(map[string]int)
	byPart := make(map[int32][]*sarama.ConsumerMessage)
	others := make(map[int32]bool)
	for _, m := range out {
		var r pipeline.Response
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatalf("answer %s: %v", m.Value, err)
		}
		count[r.ID]++
		byPart[m.Partition] = append(byPart[m.Partition], m)
		if r.Model != "A" {
			others[m.Partition] = true
		}
	}
	if dups := checkAllAnswered(t, idList, count); dups != 0 {
		t.Errorf("%d requests answered twice across a graceful join", dups)
	}
	// Answers are keyed like their requests and both topics have six
	// partitions: an answer's partition is its request's. The partitions
	// only A ever answered are those it kept through both joins.
	var kept []int32
	worst := time.Duration(0)
	for p := range int32(parts) {
		if others[p] {
			continue
		}
		kept = append(kept, p)
		worst = max(worst, longestGap(byPart[p], joined.Add(-500*time.Millisecond), window))
	}
	sessions := gathered(t, regA, "bertstream_group_sessions_total")
	t.Logf("%s: partitions A kept %v, longest gap in their answers around the join %v (the slow batch: %v); A had %v group sessions",
		mode, kept, worst.Round(time.Millisecond), slow, sessions)
	if len(kept) != parts/3 {
		t.Fatalf("A kept %d partitions, want %d", len(kept), parts/3)
	}
	if mode != pipeline.RebalanceCooperative {
		return
	}
	if sessions != 1 {
		t.Errorf("A had %v group sessions: the join stopped it", sessions)
	}
	if worst > slow/2 {
		t.Errorf("the partitions A kept went %v without an answer during the join", worst)
	}
}

// longestGap is the longest time between answers of one partition (by
// their record timestamps) within [from, to].
func longestGap(msgs []*sarama.ConsumerMessage, from, to time.Time) time.Duration {
	var ts []time.Time
	for _, m := range msgs {
		if !m.Timestamp.Before(from) && !m.Timestamp.After(to) {
			ts = append(ts, m.Timestamp)
		}
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	gap := time.Duration(0)
	if len(ts) == 0 {
		return to.Sub(from)
	}
	gap = max(ts[0].Sub(from), to.Sub(ts[len(ts)-1]))
	for i := 1; i < len(ts); i++ {
		gap = max(gap, ts[i].Sub(ts[i-1]))
	}
	return gap
}

// TestMixedRebalanceRefused starts a cooperative worker in a group whose
// worker rebalances eagerly: the coordinator refuses it, and it says why
// (naming both protocols) while it waits, instead of joining.
func TestMixedRebalanceRefused(t *testing.T) {
	_, addr := newCluster(t)
	eager := baseConfig(addr)
	eager.Rebalance = pipeline.RebalanceEager
	a := startWorker(t, eager, &countingPredictor{})
	if err := eventually(10*time.Second, a.w.Ready); err != nil {
		t.Fatal("the eager worker never joined")
	}
	logs := &lockedBuffer{}
	coop := baseConfig(addr)
	coop.Logger = slog.New(slog.NewTextHandler(logs, nil))
	b := startWorker(t, coop, &countingPredictor{})
	want := "the group's workers rebalance eager, not cooperative like this one"
	if err := eventually(10*time.Second, func() bool { return strings.Contains(logs.String(), want) }); err != nil {
		t.Fatalf("the cooperative worker did not say %q; its log:\n%s", want, logs.String())
	}
	if b.w.Ready() {
		t.Error("the cooperative worker is in the eager group")
	}
}

// TestStaticRestart SIGKILLs a worker process with a static instance id
// and starts it again at once with the same id, within the session
// timeout, while requests keep coming: the new process gets the old one's
// partitions back, the other worker's stay where they are, and every
// request is answered, without a rebalance (the generation does not move),
// eager or cooperative: the coordinator hands the new process the old
// one's member slot, as Kafka does for a static member (KIP-345), though a
// restarted cooperative worker's join no longer lists what it owned.
func TestStaticRestart(t *testing.T) {
	for _, mode := range []string{pipeline.RebalanceCooperative, pipeline.RebalanceEager} {
		t.Run(mode, func(t *testing.T) {
			c, err := broker.Start(broker.Config{Partitions: 6, Topics: []string{inTopic, outTopic, dlqTopic}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			addr := c.ListenAddrs()[0]
			idList, msgs := keyedRequests(1200, 60)
			produced := produceOverTime(t, addr, msgs, 12, 30*time.Millisecond)
			spec := func(id string) workerSpec {
				return workerSpec{
					Brokers: []string{addr}, MaxBatch: 8, MaxInFlight: 32, Delay: 5 * time.Millisecond,
					SessionTimeout: 6 * time.Second, InstanceID: id, Rebalance: mode,
				}
			}
			w0 := startChild(t, spec("w0"))
			w0.waitLine(t, "ready", 30*time.Second)
			w1 := startChild(t, spec("w1"))
			w1.waitLine(t, "ready", 30*time.Second)
			before := stableAssignment(t, c)

			if err := w0.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			w0.wait(t, 10*time.Second)
			restarted := time.Now()
			w0 = startChild(t, spec("w0"))
			w0.waitLine(t, "ready", 30*time.Second)
			t.Logf("%s: the restarted worker was back in its group session %v after the kill", mode, time.Since(restarted).Round(time.Millisecond))
			after := stableAssignment(t, c)
			switch {
			case after.epoch != before.epoch:
				t.Errorf("the group went from generation %d to %d: the restart rebalanced it", before.epoch, after.epoch)
			case strings.Contains(w1.stderr.String(), "partition revoked") || strings.Contains(w1.stderr.String(), "group session ended"):
				t.Errorf("the other worker let partitions go or ended its session:\n%s", w1.stderr.String())
			}
			for id, parts := range before.parts {
				if !slices.Equal(parts, after.parts[id]) {
					t.Errorf("instance %s had partitions %v before the restart and %v after", id, parts, after.parts[id])
				}
			}
			<-produced
			out := readUntil(t, addr, idList, 60*time.Second, false)
			count, _ := decodeAnswers(t, out)
			dups := checkAllAnswered(t, idList, count)
			t.Logf("%s: generation %d before and %d after, assignment %v before and %v after, %d duplicates", mode, before.epoch, after.epoch, before.parts, after.parts, dups)
			if dups > 32 {
				t.Errorf("%d duplicates, over the in-flight bound 32 of the killed worker", dups)
			}
		})
	}
}

type assignment struct {
	epoch int32
	parts map[string][]int32 // by instance id
}

// stableAssignment waits until the group is stable with two members and
// returns its generation and the partitions of each instance.
func stableAssignment(t *testing.T, c *broker.Cluster) assignment {
	t.Helper()
	var a assignment
	if err := eventually(20*time.Second, func() bool {
		gi := c.GroupInfo(group)
		if gi == nil || gi.State != "Stable" || len(gi.Members) != 2 || gi.NumAssigned() != 6 {
			return false
		}
		a = assignment{epoch: gi.Epoch, parts: make(map[string][]int32)}
		for _, m := range gi.Members {
			if m.InstanceID == nil {
				t.Fatalf("member %s has no instance id", m.MemberID)
			}
			ps := slices.Clone(m.Assignment[inTopic])
			slices.Sort(ps)
			a.parts[*m.InstanceID] = ps
		}
		return true
	}); err != nil {
		t.Fatalf("the group never settled with two members: %+v", c.GroupInfo(group))
	}
	return a
}
