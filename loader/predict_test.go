package loader_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/bert/task"
	"github.com/bertstream/bertstream/loader"
	"github.com/bertstream/bertstream/nn"
)

// TestPredictRefusesTooLong: a predictor that does not truncate refuses
// an over-long text with ErrTooLong (a bad request), and its neighbours in
// the batch are answered as if it were not there.
func TestPredictRefusesTooLong(t *testing.T) {
	dir := "../testdata/bert-tiny/bert-classifier"
	strict, err := loader.LoadPredictor(dir, loader.Options{}, bert.PredictorOptions{MaxLen: 12})
	if err != nil {
		t.Fatal(err)
	}
	defer strict.Model.Close()
	long := strings.Repeat("many words here ", 10)
	reqs := []task.Request{
		{Task: task.Classify, Text: "a short text"},
		{Task: task.Classify, Text: long},
		{Task: task.Classify, Text: "another short one"},
	}
	res := strict.Predict(context.Background(), reqs)
	if !errors.Is(res[1].Err, task.ErrTooLong) || !errors.Is(res[1].Err, task.ErrBadRequest) {
		t.Fatalf("over-long text: %v, want ErrTooLong and ErrBadRequest", res[1].Err)
	}
	if !strings.Contains(res[1].Err.Error(), "32 tokens, the limit is 12") {
		t.Errorf("error %q does not give the lengths", res[1].Err)
	}
	if _, err := strict.CountTokens(reqs[1]); !errors.Is(err, task.ErrTooLong) {
		t.Errorf("CountTokens: %v", err)
	}
	alone := strict.Predict(context.Background(), []task.Request{reqs[0], reqs[2]})
	for j, i := range []int{0, 2} {
		if res[i].Err != nil {
			t.Fatalf("request %d: %v", i, res[i].Err)
		}
		got, want := res[i].Value.(bert.ClassifyResult), alone[j].Value.(bert.ClassifyResult)
		for label, p := range want.Scores {
			if d := got.Scores[label] - p; d > 1e-6 || d < -1e-6 {
				t.Errorf("request %d: %s %g beside the refused one, %g without it", i, label, got.Scores[label], p)
			}
		}
	}

	lax, err := loader.LoadPredictor(dir, loader.Options{}, bert.PredictorOptions{MaxLen: 12, Truncate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer lax.Model.Close()
	if r := lax.Predict(context.Background(), reqs[1:2]); r[0].Err != nil {
		t.Errorf("truncating predictor: %v", r[0].Err)
	}
}

// TestPrepare: prepared requests get the answers unprepared ones get, in a
// batch with unprepared neighbours, through truncation and the refusal of
// an over-long text; a request changed after it was prepared is answered
// for what it says now.
func TestPrepare(t *testing.T) {
	ce := loadTask(t, "cross-encoder", bert.PredictorOptions{MaxLen: 24})
	st := loadTask(t, "st-mean", bert.PredictorOptions{})
	long := strings.Repeat("many words here ", 10)
	for _, c := range []struct {
		name string
		p    *bert.Predictor
		reqs []task.Request
	}{
		{"cross-encoder", ce, []task.Request{
			{Task: task.Classify, Text: "a question", TextPair: "an answer to it", HasPair: true},
			{Task: task.Rerank, Query: "where is it", Passages: []string{"over there", "nowhere at all", long}},
			{Task: task.Classify, Text: long, TextPair: "short", HasPair: true},
			{Task: "text-classification", Text: "an alias of classify", TextPair: "and a pair", HasPair: true},
		}},
		{"sentence-transformers", st, []task.Request{
			{Task: task.Embed, Text: "Mixed Case Text that the model lowercases"},
			{Task: task.Embed, Text: long, Pooling: "cls"},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			want := c.p.Predict(context.Background(), c.reqs)
			prepared := make([]task.Request, len(c.reqs))
			for i, r := range c.reqs {
				prepared[i] = c.p.Prepare(r)
				if prepared[i].Prepared == nil {
					t.Fatalf("request %d was not prepared", i)
				}
				n, err := c.p.CountTokens(prepared[i])
				m, err0 := c.p.CountTokens(r)
				if n != m || (err == nil) != (err0 == nil) {
					t.Errorf("request %d: CountTokens %d, %v prepared and %d, %v not", i, n, err, m, err0)
				}
			}
			// Every other one prepared.
			mixed := slices.Clone(c.reqs)
			for i := 0; i < len(mixed); i += 2 {
				mixed[i] = prepared[i]
			}
			for _, batch := range [][]task.Request{prepared, mixed} {
				got := c.p.Predict(context.Background(), batch)
				for i := range got {
					if !reflect.DeepEqual(got[i], want[i]) {
						t.Errorf("request %d: %+v prepared, %+v not", i, got[i], want[i])
					}
				}
			}
		})
	}

	// Changed after it was prepared: the text it has now is the one
	// answered.
	a, b := task.Request{Task: task.Embed, Text: "first text"}, task.Request{Task: task.Embed, Text: "a second, other text"}
	stale := st.Prepare(a)
	stale.Text = b.Text
	wantB := st.Predict(context.Background(), []task.Request{b})
	if got := st.Predict(context.Background(), []task.Request{stale}); !reflect.DeepEqual(got, wantB) {
		t.Errorf("a request changed after Prepare was answered for its old text")
	}
}

// TestPredictConcurrently: a predictor takes Predict calls from several
// goroutines at once (serve --lanes), on one kernel thread each or two,
// F32, INT8 and BF16, and answers each batch as it does alone. Run under
// -race it also shows
// the forward pass shares nothing it writes.
func TestPredictConcurrently(t *testing.T) {
	for _, opts := range []nn.Options{{Threads: 1}, {Threads: 2}, {Threads: 1, Int8: true}, {Threads: 1, Compute: nn.BF16}} {
		be, err := nn.Open("cpu", opts)
		if err != nil {
			t.Fatal(err)
		}
		p, err := loader.LoadPredictor("../testdata/bert-tiny/bert-classifier", loader.Options{Backend: be}, bert.PredictorOptions{Truncate: true})
		if err != nil {
			t.Fatal(err)
		}
		var batches [][]task.Request
		for b := range 6 {
			var reqs []task.Request
			for i := range 3 + 2*b {
				reqs = append(reqs, task.Request{Task: task.Classify, Text: strings.Repeat("word ", 1+(i*7+b)%20) + "of batch " + strconv.Itoa(b)})
			}
			batches = append(batches, reqs)
		}
		want := make([][]task.Result, len(batches))
		for i, b := range batches {
			want[i] = p.Predict(context.Background(), b)
		}
		var wg sync.WaitGroup
		for g := range 3 {
			wg.Go(func() {
				for rep := range 4 {
					i := (g + rep) % len(batches)
					if got := p.Predict(context.Background(), batches[i]); !reflect.DeepEqual(got, want[i]) {
						t.Errorf("%+v: batch %d answered differently beside other calls", opts, i)
					}
				}
			})
		}
		wg.Wait()
		p.Model.Close()
	}
}
