//go:build race

package pipeline_test

// raceDetector lets a test step around a data race that lives in a
// dependency, not here, while `make test` still runs it without -race.
const raceDetector = true
