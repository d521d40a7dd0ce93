//go:build !amd64 || noasm

package kernels

// Without assembly the portable Go version is the only one.
func asmVersions() []version { return nil }

func asmBF16Kernels() []*bf16Kernel { return nil }

func asmInt8Kernels() []*int8Kernel { return nil }
