package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/bert/task"
	"github.com/bertstream/bertstream/loader"
	"github.com/bertstream/bertstream/pipeline"
)

const tinyModels = "../testdata/bert-tiny/"

func loadTiny(t testing.TB, name string, truncate bool) *bert.Predictor {
	t.Helper()
	p, err := loader.LoadPredictor(tinyModels+name, loader.Options{}, bert.PredictorOptions{Truncate: truncate})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Model.Close() })
	return p
}

// modelCase is one request to a real model and what must become of it:
// an answer equal to the model's own, or a dead letter with reason.
type modelCase struct {
	req    map[string]any
	reason pipeline.Reason
}

// TestRealModel runs the pipeline on the bert-tiny checkpoints: every task
// each model supports is answered as the model answers it outside the
// pipeline, and what it cannot serve is dead-lettered with the right
// reason.
func TestRealModel(t *testing.T) {
	long := strings.Repeat("the market rallied on strong earnings ", 20)
	for _, tc := range []struct {
		model    string
		truncate bool
		cases    []modelCase
	}{
		{"bert-classifier", false, []modelCase{
			{req: map[string]any{"task": "classify", "text": "Stocks fell sharply as investors worried about rates."}},
			{req: map[string]any{"task": "classify", "text": "The striker scored twice in the final.", "text_pair": "A late goal sealed it."}},
			{req: map[string]any{"task": "classify", "text": "Astronomers found water on a distant planet."}},
			{req: map[string]any{"task": "embed", "text": "a sentence to embed"}},
			{req: map[string]any{"task": "embed", "text": "a sentence to embed", "pooling": "cls", "normalize": true}},
			{req: map[string]any{"task": "embed", "text": "another one", "pooling": "max"}},
			{req: map[string]any{"task": "fill-mask", "text": "the [MASK] is blue"}, reason: pipeline.ReasonUnknownTask},
			{req: map[string]any{"task": "classify", "text": long}, reason: pipeline.ReasonTooLong},
			{req: map[string]any{"task": "embed", "text": "x", "pooling": "median"}, reason: pipeline.ReasonBadRequest},
		}},
		{"bert-classifier", true, []modelCase{
			{req: map[string]any{"task": "classify", "text": long}},
			{req: map[string]any{"task": "classify", "text": "short and sweet"}},
		}},
		{"bert-pretraining", false, []modelCase{
			{req: map[string]any{"task": "fill-mask", "text": "the capital of france is [MASK]."}},
			{req: map[string]any{"task": "fill-mask", "text": "[MASK] went to the [MASK] store", "top_k": 3}},
			{req: map[string]any{"task": "nsp", "text": "I went to the store.", "text_pair": "I bought milk."}},
			{req: map[string]any{"task": "embed", "text": "pretrained embedding", "normalize": true}},
			{req: map[string]any{"task": "classify", "text": "no head for this"}, reason: pipeline.ReasonUnknownTask},
			{req: map[string]any{"task": "nsp", "text": "a lonely sentence"}, reason: pipeline.ReasonBadRequest},
		}},
	} {
		t.Run(fmt.Sprintf("%s/truncate=%t", tc.model, tc.truncate), func(t *testing.T) {
			p := loadTiny(t, tc.model, tc.truncate)
			c, addr := newCluster(t)
			startWorker(t, baseConfig(addr), p)

			var msgs []testMsg
			var answered []string
			want := make(map[string]modelCase)
			for i, mc := range tc.cases {
				id := "m" + strconv.Itoa(i)
				mc.req["id"] = id
				b, err := json.Marshal(mc.req)
				if err != nil {
					t.Fatal(err)
				}
				msgs = append(msgs, testMsg{key: id, value: b})
				want[id] = mc
				if mc.reason == "" {
					answered = append(answered, id)
				}
			}
			produce(t, addr, msgs)
			out := readUntil(t, addr, answered, 60*time.Second, false)
			count, rs := decodeAnswers(t, out)
			checkAllAnswered(t, answered, count)
			for _, r := range rs {
				mc := want[r.ID]
				if mc.reason != "" {
					t.Errorf("%s: answered, want dead-lettered as %s", r.ID, mc.reason)
					continue
				}
				if r.Model != tc.model || r.Task != mc.req["task"] {
					t.Errorf("%s: model %q task %q", r.ID, r.Model, r.Task)
				}
				direct := directAnswer(t, p, mc.req)
				got, _ := json.Marshal(r.Result)
				if err := sameJSON(got, direct, 1e-4); err != nil {
					t.Errorf("%s: the pipeline's answer differs from the model's: %v\npipeline: %s\nmodel:    %s", r.ID, err, got, direct)
				}
			}
			dead := readAll(t, addr, dlqTopic, len(tc.cases)-len(answered), 30*time.Second, false)
			for _, m := range dead {
				mc := want[string(m.Key)]
				if got := header(m, pipeline.HeaderErrorCode); got != string(mc.reason) {
					t.Errorf("%s dead-lettered as %q (%s), want %q", m.Key, got, header(m, pipeline.HeaderError), mc.reason)
				}
			}
			waitCommitted(t, c, 20*time.Second)
		})
	}
}

func header(m *sarama.ConsumerMessage, key string) string {
	for _, h := range m.Headers {
		if string(h.Key) == key {
			return string(h.Value)
		}
	}
	return ""
}

// directAnswer asks the model itself, outside the pipeline.
func directAnswer(t *testing.T, p *bert.Predictor, req map[string]any) []byte {
	t.Helper()
	b, _ := json.Marshal(req)
	var r struct {
		Task, Text, Pooling string
		TextPair            *string `json:"text_pair"`
		TopK                int     `json:"top_k"`
		Normalize           bool
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	tr := task.Request{Task: r.Task, Text: r.Text, TopK: r.TopK, Pooling: r.Pooling, Normalize: r.Normalize}
	if r.TextPair != nil {
		tr.TextPair, tr.HasPair = *r.TextPair, true
	}
	res := p.Predict(context.Background(), []task.Request{tr})[0]
	if res.Err != nil {
		t.Fatalf("the model refuses %s: %v", b, res.Err)
	}
	out, err := json.Marshal(res.Value)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sameJSON compares two JSON documents, numbers within tol: a batch of
// other sizes may round differently.
func sameJSON(a, b []byte, tol float64) error {
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		return err
	}
	if err := json.Unmarshal(b, &y); err != nil {
		return err
	}
	return sameValue("$", x, y, tol)
}

func sameValue(path string, x, y any, tol float64) error {
	switch xv := x.(type) {
	case float64:
		yv, ok := y.(float64)
		if !ok || math.Abs(xv-yv) > tol {
			return fmt.Errorf("%s: %v vs %v", path, x, y)
		}
	case map[string]any:
		yv, ok := y.(map[string]any)
		if !ok || len(xv) != len(yv) {
			return fmt.Errorf("%s: %v vs %v", path, x, y)
		}
		for k := range xv {
			if err := sameValue(path+"."+k, xv[k], yv[k], tol); err != nil {
				return err
			}
		}
	case []any:
		yv, ok := y.([]any)
		if !ok || len(xv) != len(yv) {
			return fmt.Errorf("%s: lengths differ", path)
		}
		for i := range xv {
			if err := sameValue(path+"["+strconv.Itoa(i)+"]", xv[i], yv[i], tol); err != nil {
				return err
			}
		}
	default:
		if x != y {
			return fmt.Errorf("%s: %v vs %v", path, x, y)
		}
	}
	return nil
}
