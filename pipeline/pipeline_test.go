package pipeline_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/bertstream/bertstream/pipeline/broker"
)

// keyedRequests are n requests over nkeys keys, so that per-key order can
// be checked: the id's number grows with the production order.
func keyedRequests(n, nkeys int) ([]string, []testMsg) {
	idList := make([]string, n)
	msgs := make([]testMsg, n)
	for i := range n {
		id := "r" + strconv.Itoa(i)
		idList[i] = id
		m := request(id, "the quick brown fox number "+strconv.Itoa(i))
		m.key = "user-" + strconv.Itoa(i%nkeys)
		msgs[i] = m
	}
	return idList, msgs
}

// answerKeyed produces n requests over keys keys to a running worker and
// checks that each is answered once, in per-key order, and committed.
func answerKeyed(t *testing.T, c *broker.Cluster, addr string, n, keys int) {
	t.Helper()
	idList, msgs := keyedRequests(n, keys)
	produce(t, addr, msgs)
	out := readAll(t, addr, outTopic, len(idList), 60*time.Second, false)
	count, _ := decodeAnswers(t, out)
	if dups := checkAllAnswered(t, idList, count); dups != 0 {
		t.Errorf("%d duplicate answers without any failure", dups)
	}
	checkKeyOrder(t, out)
	waitCommitted(t, c, 20*time.Second)
}

// checkKeyOrder checks that, per key, answers come in request order.
func checkKeyOrder(t *testing.T, msgs []*sarama.ConsumerMessage) {
	t.Helper()
	last := make(map[string]int)
	seen := make(map[string]bool)
	for _, m := range msgs { // a partition's messages arrive in offset order
		var r struct{ ID string }
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(r.ID[1:])
		k := string(m.Key)
		if seen[k] && n < last[k] && !seen[k+"/"+r.ID] {
			t.Errorf("key %s: answer %s after r%d", k, r.ID, last[k])
		}
		seen[k], seen[k+"/"+r.ID] = true, true
		last[k] = max(last[k], n)
	}
}

func TestBaseline(t *testing.T) {
	c, addr := newCluster(t)
	pred := &countingPredictor{}
	startWorker(t, baseConfig(addr), pred)
	answerKeyed(t, c, addr, 300, 12)

	multi := 0
	for _, n := range pred.batchSizes() {
		if n > 8 {
			t.Errorf("batch of %d over max batch 8", n)
		}
		if n > 1 {
			multi++
		}
	}
	if multi == 0 {
		t.Errorf("no batch of more than one request: %v", pred.batchSizes())
	}
}

// TestBatchTokenLimit checks that a batch closes before its tokens pass
// MaxTokens, however many requests fit MaxBatch, and that a request over
// the limit on its own still gets a batch of its own.
func TestBatchTokenLimit(t *testing.T) {
	_, addr := newCluster(t)
	pred := &countingPredictor{}
	cfg := baseConfig(addr)
	cfg.MaxBatch = 16
	cfg.MaxTokens = 40
	cfg.MaxWait = 50 * time.Millisecond
	startWorker(t, cfg, pred)

	idList := ids("t", 120)
	msgs := make([]testMsg, len(idList))
	for i, id := range idList {
		words := 8 // 10 tokens: at most 4 to a batch
		if i%30 == 29 {
			words = 48 // 50 tokens: over the limit alone
		}
		msgs[i] = request(id, strings.Repeat("w ", words))
	}
	produce(t, addr, msgs)
	out := readUntil(t, addr, idList, 30*time.Second, false)
	count, _ := decodeAnswers(t, out)
	checkAllAnswered(t, idList, count)
	sizes, tokens := pred.batchSizes(), pred.batchTokens()
	full := 0
	for i, n := range tokens {
		if n > cfg.MaxTokens && sizes[i] > 1 {
			t.Errorf("batch of %d requests holds %d tokens, over max tokens %d", sizes[i], n, cfg.MaxTokens)
		}
		if n == cfg.MaxTokens {
			full++
		}
	}
	if full == 0 {
		t.Errorf("no batch filled up to the token limit: sizes %v tokens %v", sizes, tokens)
	}
}
