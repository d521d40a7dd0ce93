package pipeline_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bertstream/bertstream/bert/task"
)

// lanePredictor answers as countingPredictor does, holding every third
// batch 20ms so that batches in other lanes, made after it, finish first;
// it records how many Predict calls ran at once.
type lanePredictor struct {
	countingPredictor
	calls, running, most atomic.Int64
}

func (p *lanePredictor) Predict(ctx context.Context, batch []task.Request) []task.Result {
	n := p.running.Add(1)
	defer p.running.Add(-1)
	for m := p.most.Load(); n > m && !p.most.CompareAndSwap(m, n); m = p.most.Load() {
	}
	if p.calls.Add(1)%3 == 1 {
		time.Sleep(20 * time.Millisecond)
	}
	return p.countingPredictor.Predict(ctx, batch)
}

// TestLanes: with three lanes the model runs batches at once, and the
// answers still come out in per-key order, each once, all committed,
// though later batches finish before earlier ones.
func TestLanes(t *testing.T) {
	c, addr := newCluster(t)
	pred := &lanePredictor{}
	cfg := baseConfig(addr)
	cfg.Lanes = 3
	startWorker(t, cfg, pred)
	answerKeyed(t, c, addr, 600, 12)
	if most := pred.most.Load(); most < 2 {
		t.Errorf("at most %d batch in the model at once with three lanes", most)
	}
	t.Logf("%d batches, at most %d at once", pred.calls.Load(), pred.most.Load())
}
