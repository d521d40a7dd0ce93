package pipeline

import "context"

// Task is one request as the model sees it.
type Task struct {
	Task      string
	Text      string
	TextPair  string
	HasPair   bool
	TopK      int
	Pooling   string
	Normalize bool
}

// Outcome is the model's answer to one Task: a JSON-marshalable Value, or
// Err when this input cannot be served (it is then dead-lettered).
type Outcome struct {
	Value any
	Err   error
}

// Predictor is the model behind the pipeline. The pipeline batches requests
// and calls Predict from one goroutine at a time; CountTokens is called from
// the partition consumers concurrently, and only when batches have a token
// budget (Config.MaxTokens).
type Predictor interface {
	// Name identifies the model in responses.
	Name() string
	// Tasks lists the tasks the model answers.
	Tasks() []string
	// CountTokens returns the tokens t costs, special tokens included; an
	// error means t cannot be served (too long and truncation is off, ...).
	CountTokens(t Task) (int, error)
	// Predict answers a batch, one Outcome per Task, in order. A task that
	// CountTokens would refuse gets the same error in its Outcome.
	Predict(ctx context.Context, batch []Task) []Outcome
}

func taskOf(r Request) Task {
	return Task{Task: r.Task, Text: r.Text, TextPair: r.TextPair, HasPair: r.hasPair, TopK: r.TopK, Pooling: r.Pooling, Normalize: r.Normalize}
}
