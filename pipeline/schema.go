package pipeline

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/bertstream/bertstream/bert/task"
	"github.com/bertstream/bertstream/bert/text"
)

// SchemaVersion is the version of the request and response messages this
// package reads and writes. A request without "v" is taken as version 1, so
// that clients written against the unversioned schema of DESIGN.md still work.
const SchemaVersion = 1

// Request is one inference request as it travels on the input topic, keyed
// by its id: the model's request in an envelope of schema version and id.
type Request struct {
	V  int    `json:"v,omitempty"`
	ID string `json:"id"`
	task.Request
	// Deadline, when set, is when the answer stops being of use: a worker
	// that gets to the request later dead-letters it as expired instead of
	// running the model on it.
	Deadline time.Time `json:"deadline,omitzero"`
}

// Response is the answer to one request on the output topic. Error is
// always null there: requests that cannot be answered go to the dead-letter
// topic instead. It is kept in the schema so that clients can decode both
// with one type.
type Response struct {
	V      int     `json:"v"`
	ID     string  `json:"id"`
	Task   string  `json:"task"`
	Result any     `json:"result"`
	Model  string  `json:"model"`
	Error  *string `json:"error"`
}

// Reason classifies why a message was dead-lettered; it is the value of the
// "error_code" header.
type Reason string

// The reasons a message is dead-lettered.
const (
	ReasonMalformed   Reason = "malformed_json"
	ReasonVersion     Reason = "unsupported_version"
	ReasonMissingID   Reason = "missing_id"
	ReasonUnknownTask Reason = "unknown_task"
	ReasonMissingText Reason = "missing_text"
	ReasonInvalidUTF8 Reason = "invalid_utf8"
	ReasonTooLong     Reason = "too_long"
	ReasonBadRequest  Reason = "bad_request"
	ReasonModel       Reason = "model_error"
	// ReasonExpired: the request's deadline, or the worker's --max-age,
	// passed before the model got to it.
	ReasonExpired Reason = "expired"
)

// InputError is why one message could not be answered. It goes to the
// dead-letter topic's headers.
type InputError struct {
	Reason Reason
	Err    error
}

