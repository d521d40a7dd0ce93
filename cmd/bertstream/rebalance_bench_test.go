package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// BenchmarkRebalanceGap is issue 10's scale-out measure with real
// processes: `bertstream broker` with six partitions, two `bertstream
// serve` workers answering a steady stream of classify requests, and a
// third worker started in the middle. It reports, for each rebalance
// protocol, the longest time without an answer on the partitions that did
// not change owner (by the group's assignments before and after, as the
// coordinator describes them), in the seconds around the join, beside the
// same gap before the join. One run per protocol; `make rebalance-gap`.
//
// BERTSTREAM_GAP_MODEL picks the model (default the bert-tiny classifier of
// the fixtures), BERTSTREAM_GAP_RATE the requests per second (default 200).
func BenchmarkRebalanceGap(b *testing.B) {
	model := os.Getenv("BERTSTREAM_GAP_MODEL")
	if model == "" {
		model = filepath.Join(fixtures, "bert-classifier")
	}
	rate := 200
	if s := os.Getenv("BERTSTREAM_GAP_RATE"); s != "" {
		var err error
		if rate, err = strconv.Atoi(s); err != nil || rate <= 0 {
			b.Fatalf("BERTSTREAM_GAP_RATE %q: want requests per second", s)
		}
	}
	for _, mode := range []string{"eager", "cooperative"} {
		b.Run(mode, func(b *testing.B) {
			for range b.N {
				kept, around, before := rebalanceGap(b, mode, model, rate)
				b.ReportMetric(float64(around.Milliseconds()), "gap-ms")
				b.ReportMetric(float64(before.Milliseconds()), "gap-before-ms")
				b.ReportMetric(float64(kept), "kept-partitions")
			}
		})
	}
}

func rebalanceGap(b *testing.B, mode, model string, rate int) (kept int, around, before time.Duration) {
	broker := startProc(b, "broker", "--listen", "127.0.0.1:0", "--partitions", "6")
	addr := broker.line(b, regexp.MustCompile(`^broker listening on (\S+)$`), 30*time.Second)[1]
	serve := func(name string) *proc {
		p := startProc(b, "serve", "--brokers", addr, "--model", model, "--http", "", "--log-format", "text",
			"--rebalance", mode, "--client-id", name, "--instance-id", name, "--max-batch", "8")
		if !waitFor(60*time.Second, func() bool { return strings.Contains(p.stderr.String(), `msg="group session started"`) }) {
			b.Fatalf("worker %s never joined; its log:\n%s", name, p.stderr.String())
		}
		return p
	}

	sc := sarama.NewConfig()
	sc.Version = sarama.V3_0_0_0
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	// Answers carry the worker's time of producing them.
	consumer, err := sarama.NewConsumer([]string{addr}, sc)
	if err != nil {
		b.Fatal(err)
	}
	defer consumer.Close()
	serve("w1")
	serve("w2")

	var (
		mu      sync.Mutex
		answers = make(map[int32][]time.Time)
	)
	parts, err := consumer.Partitions(defaultOutTopic)
	if err != nil {
		b.Fatal(err)
	}
	for _, p := range parts {
		pc, err := consumer.ConsumePartition(defaultOutTopic, p, sarama.OffsetOldest)
		if err != nil {
			b.Fatal(err)
		}
		defer pc.Close()
		go func() {
			for m := range pc.Messages() {
				mu.Lock()
				answers[m.Partition] = append(answers[m.Partition], m.Timestamp)
				mu.Unlock()
			}
		}()
	}

	stop := make(chan struct{})
	produced := make(chan int)
	go func() { produced <- steadyLoad(b, addr, rate, stop) }()
	admin, err := sarama.NewClusterAdmin([]string{addr}, sc)
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close()

	time.Sleep(4 * time.Second)
	owners := groupOwners(b, admin)
	joined := time.Now()
	serve("w3")
	time.Sleep(6 * time.Second)
	close(stop)
	n := <-produced
	// Let the answers of the last requests arrive.
	time.Sleep(2 * time.Second)
	after := groupOwners(b, admin)

	mu.Lock()
	defer mu.Unlock()
	total := 0
	for p, ts := range answers {
		total += len(ts)
		if owners[p] == "" || owners[p] != after[p] {
			continue
		}
		kept++
		around = max(around, longestGap(ts, joined.Add(-time.Second), joined.Add(5*time.Second)))
		before = max(before, longestGap(ts, joined.Add(-3*time.Second), joined.Add(-time.Second)))
	}
	b.Logf("%s: %d requests at %d/s, %d answers; owners before the join %v, after %v; longest gap on the %d partitions that kept their owner: %v around the join, %v before it",
		mode, n, rate, total, owners, after, kept, around.Round(time.Millisecond), before.Round(time.Millisecond))
	if kept == 0 {
		b.Fatal("no partition kept its owner")
	}
	return kept, around, before
}

// steadyLoad produces classify requests at rate per second, keyed over
// many keys so that every partition gets its share, until stop closes,
// and returns how many it produced.
func steadyLoad(b *testing.B, addr string, rate int, stop <-chan struct{}) int {
	sc := sarama.NewConfig()
	sc.Version = sarama.V3_0_0_0
	sc.Producer.Return.Successes = true
	sc.Producer.Partitioner = sarama.NewHashPartitioner
	p, err := sarama.NewAsyncProducer([]string{addr}, sc)
	if err != nil {
		b.Error(err)
		return 0
	}
	defer p.Close()
	go func() {
		for range p.Successes() {
		}
	}()
	go func() {
		for err := range p.Errors() {
			b.Error(err)
		}
	}()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-stop:
			return n
		case <-tick.C:
		}
		id := "g" + strconv.Itoa(n)
		v, _ := json.Marshal(map[string]any{"id": id, "task": "classify", "text": "a request number " + strconv.Itoa(n)})
		p.Input() <- &sarama.ProducerMessage{Topic: defaultInTopic, Key: sarama.StringEncoder("k" + strconv.Itoa(n%60)), Value: sarama.ByteEncoder(v)}
	}
}

// groupOwners is the client id of the member each input partition is
// assigned to, as the coordinator describes the group.
func groupOwners(b *testing.B, admin sarama.ClusterAdmin) map[int32]string {
	ds, err := admin.DescribeConsumerGroups([]string{defaultGroup})
	if err != nil || len(ds) != 1 {
		b.Fatalf("describing group %s: %v", defaultGroup, err)
	}
	owners := make(map[int32]string)
	for _, m := range ds[0].Members {
		a, err := m.GetMemberAssignment()
		if err != nil {
			b.Fatalf("assignment of %s: %v", m.ClientId, err)
		}
		if a == nil {
			continue
		}
		for _, p := range a.Topics[defaultInTopic] {
			owners[p] = m.ClientId
		}
	}
	return owners
}

// longestGap is the longest time without an answer within [from, to].
func longestGap(ts []time.Time, from, to time.Time) time.Duration {
	var in []time.Time
	for _, t := range ts {
		if !t.Before(from) && !t.After(to) {
			in = append(in, t)
		}
	}
	if len(in) == 0 {
		return to.Sub(from)
	}
	sort.Slice(in, func(i, j int) bool { return in[i].Before(in[j]) })
	gap := max(in[0].Sub(from), to.Sub(in[len(in)-1]))
	for i := 1; i < len(in); i++ {
		gap = max(gap, in[i].Sub(in[i-1]))
	}
	return gap
}
