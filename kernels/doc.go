// Package kernels holds the CPU compute kernels of bertstream: a plain Go
// reference for every kernel (the *Ref functions, written for clarity and
// used as ground truth by the tests of every faster version and of every
// backend) and the fast versions selected at run time. It imports nothing
// of bertstream's own, so that every backend can share it.
//
// Layout conventions: matrices are row-major; a "rows x cols" activation
// is a []float32 of rows*cols elements. Weights of linear layers keep the
// PyTorch layout [out, in].
package kernels
