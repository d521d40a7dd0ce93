//go:build race

package bert_test

// raceDetector: under -race, sync.Pool drops what it is given at random,
// so counts of allocations in the steady state mean nothing there.
const raceDetector = true
