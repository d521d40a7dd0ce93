// Shared helpers of bertstream's CUDA kernels: dtype conversions, warp
// reductions and the activations. Activations are templated on their
// element type T (float, __half, __nv_bfloat16) and always computed in
// float; parameters (LayerNorm gamma/beta, biases, embedding tables) carry
// a run-time dtype code instead, so that a model may keep them in F32 while
// its activations are F16 without a template for every pairing. The branch
// on that code is uniform across a warp and costs nothing next to the load.
#pragma once
#include <cuda_fp16.h>
#include <cuda_bf16.h>

// Must match dtypeCode in cuda/backend.go.
enum { DT_F32 = 0, DT_F16 = 1, DT_BF16 = 2 };

// Must match kernels.Act.
enum { ACT_NONE = 0, ACT_GELU = 1, ACT_GELU_TANH = 2, ACT_RELU = 3, ACT_TANH = 4 };

// Must match kernels.Pooling.
enum { POOL_CLS = 0, POOL_MEAN = 1, POOL_MAX = 2 };

#define NO_ERROR 0x7fffffff

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// ldp reads element i of a parameter array of run-time dtype dt.
__device__ __forceinline__ float ldp(const void* p, int dt, long long i) {
    switch (dt) {
    case DT_F16:
        return __half2float(((const __half*)p)[i]);
    case DT_BF16:
        return __bfloat162float(((const __nv_bfloat16*)p)[i]);
    default:
        return ((const float*)p)[i];
    }
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// apply_act follows kernels.ActivationRef: exact erf GELU, the tanh
// approximation, ReLU and tanh.
__device__ __forceinline__ float apply_act(float v, int act) {
    switch (act) {
    case ACT_GELU:
        return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case ACT_GELU_TANH:
        return 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    case ACT_RELU:
        return v < 0.0f ? 0.0f : v;
    case ACT_TANH:
        return tanhf(v);
    }
    return v;
}

// FOR_EACH_T instantiates an extern "C" entry point per activation type,
// named NAME_f32, NAME_f16 and NAME_bf16, so that the Go side finds them
// in the PTX by name.
#define FOR_EACH_T(M) M(f32, float) M(f16, __half) M(bf16, __nv_bfloat16)
