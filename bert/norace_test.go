//go:build !race

package bert_test

const raceDetector = false
