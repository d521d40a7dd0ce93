package pipeline

import (
	"context"
	"errors"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/bert/tokenize"
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
		return 0, b.classify(r, err)
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
			outs[i].Err = b.classify(reqs[i], r.Err)
		}
	}
	return outs
}

func request(t Task) bert.TaskRequest {
	return bert.TaskRequest{Task: t.Task, Text: t.Text, TextPair: t.TextPair, HasPair: t.HasPair, TopK: t.TopK, Pooling: t.Pooling, Normalize: t.Normalize}
}

// classify turns the predictor's error into a dead-letter reason. The bert
// package marks request errors with bert.ErrBadRequest but does not tell
// a text over the length limit apart, so that case is recognized by
// encoding the request again; it only happens for requests that fail.
// Other errors are the engine's, and keep their own text.
func (b *BERT) classify(r bert.TaskRequest, err error) error {
	if !errors.Is(err, bert.ErrBadRequest) {
		return err
	}
	enc, eerr := b.p.Tok.Encode([]tokenize.Input{{Text: r.Text, Pair: r.TextPair, HasPair: r.HasPair}}, b.p.MaxLen())
	if eerr == nil && enc.Truncated[0] {
		return &InputError{Reason: ReasonTooLong, Err: err}
	}
	return &InputError{Reason: ReasonBadRequest, Err: err}
}
