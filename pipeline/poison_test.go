package pipeline_test

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/bertstream/bertstream/pipeline"
)

// poisons are requests no model can answer, each with the dead-letter
// reason it must get.
var poisons = []struct {
	name   string
	value  string
	reason pipeline.Reason
}{
	{"truncated json", `{"id":"p","task":"classify","text":"x"`, pipeline.ReasonMalformed},
	{"trailing data", `{"id":"p","task":"classify","text":"x"} {}`, pipeline.ReasonMalformed},
	{"not an object", `["classify","x"]`, pipeline.ReasonMalformed},
	{"text not a string", `{"id":"p","task":"classify","text":7}`, pipeline.ReasonMalformed},
	{"empty value", ``, pipeline.ReasonMalformed},
	{"unknown task", `{"id":"p","task":"translate","text":"x"}`, pipeline.ReasonUnknownTask},
	{"no task", `{"id":"p","text":"x"}`, pipeline.ReasonUnknownTask},
	{"no text", `{"id":"p","task":"classify"}`, pipeline.ReasonMissingText},
	{"empty text", `{"id":"p","task":"classify","text":""}`, pipeline.ReasonMissingText},
	{"blank text", `{"id":"p","task":"classify","text":" \t\n"}`, pipeline.ReasonMissingText},
	{"empty pair", `{"id":"p","task":"classify","text":"x","text_pair":""}`, pipeline.ReasonMissingText},
	{"invalid utf-8", "{\"id\":\"p\",\"task\":\"classify\",\"text\":\"caf\xe9\"}", pipeline.ReasonInvalidUTF8},
	{"too many bytes", `{"id":"p","task":"classify","text":"` + strings.Repeat("a", 300) + `"}`, pipeline.ReasonTooLong},
	{"too many tokens", `{"id":"p","task":"classify","text":"` + strings.Repeat("w ", 40) + `"}`, pipeline.ReasonTooLong},
	{"no id", `{"task":"classify","text":"x"}`, pipeline.ReasonMissingID},
	{"future version", `{"v":2,"id":"p","task":"classify","text":"x"}`, pipeline.ReasonVersion},
	{"negative top_k", `{"id":"p","task":"classify","text":"x","top_k":-1}`, pipeline.ReasonBadRequest},
}

// TestPoisonInputs mixes every kind of bad request into good ones: each
// bad one lands on the dead-letter topic with its original key, bytes and
// headers and the reason and source in headers; the good ones are
// answered; the offsets move on past all of them.
func TestPoisonInputs(t *testing.T) {
	c, addr := newCluster(t)
	cfg := baseConfig(addr)
	cfg.MaxTextBytes = 200
	startWorker(t, cfg, &countingPredictor{maxTokens: 30})

	var msgs []testMsg
	var good []string
	for i, p := range poisons {
		id := "good-" + strconv.Itoa(i)
		good = append(good, id)
		msgs = append(msgs, request(id, "fine text"))
		msgs = append(msgs, testMsg{
			key:     "poison-" + strconv.Itoa(i),
			value:   []byte(p.value),
			headers: []sarama.RecordHeader{{Key: []byte("trace"), Value: []byte("t" + strconv.Itoa(i))}},
		})
	}
	sent := produce(t, addr, msgs)

	out := readUntil(t, addr, good, 30*time.Second, false)
	count, _ := decodeAnswers(t, out)
	if dups := checkAllAnswered(t, good, count); dups != 0 || len(out) != len(good) {
		t.Errorf("%d answers for %d good requests", len(out), len(good))
	}
	dead := readAll(t, addr, dlqTopic, len(poisons), 30*time.Second, false)
	byKey := make(map[string]*sarama.ConsumerMessage)
	for _, m := range dead {
		if byKey[string(m.Key)] != nil {
			t.Errorf("%s dead-lettered twice", m.Key)
		}
		byKey[string(m.Key)] = m
	}
	for i, p := range poisons {
		src := sent[2*i+1]
		m := byKey["poison-"+strconv.Itoa(i)]
		if m == nil {
			t.Errorf("%s: not dead-lettered", p.name)
			continue
		}
		if !bytes.Equal(m.Value, []byte(p.value)) {
			t.Errorf("%s: dead letter holds %q, want the original bytes %q", p.name, m.Value, p.value)
		}
		hs := make(map[string]string)
		for _, h := range m.Headers {
			hs[string(h.Key)] = string(h.Value)
		}
		want := map[string]string{
			"trace":                  "t" + strconv.Itoa(i),
			pipeline.HeaderErrorCode: string(p.reason),
			pipeline.HeaderTopic:     inTopic,
			pipeline.HeaderPartition: strconv.Itoa(int(src.Partition)),
			pipeline.HeaderOffset:    strconv.FormatInt(src.Offset, 10),
		}
		for k, v := range want {
			if hs[k] != v {
				t.Errorf("%s: header %s is %q, want %q", p.name, k, hs[k], v)
			}
		}
		if !strings.HasPrefix(hs[pipeline.HeaderError], string(p.reason)+": ") {
			t.Errorf("%s: error header %q does not explain the reason %s", p.name, hs[pipeline.HeaderError], p.reason)
		}
	}
	waitCommitted(t, c, 20*time.Second)
}

// TestDeadLetterWriteFails makes the dead-letter topic refuse writes: the
// poison request's offset must not be committed, nor any after it in its
// partition, even though the good requests after it are answered; once the
// topic takes writes again, the request is dead-lettered and the offsets
// move on.
func TestDeadLetterWriteFails(t *testing.T) {
	c, addr := newCluster(t)
	h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: dlqTopic, Err: kerr.UnknownServerError, Count: -1})
	startWorker(t, baseConfig(addr), &countingPredictor{})

	// One key, so one partition, in this order.
	msgs := []testMsg{request("before", "a b"), {value: []byte("not json")}, request("after", "c d")}
	for i := range msgs {
		msgs[i].key = "k"
	}
	sent := produce(t, addr, msgs)
	part, poisonAt := sent[1].Partition, sent[1].Offset

	readUntil(t, addr, []string{"before", "after"}, 30*time.Second, false)
	if err := h.Wait(t.Context(), 3); err != nil {
		t.Fatal(err)
	}
	// The worker keeps retrying; give it time to commit what it must not.
	time.Sleep(500 * time.Millisecond)
	if gi := c.GroupInfo(group); gi != nil {
		if cm, ok := gi.Commits[inTopic][part]; ok && cm.Offset > poisonAt {
			t.Fatalf("committed offset %d past the request at %d whose dead letter was refused", cm.Offset, poisonAt)
		}
	}
	h.Remove()
	dead := readAll(t, addr, dlqTopic, 1, 30*time.Second, false)
	if len(dead) < 1 || string(dead[0].Value) != "not json" {
		t.Errorf("dead letters after the topic recovered: %v", dead)
	}
	waitCommitted(t, c, 20*time.Second)
}
