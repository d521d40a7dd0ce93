//go:build !amd64 || noasm

package kernels

// Without assembly the portable micro-kernel is the only one.
func asmKernels() []*microKernel { return nil }

func geluVec(x []float32) { geluGo(x) }
