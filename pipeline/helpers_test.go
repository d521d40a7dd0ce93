package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/bertstream/bertstream/bert/task"
	"github.com/bertstream/bertstream/pipeline"
	"github.com/bertstream/bertstream/pipeline/broker"
)

const (
	inTopic  = "requests"
	outTopic = "answers"
	dlqTopic = "dead-letters"
	group    = "workers"
)

// countingPredictor is a deterministic stand-in for the model, for the
// tests of the pipeline's mechanics: it answers classify with the number of
// words, refuses texts over maxTokens tokens, and can be slowed down.
type countingPredictor struct {
	maxTokens int
	delay     time.Duration
	// onBatch, when set, is told of each batch before it is answered.
	onBatch func(n int)

	mu      sync.Mutex
	batches []int
	tokens  []int
}

func (p *countingPredictor) Name() string    { return "counting" }
func (p *countingPredictor) Tasks() []string { return []string{"classify", "embed"} }

func (p *countingPredictor) CountTokens(r task.Request) (int, error) {
	n := len(strings.Fields(r.Text)) + 2
	if r.HasPair {
		n += len(strings.Fields(r.TextPair)) + 1
	}
	if p.maxTokens > 0 && n > p.maxTokens {
		return 0, fmt.Errorf("%w: %w: %d tokens, the model takes %d", task.ErrBadRequest, task.ErrTooLong, n, p.maxTokens)
	}
	return n, nil
}

func (p *countingPredictor) Predict(ctx context.Context, batch []task.Request) []task.Result {
	tokens := 0
	for _, r := range batch {
		if n, err := p.CountTokens(r); err == nil {
			tokens += n
		}
	}
	p.mu.Lock()
	p.batches = append(p.batches, len(batch))
	p.tokens = append(p.tokens, tokens)
	n := len(p.batches)
	p.mu.Unlock()
	if p.onBatch != nil {
		p.onBatch(n)
	}
	if p.delay > 0 {
		select {
		case <-time.After(p.delay):
		case <-ctx.Done():
		}
	}
	outs := make([]task.Result, len(batch))
	for i, r := range batch {
		if _, err := p.CountTokens(r); err != nil {
			outs[i].Err = err
			continue
		}
		outs[i].Value = map[string]any{"words": len(strings.Fields(r.Text))}
	}
	return outs
}

func (p *countingPredictor) batchTokens() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.tokens...)
}

func (p *countingPredictor) batchSizes() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.batches...)
}

