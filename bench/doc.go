// Package bench measures bertstream on the machine it runs on, for
// `bertstream bench`: the kernel harness (every version of each kernel
// family validated against the plain reference, then timed, as a share of
// the FMA peak that MeasurePeak finds), the throughput and latency of a
// model preset with random weights (RunModel; its ModelResult is the
// `bertstream bench --json` contract of DESIGN.md) and the per-operation
// Profiler.
//
// The comparison with other engines, its reports and plots are in
// bench/peers: the bertstream binary links this package, and would
// otherwise link a plotting library with its fonts, PDF and SVG writers.
package bench
