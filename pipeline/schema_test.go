package pipeline_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/bertstream/bertstream/bert/task"
	"github.com/bertstream/bertstream/pipeline"
)

func TestParseRequest(t *testing.T) {
	tasks := map[string]bool{"classify": true, "nsp": true, "embed": true, "rerank": true, "ner": true}
	for _, tc := range []struct {
		in     string
		want   pipeline.Request
		reason pipeline.Reason
	}{
		{in: `{"id":"a","task":"classify","text":"hi"}`, want: req("a", task.Request{Task: "classify", Text: "hi"})},
		{in: `{"v":1,"id":"a","task":"nsp","text":"hi","text_pair":"there"}`, want: req("a", task.Request{Task: "nsp", Text: "hi", TextPair: "there", HasPair: true})},
		{in: `{"id":"a","task":"classify","text":"hi","top_k":3,"pooling":"cls","normalize":true,"extra":1}`, want: req("a", task.Request{Task: "classify", Text: "hi", TopK: 3, Pooling: "cls", Normalize: true, HasNormalize: true})},
		{in: `{"id":"a","task":"embed","text":"hi","normalize":false}`, want: req("a", task.Request{Task: "embed", Text: "hi", HasNormalize: true})},
		{in: `{"id":"r","task":"rerank","query":"q","passages":["a","b c"],"return_text":true}`, want: req("r", task.Request{Task: "rerank", Query: "q", Passages: []string{"a", "b c"}, ReturnText: true})},
		{in: `{"id":"n","task":"token-classification","text":"Ada Lovelace","aggregation":"simple"}`, want: req("n", task.Request{Task: "ner", Text: "Ada Lovelace", Aggregation: "simple"})},
		{in: `{"id":"a","task":"classify","text":"héllo \u00e9"}`, want: req("a", task.Request{Task: "classify", Text: "héllo é"})},
		{in: `null`, reason: pipeline.ReasonMissingID},
		{in: `{"id":"","task":"classify","text":"hi"}`, reason: pipeline.ReasonMissingID},
		{in: `{"v":0,"id":"a","task":"classify","text":"hi"}`, reason: pipeline.ReasonVersion},
		{in: `{"id":"a","task":"fill-mask","text":"hi"}`, reason: pipeline.ReasonUnknownTask},
		{in: `{"id":"r","task":"rerank","text":"q","passages":["a"]}`, reason: pipeline.ReasonMissingText},
		{in: `{"id":"r","task":"rerank","query":"q","passages":[]}`, reason: pipeline.ReasonMissingText},
		{in: `{"id":"r","task":"rerank","query":"q","passages":["a"," "]}`, reason: pipeline.ReasonMissingText},
		{in: `{"id":"r","task":"rerank","query":"q","passages":"a"}`, reason: pipeline.ReasonMalformed},
		{in: `{"id":"a","task":"classify","text":null}`, reason: pipeline.ReasonMissingText},
		{in: `{"id":"a","task":"classify","text":"` + string(make([]byte, 33)) + `"}`, reason: pipeline.ReasonMalformed},
		{in: `{"id":"a","task":"classify","text":"123456789012345678901234567890123"}`, reason: pipeline.ReasonTooLong},
		{in: "{\"id\":\"a\",\"task\":\"classify\",\"text\":\"\xc3\x28\"}", reason: pipeline.ReasonInvalidUTF8},
	} {
		r, err := pipeline.ParseRequest([]byte(tc.in), tasks, 32)
		if tc.reason != "" {
			var ie *pipeline.InputError
			if !errors.As(err, &ie) || ie.Reason != tc.reason {
				t.Errorf("%s: error %v, want reason %s", tc.in, err, tc.reason)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(r, tc.want) {
			t.Errorf("%s: got %+v, want %+v", tc.in, r, tc.want)
		}
	}
}

// TestRequestJSON: a Request marshals to the request message of the
// schema, field for field, and ParseRequest reads back what it wrote.
func TestRequestJSON(t *testing.T) {
	tasks := map[string]bool{"classify": true, "nsp": true, "rerank": true}
	for _, tc := range []struct {
		r    pipeline.Request
		want string
	}{
		{req("r", task.Request{Task: "rerank", Query: "q", Passages: []string{"a", "b"}, ReturnText: true}),
			`{"v":1,"id":"r","task":"rerank","query":"q","passages":["a","b"],"return_text":true}`},
		{req("a", task.Request{Task: "classify", Text: "hi"}), `{"v":1,"id":"a","task":"classify","text":"hi"}`},
		{req("b", task.Request{Task: "nsp", Text: "hi", TextPair: "there", HasPair: true, TopK: 3, Pooling: "cls", Normalize: true, HasNormalize: true}),
			`{"v":1,"id":"b","task":"nsp","text":"hi","text_pair":"there","top_k":3,"pooling":"cls","normalize":true}`},
	} {
		b, err := json.Marshal(tc.r)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.want {
			t.Errorf("%+v marshals to %s, want %s", tc.r, b, tc.want)
		}
		back, err := pipeline.ParseRequest(b, tasks, 0)
		if err != nil || !reflect.DeepEqual(back, tc.r) {
			t.Errorf("%s reads back as %+v, %v", b, back, err)
		}
	}
}

// req is the message of schema version 1 with id around r.
func req(id string, r task.Request) pipeline.Request {
	return pipeline.Request{V: 1, ID: id, Request: r}
}

// FuzzParseRequest: whatever the bytes, ParseRequest returns a request the
// worker can serve or an InputError with a reason, never both or neither.
func FuzzParseRequest(f *testing.F) {
	for _, p := range poisons {
		f.Add([]byte(p.value))
	}
	f.Add([]byte(`{"v":1,"id":"a","task":"nsp","text":"x","text_pair":"y","top_k":2}`))
	tasks := map[string]bool{"classify": true, "nsp": true}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := pipeline.ParseRequest(b, tasks, 200)
		if err != nil {
			var ie *pipeline.InputError
			if !errors.As(err, &ie) || ie.Reason == "" {
				t.Fatalf("%q: error %v is not an InputError with a reason", b, err)
			}
			return
		}
		if r.V != pipeline.SchemaVersion || r.ID == "" || !tasks[r.Task] || strings.TrimSpace(r.Text) == "" ||
			len(r.Text)+len(r.TextPair) > 200 || !utf8.ValidString(r.Text) || r.TopK < 0 {
			t.Fatalf("%q: accepted as %+v", b, r)
		}
	})
}
