// Shared helpers of bertstream's CUDA kernels: element types and warp
// reductions. Every kernel is a template on its element type T (float,
// __half, __nv_bfloat16) that loads T, computes in float and rounds once
// when it stores, so that F16 and BF16 keep F32 accumulation everywhere;
// FOR_EACH_T gives each template an extern "C" entry point per type, which
// the Go side finds in the PTX by the name kernels/gpu's launch
// configuration gives it.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

#define FOR_EACH_T(M) M(f32, float) M(f16, __half) M(bf16, __nv_bfloat16)

// A kernel's dynamically sized shared memory (the size is a launch
// argument); internal/emu gives it another definition.
#ifndef DYNAMIC_SHARED
#define DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif
