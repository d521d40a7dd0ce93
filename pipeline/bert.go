package pipeline

import (
	"context"
	"errors"

	"github.com/bertstream/bertstream/bert"
)

// BERT is the Predictor of `bertstream serve`: a bert.Predictor, whose
// input errors it sorts into dead-letter reasons.
type BERT struct {
	p *bert.Predictor
}

// NewBERT serves p. Whether an over-long text is truncated or refused is
// p's option (bert.PredictorOptions.Truncate).
func NewBERT(p *bert.Predictor) *BERT { return &BERT{p: p} }

// Name is the model's name.
func (b *BERT) Name() string { return b.p.Name() }

// Tasks are the tasks the model's heads support.
func (b *BERT) Tasks() []string { return b.p.Tasks() }

// CountTokens is bert.Predictor.CountTokens.
func (b *BERT) CountTokens(t Task) (int, error) {
	r := request(t)
	n, err := b.p.CountTokens(r)
	if err != nil {
		return 0, b.classify(err)
	}
	return n, nil
}

// Predict answers a batch; requests of one task run as one forward pass.
func (b *BERT) Predict(ctx context.Context, batch []Task) []Outcome {
	reqs := make([]bert.TaskRequest, len(batch))
	for i, t := range batch {
		reqs[i] = request(t)
	}
	res := b.p.Predict(ctx, reqs)
	outs := make([]Outcome, len(res))
	for i, r := range res {
		outs[i].Value = r.Value
		if r.Err != nil {
			outs[i].Err = b.classify(r.Err)
		}
	}
	return outs
}

func request(t Task) bert.TaskRequest {
	return bert.TaskRequest{Task: t.Task, Text: t.Text, TextPair: t.TextPair, HasPair: t.HasPair, TopK: t.TopK, Pooling: t.Pooling, Normalize: t.Normalize}
}

// classify turns the predictor's error into a dead-letter reason; errors
// that are not the request's are the engine's, and keep their own text.
func (b *BERT) classify(err error) error {
	switch {
	case errors.Is(err, bert.ErrTooLong):
		return &InputError{Reason: ReasonTooLong, Err: err}
	case errors.Is(err, bert.ErrBadRequest):
		return &InputError{Reason: ReasonBadRequest, Err: err}
	}
	return err
}