func testLogger(testing.TB) *slog.Logger {
	if os.Getenv("PIPELINE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newCluster starts a one-broker kfake cluster on loopback with the
// pipeline's three topics, three partitions each.
func newCluster(t testing.TB, opts ...kfake.Opt) (*broker.Cluster, string) {
	t.Helper()
	c, err := broker.Start(broker.Config{Topics: []string{inTopic, outTopic, dlqTopic}}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, c.ListenAddrs()[0]
}

func baseConfig(addr string) pipeline.Config {
	return pipeline.Config{
		Brokers:           []string{addr},
		InTopic:           inTopic,
		OutTopic:          outTopic,
		DLQTopic:          dlqTopic,
		Group:             group,
		MaxBatch:          8,
		MaxWait:           5 * time.Millisecond,
		SessionTimeout:    6 * time.Second,
		HeartbeatInterval: 300 * time.Millisecond,
		DrainTimeout:      10 * time.Second,
	}
}

// runningWorker is a Worker running in a goroutine.
type runningWorker struct {
	w    *pipeline.Worker
	stop context.CancelFunc
	done chan error
}

func startWorker(t *testing.T, cfg pipeline.Config, pred task.Predictor) *runningWorker {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	w, err := pipeline.NewWorker(cfg, pred)
	if err != nil {
		t.Fatal(err)
	}
	return runWorker(t, w)
}

// runWorker runs w in a goroutine until the test ends.
func runWorker(t *testing.T, w *pipeline.Worker) *runningWorker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	rw := &runningWorker{w: w, stop: cancel, done: make(chan error, 1)}
	go func() { rw.done <- w.Run(ctx) }()
	t.Cleanup(func() { rw.shutdown(t) })
	return rw
}

// shutdown stops the worker and waits for its drain; it may be called more
// than once.
func (rw *runningWorker) shutdown(t *testing.T) {
	t.Helper()
	rw.stop()
	select {
	case err, ok := <-rw.done:
		if ok && err != nil {
			t.Errorf("worker: %v", err)
		}
		if ok {
			close(rw.done)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not stop within 30s")
	}
}

func saramaConfig() *sarama.Config {
	sc := sarama.NewConfig()
	sc.Version = sarama.V3_0_0_0
	sc.Producer.Return.Successes = true
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Partitioner = sarama.NewHashPartitioner
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	return sc
}

type testMsg struct {
	key     string
	value   []byte
	headers []sarama.RecordHeader
}

func request(id, text string) testMsg {
	b, _ := json.Marshal(map[string]any{"v": 1, "id": id, "task": "classify", "text": text})
	return testMsg{key: id, value: b}
}

// produce writes messages to the input topic and waits for their acks.
func produce(t testing.TB, addr string, msgs []testMsg) []*sarama.ProducerMessage {
	t.Helper()
	return produceWith(t, saramaConfig(), addr, msgs)
}

// produceWith is produce with a client configuration (credentials); the
// messages it returns carry the partition and offset each landed at.
//
// The producer is idempotent: a produce the broker applied but whose answer
// was lost (a timeout, or Sarama closing a connection under a request when
// it re-registers the broker, seen under load) is retried, and a plain
// producer would then write the requests twice. The tests count duplicate
// answers by request id; a request written twice is answered twice, rightly.
func produceWith(t testing.TB, sc *sarama.Config, addr string, msgs []testMsg) []*sarama.ProducerMessage {
	t.Helper()
	sc.Producer.Idempotent = true
	sc.Net.MaxOpenRequests = 1
	p, err := sarama.NewSyncProducer([]string{addr}, sc)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	pms := make([]*sarama.ProducerMessage, len(msgs))
	for i, m := range msgs {
		pms[i] = &sarama.ProducerMessage{Topic: inTopic, Key: sarama.StringEncoder(m.key), Value: sarama.ByteEncoder(m.value), Headers: m.headers}
	}
	if err := p.SendMessages(pms); err != nil {
		t.Fatal(err)
	}
	return pms
}

// readAll reads a topic's partitions from the start until it has want
// messages or timeout passes, and then a little longer to catch duplicates.
func readAll(t *testing.T, addr, topic string, want int, timeout time.Duration, readCommitted bool) []*sarama.ConsumerMessage {
	t.Helper()
	sc := saramaConfig()
	if readCommitted {
		sc.Consumer.IsolationLevel = sarama.ReadCommitted
	}
	return readWith(t, sc, addr, topic, timeout, func(got []*sarama.ConsumerMessage) bool { return len(got) >= want })
}

// readUntil reads the output topic until every id has an answer or timeout
// passes, and then a little longer to catch duplicates.
func readUntil(t *testing.T, addr string, idList []string, timeout time.Duration, readCommitted bool) []*sarama.ConsumerMessage {
	t.Helper()
	sc := saramaConfig()
	if readCommitted {
		sc.Consumer.IsolationLevel = sarama.ReadCommitted
	}
	return readUntilWith(t, sc, addr, idList, timeout)
}

// readUntilWith is readUntil with a client configuration (credentials).
func readUntilWith(t *testing.T, sc *sarama.Config, addr string, idList []string, timeout time.Duration) []*sarama.ConsumerMessage {
	t.Helper()
	want := make(map[string]bool, len(idList))
	for _, id := range idList {
		want[id] = true
	}
	seen := make(map[string]bool)
	return readWith(t, sc, addr, outTopic, timeout, func(got []*sarama.ConsumerMessage) bool {
		var r struct{ ID string }
		if len(got) > 0 && json.Unmarshal(got[len(got)-1].Value, &r) == nil && want[r.ID] {
			seen[r.ID] = true
		}
		return len(seen) == len(want)
	})
}

// readWith reads a topic's partitions from the start until done says so
// (it is called first with nothing, then after each message) or timeout
// passes, and then a little longer to catch duplicates.
func readWith(t *testing.T, sc *sarama.Config, addr, topic string, timeout time.Duration, done func([]*sarama.ConsumerMessage) bool) []*sarama.ConsumerMessage {
	t.Helper()
	c, err := sarama.NewConsumer([]string{addr}, sc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	parts, err := c.Partitions(topic)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan *sarama.ConsumerMessage, 1024)
	stop := make(chan struct{})
	for _, p := range parts {
		pc, err := c.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		go func() {
			for m := range pc.Messages() {
				select {
				case ch <- m:
				case <-stop:
					return
				}
			}
		}()
	}
	// Runs before the partition consumers close: their goroutines may be
	// blocked on ch.
	defer close(stop)
	var got []*sarama.ConsumerMessage
	deadline := time.After(timeout)
	for finished := done(got); !finished; {
		select {
		case m := <-ch:
			got = append(got, m)
			finished = done(got)
		case <-deadline:
			t.Errorf("%s: still waiting after %v and %d messages", topic, timeout, len(got))
			return got
		}
	}
	settle := time.After(300 * time.Millisecond)
	for {
		select {
		case m := <-ch:
			got = append(got, m)
		case <-settle:
			return got
		}
	}
}

// decodeAnswers checks the answers' schema and counts them per id.
func decodeAnswers(t *testing.T, msgs []*sarama.ConsumerMessage) (map[string]int, []pipeline.Response) {
	t.Helper()
	count := make(map[string]int)
	var rs []pipeline.Response
	for _, m := range msgs {
		var r pipeline.Response
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatalf("answer at %s/%d@%d: %v: %s", m.Topic, m.Partition, m.Offset, err, m.Value)
		}
		if r.V != pipeline.SchemaVersion || r.ID == "" || r.Error != nil || r.Result == nil || r.Model == "" {
			t.Fatalf("answer %s does not follow the schema", m.Value)
		}
		if string(m.Key) == "" {
			t.Fatalf("answer %s has no key", m.Value)
		}
		count[r.ID]++
		rs = append(rs, r)
	}
	return count, rs
}

// checkAllAnswered reports ids never answered and returns how many
// duplicates there were.
func checkAllAnswered(t *testing.T, ids []string, count map[string]int) int {
	t.Helper()
	var missing []string
	dups := 0
	for _, id := range ids {
		switch n := count[id]; {
		case n == 0:
			missing = append(missing, id)
		case n > 1:
			dups += n - 1
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		t.Errorf("%d of %d requests never answered, e.g. %v", len(missing), len(ids), missing[:min(5, len(missing))])
	}
	return dups
}

// waitCommitted waits until the group's committed offsets reach the end of
// every input partition.
func waitCommitted(t *testing.T, c *broker.Cluster, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		lag := committedLag(c)
		if lag == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("committed offsets still %d behind the log end after %v", lag, timeout)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func committedLag(c *broker.Cluster) int64 {
	gi := c.GroupInfo(group)
	var lag int64
	for _, pi := range c.PartitionInfos(inTopic) {
		var off int64
		if gi != nil {
			if cm, ok := gi.Commits[inTopic][pi.Partition]; ok {
				off = cm.Offset
			}
		}
		lag += pi.HighWatermark - off
	}
	return lag
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i)
	}
	return out
}

func requests(idList []string) []testMsg {
	msgs := make([]testMsg, len(idList))
	for i, id := range idList {
		msgs[i] = request(id, strings.Repeat("word ", 1+i%7))
	}
	return msgs
}

var errTimeout = errors.New("timed out")

// eventually polls cond until it holds or timeout passes.
func eventually(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return errTimeout
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}
