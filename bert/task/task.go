// Package task is the contract between a model and what serves it: one
// Request type, one Result type and the Predictor interface, with the task
// names and the errors that say a request, not the engine, is at fault.
//
// A Predictor answers every request of a batch, in order: a request it
// cannot serve gets an error in its own Result and never fails its
// neighbours. The package imports nothing of bertstream's, so that a server
// (the Kafka pipeline) depends on it and not on the model that implements
// it (bert.Predictor).
package task

import (
	"context"
	"errors"
)

// The task names, as requests and the command line spell them.
const (
	Classify = "classify"
	FillMask = "fill-mask"
	NSP      = "nsp"
	Embed    = "embed"
	Rerank   = "rerank"
	NER      = "ner"
)

// aliases are other names of tasks, as transformers' pipelines call them.
var aliases = map[string]string{
	"token-classification": NER,
	"text-classification":  Classify,
}

// Canonical returns the task a name stands for: an alias
// ("token-classification") gives its task ("ner"), any other name itself.
func Canonical(name string) string {
	if t, ok := aliases[name]; ok {
		return t
	}
	return name
}

// Request is one input to a task. Its JSON form is the body of a request
// message of the pipeline's schema (DESIGN.md), without the envelope.
type Request struct {
	Task     string `json:"task"`
	Text     string `json:"text,omitempty"`
	TextPair string `json:"text_pair,omitempty"`
	// HasPair tells an absent TextPair from an empty one, which is an
	// error: a pair task needs a second text. JSON carries it as the
	// presence of text_pair.
	HasPair bool `json:"-"`
	// TopK is how many tokens fill-mask returns per [MASK] (default 5).
	TopK int `json:"top_k,omitempty"`
	// Pooling is embed's pooling: "cls", "mean", "max" or
	// "mean_sqrt_len"; "" is the model's own (a sentence-transformers
	// directory's 1_Pooling), else "mean".
	Pooling   string `json:"pooling,omitempty"`
	Normalize bool   `json:"normalize,omitempty"`
	// HasNormalize tells an explicit normalize false, which turns off a
	// sentence-transformers Normalize module, from an absent one, which
	// leaves normalisation to the model. Normalize true normalises always.
	HasNormalize bool `json:"-"`
	// Query and Passages are rerank's input: every passage is scored as
	// the pair (query, passage).
	Query    string   `json:"query,omitempty"`
	Passages []string `json:"passages,omitempty"`
	// ReturnText makes rerank echo each passage beside its score.
	ReturnText bool `json:"return_text,omitempty"`
	// Aggregation is how ner groups tokens: "none" (default), "simple",
	// "first", "average" or "max", as transformers'
	// aggregation_strategy.
	Aggregation string `json:"aggregation,omitempty"`
	// Prepared is what a Preparer did for the request ahead of its batch.
	// It holds for the request as it was prepared: a copy whose fields are
	// changed must drop it (a predictor that finds it stale redoes the
	// work).
	Prepared any `json:"-"`
}

// Result is one request's answer: Value marshals to the task's JSON
// result, or Err says why the request could not be served.
type Result struct {
	Value any
	Err   error
}

// ErrBadRequest marks errors caused by the request itself (as opposed to
// the engine), so that a server can refuse it (dead-letter it) and move on.
var ErrBadRequest = errors.New("bad request")

// ErrTooLong marks a request over the length limit of a predictor that
// refuses rather than truncates; such an error is an ErrBadRequest too.
var ErrTooLong = errors.New("over the length limit")

// Predictor is a model that answers task requests. CountTokens must be
// safe to call from several goroutines at once, also while Predict runs.
type Predictor interface {
	// Name identifies the model in responses.
	Name() string
	// Tasks lists the tasks the model answers.
	Tasks() []string
	// CountTokens returns the tokens r costs, special tokens included, after
	// truncation when the predictor truncates; an error means r cannot be
	// served (invalid, or too long and truncation is off).
	CountTokens(r Request) (int, error)
	// Predict answers a batch, one Result per Request, in order. A request
	// that CountTokens would refuse gets the same error in its Result.
	Predict(ctx context.Context, reqs []Request) []Result
}

// Preparer is a Predictor that can do part of a request's work before the
// request joins a batch. A server calls Prepare as a request arrives, on
// the goroutine that reads it, so that this work runs beside the batch in
// the model rather than in front of the next one. Prepare must be safe to
// call from several goroutines at once, also while Predict runs; a request
// it cannot prepare (an invalid one) comes back as it was.
type Preparer interface {
	Prepare(r Request) Request
}