func (e *InputError) Error() string { return string(e.Reason) + ": " + e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

func inputErr(r Reason, format string, args ...any) *InputError {
	return &InputError{Reason: r, Err: fmt.Errorf(format, args...)}
}

// ParseRequest decodes and checks one request message. tasks is the set of
// tasks the model answers; maxTextBytes bounds text and text_pair before any
// tokenization (0 means no bound). The error is an *InputError.
func ParseRequest(value []byte, tasks map[string]bool, maxTextBytes int) (Request, error) {
	var r Request
	// encoding/json replaces invalid UTF-8 with U+FFFD without complaint, so
	// the raw bytes are checked first: a mangled text must not be answered
	// as if it were the text the client meant.
	if !utf8.Valid(value) {
		return r, inputErr(ReasonInvalidUTF8, "message value is not valid UTF-8 (first bad byte at offset %d)", text.IndexInvalidUTF8(value))
	}
	var raw struct {
		V         *int    `json:"v"`
		ID        *string `json:"id"`
		Task      *string `json:"task"`
		Text      *string `json:"text"`
		TextPair  *string `json:"text_pair"`
		TopK      *int    `json:"top_k"`
		Pooling   *string `json:"pooling"`
		Normalize *bool   `json:"normalize"`
		// rerank
		Query      *string  `json:"query"`
		Passages   []string `json:"passages"`
		ReturnText *bool    `json:"return_text"`
		// ner
		Aggregation *string `json:"aggregation"`
		Deadline    *string `json:"deadline"`
	}
	dec := json.NewDecoder(bytes.NewReader(value))
	if err := dec.Decode(&raw); err != nil {
		return r, inputErr(ReasonMalformed, "decoding request: %v", err)
	}
	if dec.More() {
		return r, inputErr(ReasonMalformed, "trailing data after the request object at offset %d", dec.InputOffset())
	}
	if raw.V != nil && *raw.V != SchemaVersion {
		return r, inputErr(ReasonVersion, "schema version %d, this worker reads version %d", *raw.V, SchemaVersion)
	}
	r.V = SchemaVersion
	if raw.ID == nil || *raw.ID == "" {
		return r, inputErr(ReasonMissingID, "field \"id\" is missing or empty")
	}
	r.ID = *raw.ID
	if raw.Task == nil || *raw.Task == "" {
		return r, inputErr(ReasonUnknownTask, "field \"task\" is missing or empty")
	}
	r.Task = task.Canonical(*raw.Task)
	if !tasks[r.Task] {
		return r, inputErr(ReasonUnknownTask, "task %q is not served by this model", *raw.Task)
	}
	if r.Task == task.Rerank {
		return parseRerank(r, raw.Query, raw.Passages, raw.ReturnText, maxTextBytes)
	}
	if raw.Aggregation != nil {
		r.Aggregation = *raw.Aggregation
	}
	// Whitespace alone tokenizes to nothing: the model would answer for an
	// empty input.
	if raw.Text == nil || strings.TrimSpace(*raw.Text) == "" {
		return r, inputErr(ReasonMissingText, "field \"text\" is missing or empty")
	}
	r.Text = *raw.Text
	if raw.TextPair != nil {
		if strings.TrimSpace(*raw.TextPair) == "" {
			return r, inputErr(ReasonMissingText, "field \"text_pair\" is present but empty")
		}
		r.TextPair, r.HasPair = *raw.TextPair, true
	}
	if maxTextBytes > 0 && len(r.Text)+len(r.TextPair) > maxTextBytes {
		return r, inputErr(ReasonTooLong, "text is %d bytes, the limit is %d", len(r.Text)+len(r.TextPair), maxTextBytes)
	}
	if raw.TopK != nil {
		if *raw.TopK < 0 {
			return r, inputErr(ReasonBadRequest, "field \"top_k\" is negative (%d)", *raw.TopK)
		}
		r.TopK = *raw.TopK
	}
	if raw.Pooling != nil {
		r.Pooling = *raw.Pooling
	}
	if raw.Normalize != nil {
		r.Normalize, r.HasNormalize = *raw.Normalize, true
	}
	if raw.Deadline != nil {
		d, err := time.Parse(time.RFC3339Nano, *raw.Deadline)
		if err != nil {
			return r, inputErr(ReasonBadRequest, "field \"deadline\" is not an RFC 3339 time: %v", err)
		}
		r.Deadline = d
	}
	return r, nil
}

// parseRerank reads a rerank request: a query and the passages to rank by
// it, each one of the (query, passage) pairs the model scores.
func parseRerank(r Request, query *string, passages []string, returnText *bool, maxTextBytes int) (Request, error) {
	if query == nil || strings.TrimSpace(*query) == "" {
		return r, inputErr(ReasonMissingText, "field \"query\" is missing or empty")
	}
	if len(passages) == 0 {
		return r, inputErr(ReasonMissingText, "field \"passages\" is missing or empty")
	}
	n := len(*query)
	for i, p := range passages {
		if strings.TrimSpace(p) == "" {
			return r, inputErr(ReasonMissingText, "passage %d is empty", i)
		}
		n += len(p)
	}
	if maxTextBytes > 0 && n > maxTextBytes {
		return r, inputErr(ReasonTooLong, "query and passages are %d bytes, the limit is %d", n, maxTextBytes)
	}
	r.Query, r.Passages = *query, passages
	if returnText != nil {
		r.ReturnText = *returnText
	}
	return r, nil
}

// reasonOf returns the dead-letter reason for err.
func reasonOf(err error) Reason {
	var ie *InputError
	if errors.As(err, &ie) {
		return ie.Reason
	}
	return ReasonModel
}

// encodeResponse renders the answer to r.
func encodeResponse(r Request, result any, model string) ([]byte, error) {
	b, err := json.Marshal(Response{V: SchemaVersion, ID: r.ID, Task: r.Task, Result: result, Model: model})
	if err != nil {
		return nil, fmt.Errorf("encoding the response to %q: %w", r.ID, err)
	}
	return b, nil
}
