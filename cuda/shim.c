//go:build cuda

#define _GNU_SOURCE
#include "shim.h"

#include <cuda.h>
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

// gorgonia.org/cu calls cuInit from its package init and exits the
// process when it fails, so that a binary built with CUDA could not even
// start on a machine without a GPU (nor let its tests skip). This
// definition takes precedence over libcuda's for the calls linked into the
// binary: it runs the real cuInit, keeps its result for the backend to
// report when it is opened, and lets the package init go on.
static CUresult init_result = CUDA_ERROR_NOT_INITIALIZED;

CUresult cuInit(unsigned int flags) {
    CUresult (*real)(unsigned int) = (CUresult(*)(unsigned int))dlsym(RTLD_NEXT, "cuInit");
    init_result = real ? real(flags) : CUDA_ERROR_SHARED_OBJECT_SYMBOL_NOT_FOUND;
    return CUDA_SUCCESS;
}

int bs_cu_init_result(void) { return (int)init_result; }

const char* bs_cu_error_string(int code) {
    const char* s = NULL;
    if (cuGetErrorString((CUresult)code, &s) != CUDA_SUCCESS || s == NULL) return "unknown CUDA error";
    return s;
}

// Function pointers, one per entry point; the signatures are those of
// cublas_api.h and cublasLt.h with opaque handles as void*.
static int (*p_create)(void**);
static int (*p_destroy)(void*);
static int (*p_version)(void*, int*);
static int (*p_set_stream)(void*, void*);
static int (*p_set_math_mode)(void*, int);
static int (*p_set_workspace)(void*, void*, size_t);
static int (*p_sgemm)(void*, int, int, int, int, int, const float*, const float*, int, const float*, int,
                      const float*, float*, int);
static int (*p_gemm_ex)(void*, int, int, int, int, int, const void*, const void*, int, int, const void*, int, int,
                        const void*, void*, int, int, int, int);
static int (*p_lt_create)(void**);
static int (*p_lt_destroy)(void*);
static int (*p_lt_desc_create)(void**, int, int);
static int (*p_lt_desc_destroy)(void*);
static int (*p_lt_desc_set)(void*, int, const void*, size_t);
static int (*p_lt_layout_create)(void**, int, uint64_t, uint64_t, int64_t);
static int (*p_lt_layout_destroy)(void*);
static int (*p_lt_pref_create)(void**);
static int (*p_lt_pref_destroy)(void*);
static int (*p_lt_pref_set)(void*, int, const void*, size_t);
static int (*p_lt_heuristic)(void*, void*, void*, void*, void*, void*, void*, int, bs_lt_heuristic*, int*);
static int (*p_lt_matmul)(void*, void*, const void*, const void*, void*, const void*, void*, const void*,
                          const void*, void*, void*, void*, const void*, void*, size_t, void*);

static char open_err[512];

#define BIND(lib, ptr, name)                                                                  \
    do {                                                                                      \
        *(void**)(&ptr) = dlsym(lib, name);                                                   \
        if (!ptr) {                                                                           \
            snprintf(open_err, sizeof open_err, "%s has no %s", what, name);                  \
            return open_err;                                                                  \
        }                                                                                     \
    } while (0)

const char* bs_cublas_open(const char* lt_path, const char* blas_path) {
    // libcublas needs libcublasLt of its own version: loading that first,
    // by the same path, makes the dynamic loader reuse it (it matches
    // libcublas's dependency by soname) instead of searching for one.
    void* lt = dlopen(lt_path, RTLD_NOW | RTLD_GLOBAL);
    if (!lt) {
        snprintf(open_err, sizeof open_err, "%s", dlerror());
        return open_err;
    }
    void* blas = dlopen(blas_path, RTLD_NOW | RTLD_LOCAL);
    if (!blas) {
        snprintf(open_err, sizeof open_err, "%s", dlerror());
        dlclose(lt);
        return open_err;
    }
    const char* what = blas_path;
    BIND(blas, p_create, "cublasCreate_v2");
    BIND(blas, p_destroy, "cublasDestroy_v2");
    BIND(blas, p_version, "cublasGetVersion_v2");
    BIND(blas, p_set_stream, "cublasSetStream_v2");
    BIND(blas, p_set_math_mode, "cublasSetMathMode");
    BIND(blas, p_set_workspace, "cublasSetWorkspace_v2");
    BIND(blas, p_sgemm, "cublasSgemm_v2");
    BIND(blas, p_gemm_ex, "cublasGemmEx");
    what = lt_path;
    BIND(lt, p_lt_create, "cublasLtCreate");
    BIND(lt, p_lt_destroy, "cublasLtDestroy");
    BIND(lt, p_lt_desc_create, "cublasLtMatmulDescCreate");
    BIND(lt, p_lt_desc_destroy, "cublasLtMatmulDescDestroy");
    BIND(lt, p_lt_desc_set, "cublasLtMatmulDescSetAttribute");
    BIND(lt, p_lt_layout_create, "cublasLtMatrixLayoutCreate");
    BIND(lt, p_lt_layout_destroy, "cublasLtMatrixLayoutDestroy");
    BIND(lt, p_lt_pref_create, "cublasLtMatmulPreferenceCreate");
    BIND(lt, p_lt_pref_destroy, "cublasLtMatmulPreferenceDestroy");
    BIND(lt, p_lt_pref_set, "cublasLtMatmulPreferenceSetAttribute");
    BIND(lt, p_lt_heuristic, "cublasLtMatmulAlgoGetHeuristic");
    BIND(lt, p_lt_matmul, "cublasLtMatmul");
    return NULL;
}

