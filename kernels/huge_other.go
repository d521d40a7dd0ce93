//go:build !linux

package kernels

// adviseHuge is Linux's huge-page advice; elsewhere there is none to give.
func adviseHuge([]float32) {}
