//go:build cuda

package cuda

/*
#cgo linux CFLAGS: -I/usr/local/cuda/include
#cgo LDFLAGS: -lcuda -ldl
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unsafe"

	"gorgonia.org/cu"
)

// cuBLAS is loaded with dlopen rather than linked (gorgonia.org/cu/blas
// links one versioned libcublas and lacks GemmEx and friends), so that one
// binary runs against whichever CUDA 11.8, 12.x or 13.x libraries the GPU
// machine has, and starts at all where it has none.

// Values of cublas_api.h, library_types.h and cublasLt.h, the same in
// CUDA 11.8, 12 and 13.
const (
	cublasOpN = 0
	cublasOpT = 1

	cudaR32F  = 0
	cudaR16F  = 2
	cudaR16BF = 14

	cublasCompute32F = 68

	cublasStatusNotSupported = 15

	cublasDefaultMath = 0
	// Split-K reductions stay in F32 instead of the F16/BF16 output type:
	// the "F32 accumulation" the F16 and BF16 tolerances assume.
	cublasDisallowReducedPrecisionReduction = 16

	ltDescTransA      = 3
	ltDescTransB      = 4
	ltDescEpilogue    = 7
	ltDescBiasPointer = 8
	ltEpilogueDefault = 1
	ltEpilogueBias    = 4

	ltPrefMaxWorkspace        = 1
	ltPrefReductionSchemeMask = 3
	// In place or in the compute type (F32), never in the output type.
	ltReductionInPlaceOrCompute = 1 | 2
)

// LibraryPathEnv names the environment variable that says where cuBLAS
// is when the dynamic loader's search path does not find it: a directory
// holding libcublas.so.N and libcublasLt.so.N, or the path of
// libcublas.so.N itself (libcublasLt is then taken from its directory).
const LibraryPathEnv = "BERTSTREAM_CUBLAS"

var cublasLib struct {
	sync.Mutex
	path string // what was loaded; a process loads one cuBLAS
}

// loadCublas loads cuBLAS once per process: from where (see
// LibraryPathEnv; "" searches the loader's path), the newest major version
// from driverMajor (the newest the driver runs) down to 11.
func loadCublas(where string, driverMajor int) (string, error) {
	cublasLib.Lock()
	defer cublasLib.Unlock()
	if cublasLib.path != "" {
		if where != "" && !strings.HasPrefix(cublasLib.path, where) {
			return "", fmt.Errorf("cuBLAS is already loaded from %s; a process cannot load a second one from %s", cublasLib.path, where)
		}
		return cublasLib.path, nil
	}
	var tried []string
	for major := min(driverMajor, 13); major >= 11; major-- {
		lt, blas := candidates(where, major)
		clt, cblas := C.CString(lt), C.CString(blas)
		msg := C.bs_cublas_open(clt, cblas)
		C.free(unsafe.Pointer(clt))
		C.free(unsafe.Pointer(cblas))
		if msg == nil {
			cublasLib.path = blas
			return blas, nil
		}
		tried = append(tried, C.GoString(msg))
	}
	if len(tried) == 0 {
		return "", fmt.Errorf("the driver supports CUDA %d, older than the 11.8 this backend needs", driverMajor)
	}
	return "", fmt.Errorf("no usable cuBLAS (set %s to its directory): %s", LibraryPathEnv, strings.Join(tried, "; "))
}

// candidates names the libcublasLt and libcublas of one major version.
func candidates(where string, major int) (lt, blas string) {
	lt, blas = fmt.Sprintf("libcublasLt.so.%d", major), fmt.Sprintf("libcublas.so.%d", major)
	switch {
	case where == "":
		return lt, blas
	case isDir(where):
		return filepath.Join(where, lt), filepath.Join(where, blas)
	}
	// A file: libcublas.so.N[.x.y] beside its libcublasLt.
	dir, base := filepath.Split(where)
	return filepath.Join(dir, strings.Replace(base, "libcublas", "libcublasLt", 1)), where
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// cublasError names a cuBLAS status.
type cublasError struct {
	call   string
	status int
}

func (e *cublasError) Error() string {
	names := map[int]string{1: "NOT_INITIALIZED", 3: "ALLOC_FAILED", 7: "INVALID_VALUE", 8: "ARCH_MISMATCH",
		11: "MAPPING_ERROR", 13: "EXECUTION_FAILED", 14: "INTERNAL_ERROR", 15: "NOT_SUPPORTED", 16: "LICENSE_ERROR"}
	name, ok := names[e.status]
	if !ok {
		name = fmt.Sprintf("status %d", e.status)
	}
	return fmt.Sprintf("%s: CUBLAS_STATUS_%s", e.call, name)
}

func blasErr(call string, status C.int) error {
	if status == 0 {
		return nil
	}
	return &cublasError{call: call, status: int(status)}
}

// streamHandle is the CUstream inside a cu.Stream, for cuBLAS: gorgonia
// keeps it unexported, and cgo types of two packages never convert.
func streamHandle(s cu.Stream) unsafe.Pointer {
	return *(*unsafe.Pointer)(unsafe.Pointer(&s))
}

// blas is a cuBLAS handle and a cuBLASLt handle bound to one stream, with
// the workspace both use.
type blas struct {
	h, lt   unsafe.Pointer
	stream  unsafe.Pointer
	ws      cu.DevicePtr
	wsSize  int64
	pref    unsafe.Pointer
	descs   map[ltKey]unsafe.Pointer
	plans   map[planKey]*plan
	version int // cublasGetVersion: 120304 for 12.3.4
}

func newBlas(stream cu.Stream, ws cu.DevicePtr, wsSize int64, dt int) (*blas, error) {
	b := &blas{stream: streamHandle(stream), ws: ws, wsSize: wsSize, descs: map[ltKey]unsafe.Pointer{}, plans: map[planKey]*plan{}}
	if err := blasErr("cublasCreate", C.bs_cublas_create(&b.h)); err != nil {
		return nil, err
	}
	if err := b.init(dt); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

func (b *blas) init(dt int) error {
	var v C.int
	if err := blasErr("cublasGetVersion", C.bs_cublas_version(b.h, &v)); err != nil {
		return err
	}
	b.version = int(v)
	if err := blasErr("cublasSetStream", C.bs_cublas_set_stream(b.h, b.stream)); err != nil {
		return err
	}
	mode := C.int(cublasDefaultMath)
	if dt != cudaR32F {
		mode |= cublasDisallowReducedPrecisionReduction
	}
	// The default math mode never uses TF32 for F32 operands, which keeps
	// F32 results to the F32 tolerances.
	if err := blasErr("cublasSetMathMode", C.bs_cublas_set_math_mode(b.h, mode)); err != nil {
		return err
	}
	if err := blasErr("cublasSetWorkspace", C.bs_cublas_set_workspace(b.h, C.uintptr_t(b.ws), C.size_t(b.wsSize))); err != nil {
		return err
	}
	if err := blasErr("cublasLtCreate", C.bs_lt_create(&b.lt)); err != nil {
		return err
	}
	if err := blasErr("cublasLtMatmulPreferenceCreate", C.bs_lt_pref_create(&b.pref)); err != nil {
		return err
	}
	if err := blasErr("cublasLtMatmulPreferenceSetAttribute", C.bs_lt_pref_set_u64(b.pref, ltPrefMaxWorkspace, C.uint64_t(b.wsSize))); err != nil {
		return err
	}
	return blasErr("cublasLtMatmulPreferenceSetAttribute", C.bs_lt_pref_set_u32(b.pref, ltPrefReductionSchemeMask, ltReductionInPlaceOrCompute))
}

func (b *blas) close() {
	for _, p := range b.plans {
		p.destroy()
	}
	for _, d := range b.descs {
		C.bs_lt_desc_destroy(d)
	}
	if b.pref != nil {
		C.bs_lt_pref_destroy(b.pref)
	}
	if b.lt != nil {
		C.bs_lt_destroy(b.lt)
	}
	if b.h != nil {
		C.bs_cublas_destroy(b.h)
	}
	*b = blas{}
}

func op(trans bool) C.int {
	if trans {
		return cublasOpT
	}
	return cublasOpN
}

// gemm is column-major C = alpha*op(A)*op(B) + beta*C on the stream:
// Linear's fallback for the shapes cuBLASLt has no algorithm for.
func (b *blas) gemm(dt int, ta, tb bool, m, n, k int, alpha float32, a cu.DevicePtr, lda int,
	bp cu.DevicePtr, ldb int, beta float32, c cu.DevicePtr, ldc int) error {
	A, B, Cp := C.uintptr_t(a), C.uintptr_t(bp), C.uintptr_t(c)
	if dt == cudaR32F {
		return blasErr("cublasSgemm", C.bs_cublas_sgemm(b.h, op(ta), op(tb), C.int(m), C.int(n), C.int(k), C.float(alpha),
			A, C.int(lda), B, C.int(ldb), C.float(beta), Cp, C.int(ldc)))
	}
	return blasErr("cublasGemmEx", C.bs_cublas_gemm_ex(b.h, op(ta), op(tb), C.int(m), C.int(n), C.int(k), C.float(alpha),
		A, C.int(dt), C.int(lda), B, C.int(ldb), C.float(beta), Cp, C.int(ldc)))
}

// ltKey selects a cuBLASLt operation descriptor: the dtype and whether the
// bias epilogue is on.
type ltKey struct {
	dt   int
	bias bool
}

// planKey is one Linear shape; its plan holds the layouts and the
// algorithm cuBLASLt's heuristic chose, which costs tens of microseconds
// to find and is the same for every batch of that many tokens.
type planKey struct {
	dt      int
	m, n, k int
	bias    bool
}

type plan struct {
	a, b, c unsafe.Pointer
	algo    C.bs_lt_heuristic
	none    bool // the heuristic found no algorithm
}

// errNoAlgorithm is linear's answer for a shape cuBLASLt has no kernel
// for (16-bit operands whose rows are not 16-byte aligned, with some
// versions): the caller falls back to cuBLAS's GEMM.
var errNoAlgorithm = errors.New("cuBLASLt has no algorithm for this shape")

func (p *plan) destroy() {
	for _, l := range []unsafe.Pointer{p.a, p.b, p.c} {
		if l != nil {
			C.bs_lt_layout_destroy(l)
		}
	}
}

// maxPlans bounds the plan cache: a server sees one token count per
// batch, so the shapes keep coming.
const maxPlans = 4096

func (b *blas) desc(key ltKey) (unsafe.Pointer, error) {
	if d, ok := b.descs[key]; ok {
		return d, nil
	}
	var d unsafe.Pointer
	if err := blasErr("cublasLtMatmulDescCreate", C.bs_lt_desc_create(&d, cublasCompute32F, cudaR32F)); err != nil {
		return nil, err
	}
	epi := C.int32_t(ltEpilogueDefault)
	if key.bias {
		epi = ltEpilogueBias
	}
	for _, set := range []struct {
		attr int
		v    C.int32_t
	}{{ltDescTransA, cublasOpT}, {ltDescTransB, cublasOpN}, {ltDescEpilogue, epi}} {
		if err := blasErr("cublasLtMatmulDescSetAttribute", C.bs_lt_desc_set_i32(d, C.int(set.attr), set.v)); err != nil {
			C.bs_lt_desc_destroy(d)
			return nil, err
		}
	}
	b.descs[key] = d
	return d, nil
}

func (b *blas) plan(key planKey, desc unsafe.Pointer) (*plan, error) {
	if p, ok := b.plans[key]; ok {
		return p, nil
	}
	if len(b.plans) >= maxPlans {
		for k, p := range b.plans {
			p.destroy()
			delete(b.plans, k)
		}
	}
	p := &plan{}
	dt := C.int(key.dt)
	// Column-major views of row-major tensors: w [n,k] is k x n (ld k) and
	// used transposed, x [m,k] is k x m (ld k), out [m,n] is n x m (ld n).
	err := errors.Join(
		blasErr("cublasLtMatrixLayoutCreate", C.bs_lt_layout_create(&p.a, dt, C.uint64_t(key.k), C.uint64_t(key.n), C.int64_t(key.k))),
		blasErr("cublasLtMatrixLayoutCreate", C.bs_lt_layout_create(&p.b, dt, C.uint64_t(key.k), C.uint64_t(key.m), C.int64_t(key.k))),
		blasErr("cublasLtMatrixLayoutCreate", C.bs_lt_layout_create(&p.c, dt, C.uint64_t(key.n), C.uint64_t(key.m), C.int64_t(key.n))),
	)
	if err == nil {
		var count C.int
		status := C.bs_lt_heuristic_get(b.lt, desc, p.a, p.b, p.c, b.pref, &p.algo, &count)
		switch {
		case status == cublasStatusNotSupported || (status == 0 && count == 0):
			p.none = true
		default:
			err = blasErr("cublasLtMatmulAlgoGetHeuristic", status)
		}
	}
	if err != nil {
		p.destroy()
		return nil, fmt.Errorf("plan for %d x %d by %d x %d: %w", key.m, key.k, key.n, key.k, err)
	}
	b.plans[key] = p
	return p, nil
}

// linear is out[m,n] = x[m,k] * w[n,k]^T (+ bias[n], in cuBLASLt's
// epilogue, so that the bias costs no pass of its own).
func (b *blas) linear(dt int, m, n, k int, x, w, bias, out cu.DevicePtr) error {
	withBias := bias != 0
	desc, err := b.desc(ltKey{dt, withBias})
	if err != nil {
		return err
	}
	p, err := b.plan(planKey{dt, m, n, k, withBias}, desc)
	if err != nil {
		return err
	}
	if p.none {
		return errNoAlgorithm
	}
	if withBias {
		if err := blasErr("cublasLtMatmulDescSetAttribute", C.bs_lt_desc_set_ptr(desc, ltDescBiasPointer, C.uintptr_t(bias))); err != nil {
			return err
		}
	}
	status := C.bs_lt_matmul(b.lt, desc, 1, C.uintptr_t(w), p.a, C.uintptr_t(x), p.b, 0, C.uintptr_t(out), p.c,
		&p.algo, C.uintptr_t(b.ws), C.size_t(b.wsSize), b.stream)
	if status == cublasStatusNotSupported {
		// The heuristic offered an algorithm that this shape then turns
		// out not to run on: remember the shape as one for the fallback.
		p.none = true
		return errNoAlgorithm
	}
	return blasErr("cublasLtMatmul", status)
}
