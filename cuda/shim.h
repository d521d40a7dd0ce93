//go:build cuda

// The C side of the cuda package: the cuInit guard and the cuBLAS /
// cuBLASLt entry points that shim.c resolves with dlopen at run time. The
// types are declared here rather than taken from cublas_api.h so that one
// binary, built against any toolkit, binds to the CUDA 11.8, 12.x and 13.x
// libraries: every enum value and struct used is ABI-stable across them.
#pragma once
#include <stddef.h>
#include <stdint.h>

// The result of the real cuInit, which gorgonia.org/cu calls from its
// package init (see shim.c).
int bs_cu_init_result(void);
const char* bs_cu_error_string(int code);

// bs_cublas_open loads libcublasLt from lt_path, then libcublas from
// blas_path (both names or paths for dlopen), and resolves every function
// below. It returns NULL on success or a message naming what failed.
const char* bs_cublas_open(const char* lt_path, const char* blas_path);

typedef struct {
    uint64_t algo[8];  // cublasLtMatmulAlgo_t
    size_t workspace_size;
    int state;
    float waves_count;
    int reserved[4];
} bs_lt_heuristic;

int bs_cublas_create(void** handle);
int bs_cublas_destroy(void* handle);
int bs_cublas_version(void* handle, int* version);
int bs_cublas_set_stream(void* handle, void* stream);
int bs_cublas_set_math_mode(void* handle, int mode);
int bs_cublas_set_workspace(void* handle, uintptr_t ws, size_t size);
int bs_cublas_sgemm(void* handle, int ta, int tb, int m, int n, int k, float alpha, uintptr_t a, int lda,
                    uintptr_t b, int ldb, float beta, uintptr_t c, int ldc);
int bs_cublas_gemm_ex(void* handle, int ta, int tb, int m, int n, int k, float alpha, uintptr_t a, int dt,
                      int lda, uintptr_t b, int ldb, float beta, uintptr_t c, int ldc);

int bs_lt_create(void** handle);
int bs_lt_destroy(void* handle);
int bs_lt_desc_create(void** desc, int compute_type, int scale_type);
int bs_lt_desc_destroy(void* desc);
int bs_lt_desc_set_i32(void* desc, int attr, int32_t value);
int bs_lt_desc_set_ptr(void* desc, int attr, uintptr_t value);
int bs_lt_layout_create(void** layout, int dt, uint64_t rows, uint64_t cols, int64_t ld);
int bs_lt_layout_destroy(void* layout);
int bs_lt_pref_create(void** pref);
int bs_lt_pref_destroy(void* pref);
int bs_lt_pref_set_u32(void* pref, int attr, uint32_t value);
int bs_lt_pref_set_u64(void* pref, int attr, uint64_t value);
int bs_lt_heuristic_get(void* handle, void* desc, void* a, void* b, void* c, void* pref, bs_lt_heuristic* out,
                        int* count);
int bs_lt_matmul(void* handle, void* desc, float alpha, uintptr_t a, void* adesc, uintptr_t b, void* bdesc,
                 float beta, uintptr_t c, void* cdesc, const bs_lt_heuristic* algo, uintptr_t ws, size_t ws_size,
                 void* stream);
