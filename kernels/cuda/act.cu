// Element-wise activation in place: Activation, and the epilogue of a
// Linear layer after cuBLASLt has added the bias (bias + GELU of the
// feed-forward block costs this one pass over the GEMM's output); and
// bias + activation for the shapes cuBLASLt has no kernel for, where a
// plain cuBLAS GEMM leaves the bias to this pass.
#include "common.cuh"

// Each thread moves 16 bytes at a time (4 floats or 8 halves), the width
// at which a memory-bound pass reaches full bandwidth; the activation is a
// template parameter so that the loop carries no switch.
template <typename T, int ACT>
__device__ __forceinline__ void act_loop(T* x, long long n) {
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
__device__ void act(T* x, long long n, int act) {
    switch (act) {
    case ACT_GELU:
        act_loop<T, ACT_GELU>(x, n);
        break;
    case ACT_GELU_TANH:
        act_loop<T, ACT_GELU_TANH>(x, n);
        break;
    case ACT_RELU:
        act_loop<T, ACT_RELU>(x, n);
        break;
    case ACT_TANH:
        act_loop<T, ACT_TANH>(x, n);
        break;
    }
}

// x is rows x cols, bias cols values (or null); one element per thread
// and grid step, the column from a modulo: the odd shapes this serves are
// small.
template <typename T>
__device__ void bias_act(T* x, const T* bias, long long rows, int cols, int act) {
    long long n = rows * cols;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float v = to_f(x[i]);
        if (bias) v += to_f(bias[i % cols]);
        x[i] = from_f<T>(apply_act(v, act));
    }
}

#define ACT(S, T)                                                                                      \
    extern "C" __global__ void act_##S(T* x, long long n, int a) { act<T>(x, n, a); }                  \
    extern "C" __global__ void bias_act_##S(T* x, const T* bias, long long rows, int cols, int a) {    \
        bias_act<T>(x, bias, rows, cols, a);                                                           \
    }
FOR_EACH_T(ACT)
