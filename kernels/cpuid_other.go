//go:build !amd64 || noasm

package kernels

// thisCPU is unknown without assembly: the table's default applies.
func thisCPU() cpuIdentity { return cpuIdentity{} }
