//go:build amd64 && !noasm

package kernels

//go:noescape
func cpuid(leaf, sub uint32) (a, b, c, d uint32)

// thisCPU reads the vendor, family and model of the CPU this process runs
// on.
func thisCPU() cpuIdentity {
	maxLeaf, b, c, d := cpuid(0, 0)
	id := cpuIdentity{vendor: vendorString(b, d, c)}
	if maxLeaf >= 1 {
		eax, _, _, _ := cpuid(1, 0)
		id.family, id.model = signature(eax)
	}
	return id
}
