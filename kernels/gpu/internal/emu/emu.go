//go:build cuda && cgo

// Package emu runs the CUDA kernels of kernels/gpu on the CPU, under an
// emulation of the CUDA thread model (emu.h), so that their logic is
// checked against the kernels package's references on machines without a
// GPU, CI's included (make cuda-check). Its tests are the point; the
// package is internal. Like everything CUDA it builds with -tags cuda
// (and cgo, and a C++20 compiler).
package emu

/*
#cgo CXXFLAGS: -std=c++20 -O2 -include ${SRCDIR}/emu.h -I${SRCDIR}/include -Wno-unknown-pragmas
#cgo LDFLAGS: -lstdc++ -lpthread
#include <stdint.h>
#include <stdlib.h>
int emu_has(const char* name);
int emu_launch(const char* name, int gx, int gy, int gz, int block, int shared, const uint64_t* params, int nparams);
*/
import "C"

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/bertstream/bertstream/kernels/gpu"
)

// Buf is emulated device memory: C memory, so that the kernels may keep
// its address.
type Buf struct {
	p unsafe.Pointer
	n int
}

// Alloc returns n zeroed bytes; Free releases them.
func Alloc(n int) Buf { return Buf{C.calloc(C.size_t(max(n, 1)), 1), n} }

func (b Buf) Free() { C.free(b.p) }

// Ptr is the address, as a kernel argument.
func (b Buf) Ptr() uint64 { return uint64(uintptr(b.p)) }

func (b Buf) F32() []float32 { return unsafe.Slice((*float32)(b.p), b.n/4) }
func (b Buf) U16() []uint16  { return unsafe.Slice((*uint16)(b.p), b.n/2) }
func (b Buf) I32() []int32   { return unsafe.Slice((*int32)(b.p), b.n/4) }

// Kernel arguments, as the cuda backend passes them: 8-byte slots of
// which a kernel reads its parameter's size.
func I32(v int) uint64     { return uint64(uint32(int32(v))) }
func I64(v int64) uint64   { return uint64(v) }
func F32(v float32) uint64 { return uint64(math.Float32bits(v)) }

// Has reports whether kernel name is among the emulated kernels.
func Has(name string) bool {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	return C.emu_has(cname) != 0
}

// Launch runs a kernel as the device would run l.
func Launch(l gpu.Launch, args ...uint64) error {
	name, grid, block, shared := l.Kernel, l.Grid, l.Block, l.Shared
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	params := (*C.uint64_t)(C.calloc(C.size_t(max(len(args), 1)), 8))
	defer C.free(unsafe.Pointer(params))
	copy(unsafe.Slice((*uint64)(unsafe.Pointer(params)), len(args)), args)
	switch C.emu_launch(cname, C.int(grid[0]), C.int(grid[1]), C.int(grid[2]), C.int(block), C.int(shared), params, C.int(len(args))) {
	case 0:
		return nil
	case -1:
		return fmt.Errorf("no kernel %s", name)
	case -2:
		return fmt.Errorf("kernel %s: %d arguments do not match its parameters", name, len(args))
	}
	return fmt.Errorf("kernel %s: block of %d threads is not whole warps", name, block)
}
