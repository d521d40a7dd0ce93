package pipeline_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/bertstream/bertstream/pipeline/broker"
)

// TestChaos is issue 10's scenario, shrunk to run in the suite: two worker
// processes in one group on a broker with a data directory and six
// partitions, requests queued, one worker SIGKILLed and restarted every
// 1.5s for 12s, and the broker stopped and restarted on the same port and
// data directory once in the middle. Once the churn stops, every request
// must be answered: at least once with no more duplicates than the
// in-flight bound allows per kill and per broker restart, exactly once with
// none on the read-committed output.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("a 12s churn of worker processes")
	}
	for _, eos := range []bool{false, true} {
		name := "at-least-once"
		if eos {
			name = "exactly-once"
		}
		t.Run(name, func(t *testing.T) { chaos(t, eos) })
	}
}

func chaos(t *testing.T, eos bool) {
	const (
		nreq     = 4000
		churn    = 12 * time.Second
		every    = 1500 * time.Millisecond
		inFlight = 32
	)
	bc := broker.Config{Partitions: 6, Topics: []string{inTopic, outTopic, dlqTopic}, DataDir: t.TempDir()}
	opt := kfake.GroupMinSessionTimeout(500 * time.Millisecond)
	c, err := broker.Start(bc, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	addr := c.ListenAddrs()[0]
	bc.Listen = addr
	idList, msgs := keyedRequests(nreq, 60)
	produce(t, addr, msgs)

	spec := func(i int) workerSpec {
		return workerSpec{
			Brokers: []string{addr}, ExactlyOnce: eos, TransactionalID: fmt.Sprintf("chaos-%d", i),
			MaxBatch: 8, MaxInFlight: inFlight, Delay: 40 * time.Millisecond,
			// The default drain timeout: a rebalance timeout (15s) over
			// the 10s read timeout of the worker's other requests.
			SessionTimeout: 2 * time.Second,
		}
	}
	workers := []*child{startChild(t, spec(0)), startChild(t, spec(1))}
	start := time.Now()
	kills := 0
	restarted := false
	for i := 0; time.Since(start) < churn; i++ {
		time.Sleep(every)
		w := i % 2
		if err := workers[w].cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		workers[w].wait(t, 10*time.Second)
		kills++
		if !restarted && time.Since(start) > churn/2 {
			c.Close()
			time.Sleep(300 * time.Millisecond)
			if c, err = broker.Start(bc, opt); err != nil {
				t.Fatalf("restarting the broker on %s: %v", addr, err)
			}
			restarted = true
		}
		workers[w] = startChild(t, spec(w))
	}
	atEnd := sumHighWatermarks(c, outTopic)
	t.Logf("churn over after %v: %d kills, one broker restart, %d records on the output topic", time.Since(start).Round(time.Millisecond), kills, atEnd)

	settle := time.Now()
	out := readUntil(t, addr, idList, 90*time.Second, eos)
	count, _ := decodeAnswers(t, out)
	dups := checkAllAnswered(t, idList, count)
	t.Logf("answered %d/%d, %d duplicates, all answered %v after the churn", len(count), nreq, dups, time.Since(settle).Round(time.Millisecond))
	if eos {
		if dups != 0 {
			t.Errorf("%d duplicates on the read-committed output in exactly-once mode", dups)
		}
		return
	}
	// Each kill may redo what the killed worker had answered and not
	// committed; the broker restart may do so for both workers.
	if bound := (kills + 2) * inFlight; dups > bound {
		t.Errorf("%d duplicates, over the bound of %d in flight for each of %d kills and two workers at the broker restart", dups, inFlight, kills)
	}
}
