package loader_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/bert/task"
	"github.com/bertstream/bertstream/loader"
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
