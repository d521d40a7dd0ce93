// Shared helpers of bertstream's CUDA kernels: element types, warp
// reductions and the activations. Every kernel is a template on its
// element type T (float, __half, __nv_bfloat16) that loads T, computes in
// float and rounds once when it stores, so that F16 and BF16 keep F32
// accumulation everywhere; FOR_EACH_T gives each template an extern "C"
// entry point per type, which the Go side finds in the PTX by name.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

// Must match kernels.Act.
enum { ACT_NONE = 0, ACT_GELU = 1, ACT_GELU_TANH = 2, ACT_RELU = 3, ACT_TANH = 4 };

// Must match kernels.Pooling.
enum { POOL_CLS = 0, POOL_MEAN = 1, POOL_MAX = 2 };

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

// apply_act follows kernels.ActivationRef. GELU is written with erfc so
// that negative inputs, where 1 + erf(z) cancels, keep their accuracy.
__device__ __forceinline__ float apply_act(float v, int act) {
    switch (act) {
    case ACT_GELU:
        return 0.5f * v * erfcf(-v * 0.70710678118654752f);
    case ACT_GELU_TANH:
        return 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    case ACT_RELU:
        return v < 0.0f ? 0.0f : v;
    case ACT_TANH:
        return tanhf(v);
    }
    return v;
}

#define FOR_EACH_T(M) M(f32, float) M(f16, __half) M(bf16, __nv_bfloat16)

// A kernel's dynamically sized shared memory (the size is a launch
// argument); internal/emu gives it another definition.
#ifndef DYNAMIC_SHARED
#define DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif
