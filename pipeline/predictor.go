package pipeline

import (
	"errors"

	"github.com/bertstream/bertstream/bert/task"
)

// refusal turns an error of the predictor into a dead-letter reason: the
// task contract marks the request's faults with task.ErrTooLong and
// task.ErrBadRequest; any other error is the engine's and keeps its own
// text (reason model_error).
func refusal(err error) error {
	switch {
	case errors.Is(err, task.ErrTooLong):
		return &InputError{Reason: ReasonTooLong, Err: err}
	case errors.Is(err, task.ErrBadRequest):
		return &InputError{Reason: ReasonBadRequest, Err: err}
	}
	return err
}
