package kernels

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// adviseHuge asks the kernel to back the 2 MiB-aligned middle of x with
// huge pages. Packed weights are read start to end on every forward pass
// (hundreds of MB for BERT-base, more than the caches hold), and with 4 KiB
// pages every few panels cost a TLB miss on top of the memory latency.
func adviseHuge(x []float32) {
	const huge = 2 << 20
	if len(x)*4 < 2*huge {
		return
	}
	start := uintptr(unsafe.Pointer(&x[0]))
	end := start + uintptr(len(x))*4
	a, b := (start+huge-1)&^(huge-1), end&^(huge-1)
	if b <= a {
		return
	}
	// Advice only: where huge pages are off or unavailable nothing changes.
	_ = unix.Madvise(unsafe.Slice((*byte)(unsafe.Pointer(&x[(a-start)/4])), b-a), unix.MADV_HUGEPAGE)
}
