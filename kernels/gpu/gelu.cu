// GELU, the activation of BERT's feed-forward block, applied to a Linear
// layer's output in one pass over it: in place after cuBLASLt has added
// the bias in its epilogue (gelu), or with the bias for the shapes
// cuBLASLt has no algorithm for, where a plain cuBLAS GEMM leaves the bias
// to this pass (bias_gelu). A configuration that names another activation
// (GELU's tanh approximation, ReLU, tanh) gets it from the same kernels:
// the act parameter is a kernels.Act.
#include "common.cuh"

// Must match kernels.Act.
enum { ACT_NONE = 0, ACT_GELU = 1, ACT_GELU_TANH = 2, ACT_RELU = 3, ACT_TANH = 4 };

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

// Each thread moves 16 bytes at a time (4 floats or 8 halves), the width
// at which a memory-bound pass reaches full bandwidth; the activation is a
// template parameter so that the loop carries no switch.
template <typename T, int ACT>
__device__ __forceinline__ void gelu_loop(T* x, long long n) {
    constexpr int V = 16 / sizeof(T);
    long long tid = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    long long stride = (long long)gridDim.x * blockDim.x;
    long long nv = n / V;
    uint4* xv = reinterpret_cast<uint4*>(x);
    for (long long i = tid; i < nv; i += stride) {
        uint4 u = xv[i];
        T* e = reinterpret_cast<T*>(&u);
#pragma unroll
        for (int k = 0; k < V; k++) e[k] = from_f<T>(apply_act(to_f(e[k]), ACT));
        xv[i] = u;
    }
    for (long long i = nv * V + tid; i < n; i += stride) x[i] = from_f<T>(apply_act(to_f(x[i]), ACT));
}

// x must be 16-byte aligned, as every allocation of the Go side is.
template <typename T>
__device__ void gelu(T* x, long long n, int act) {
    switch (act) {
    case ACT_GELU:
        gelu_loop<T, ACT_GELU>(x, n);
        break;
    case ACT_GELU_TANH:
        gelu_loop<T, ACT_GELU_TANH>(x, n);
        break;
    case ACT_RELU:
        gelu_loop<T, ACT_RELU>(x, n);
        break;
    case ACT_TANH:
        gelu_loop<T, ACT_TANH>(x, n);
        break;
    }
}

// x is rows x cols, bias cols values (or null); one element per thread
// and grid step, the column from a modulo: the odd shapes this serves are
// small.
template <typename T>
__device__ void bias_gelu(T* x, const T* bias, long long rows, int cols, int act) {
    long long n = rows * cols;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float v = to_f(x[i]);
        if (bias) v += to_f(bias[i % cols]);
        x[i] = from_f<T>(apply_act(v, act));
    }
}

#define GELU(S, T)                                                                                   \
    extern "C" __global__ void gelu_##S(T* x, long long n, int a) { gelu<T>(x, n, a); }              \
    extern "C" __global__ void bias_gelu_##S(T* x, const T* bias, long long rows, int cols, int a) { \
        bias_gelu<T>(x, bias, rows, cols, a);                                                        \
    }
FOR_EACH_T(GELU)