int bs_cublas_create(void** handle) { return p_create(handle); }
int bs_cublas_destroy(void* handle) { return p_destroy(handle); }
int bs_cublas_version(void* handle, int* version) { return p_version(handle, version); }
int bs_cublas_set_stream(void* handle, void* stream) { return p_set_stream(handle, stream); }
int bs_cublas_set_math_mode(void* handle, int mode) { return p_set_math_mode(handle, mode); }
int bs_cublas_set_workspace(void* handle, uintptr_t ws, size_t size) {
    return p_set_workspace(handle, (void*)ws, size);
}

int bs_cublas_sgemm(void* handle, int ta, int tb, int m, int n, int k, float alpha, uintptr_t a, int lda,
                    uintptr_t b, int ldb, float beta, uintptr_t c, int ldc) {
    return p_sgemm(handle, ta, tb, m, n, k, &alpha, (const float*)a, lda, (const float*)b, ldb, &beta, (float*)c,
                   ldc);
}

// CUBLAS_COMPUTE_32F and CUBLAS_GEMM_DEFAULT: F16/BF16 operands with F32
// accumulation, the algorithm left to cuBLAS.
enum { COMPUTE_32F = 68, GEMM_DEFAULT = -1 };

int bs_cublas_gemm_ex(void* handle, int ta, int tb, int m, int n, int k, float alpha, uintptr_t a, int dt,
                      int lda, uintptr_t b, int ldb, float beta, uintptr_t c, int ldc) {
    return p_gemm_ex(handle, ta, tb, m, n, k, &alpha, (const void*)a, dt, lda, (const void*)b, dt, ldb, &beta,
                     (void*)c, dt, ldc, COMPUTE_32F, GEMM_DEFAULT);
}

int bs_lt_create(void** handle) { return p_lt_create(handle); }
int bs_lt_destroy(void* handle) { return p_lt_destroy(handle); }
int bs_lt_desc_create(void** desc, int compute_type, int scale_type) {
    return p_lt_desc_create(desc, compute_type, scale_type);
}
int bs_lt_desc_destroy(void* desc) { return p_lt_desc_destroy(desc); }
int bs_lt_desc_set_i32(void* desc, int attr, int32_t value) { return p_lt_desc_set(desc, attr, &value, sizeof value); }
int bs_lt_desc_set_ptr(void* desc, int attr, uintptr_t value) {
    void* p = (void*)value;
    return p_lt_desc_set(desc, attr, &p, sizeof p);
}
int bs_lt_layout_create(void** layout, int dt, uint64_t rows, uint64_t cols, int64_t ld) {
    return p_lt_layout_create(layout, dt, rows, cols, ld);
}
int bs_lt_layout_destroy(void* layout) { return p_lt_layout_destroy(layout); }
int bs_lt_pref_create(void** pref) { return p_lt_pref_create(pref); }
int bs_lt_pref_destroy(void* pref) { return p_lt_pref_destroy(pref); }
int bs_lt_pref_set_u32(void* pref, int attr, uint32_t value) { return p_lt_pref_set(pref, attr, &value, sizeof value); }
int bs_lt_pref_set_u64(void* pref, int attr, uint64_t value) { return p_lt_pref_set(pref, attr, &value, sizeof value); }

int bs_lt_heuristic_get(void* handle, void* desc, void* a, void* b, void* c, void* pref, bs_lt_heuristic* out,
                        int* count) {
    return p_lt_heuristic(handle, desc, a, b, c, c, pref, 1, out, count);
}

int bs_lt_matmul(void* handle, void* desc, float alpha, uintptr_t a, void* adesc, uintptr_t b, void* bdesc,
                 float beta, uintptr_t c, void* cdesc, const bs_lt_heuristic* algo, uintptr_t ws, size_t ws_size,
                 void* stream) {
    return p_lt_matmul(handle, desc, &alpha, (const void*)a, adesc, (const void*)b, bdesc, &beta, (const void*)c,
                       cdesc, (void*)c, cdesc, algo->algo, (void*)ws, ws_size, stream);
}
