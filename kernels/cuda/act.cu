// Bias + activation, the epilogue of every Linear layer (bias + GELU in
// the feed-forward block), in place on the GEMM's output.
#include "common.cuh"

// Version 1: one thread per element, grid-stride, column from a modulo.
template <typename T>
__device__ void bias_act1(T* x, const void* bias, int bdt, long long rows, int cols, int act) {
    long long n = rows * cols;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float v = to_f(x[i]);
        if (bias) v += ldp(bias, bdt, i % cols);
        x[i] = from_f<T>(apply_act(v, act));
    }
}

// Version 2: blockIdx.y walks rows, threads walk columns, so the bias is
// read once per column and no division is needed.
template <typename T>
__device__ void bias_act2(T* x, const void* bias, int bdt, long long rows, int cols, int act) {
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += gridDim.x * blockDim.x) {
        float b = bias ? ldp(bias, bdt, c) : 0.0f;
        for (long long r = blockIdx.y; r < rows; r += gridDim.y) {
            long long i = r * cols + c;
            x[i] = from_f<T>(apply_act(to_f(x[i]) + b, act));
        }
    }
}

#define BIAS_ACT(S, T)                                                                                       \
    extern "C" __global__ void bias_act1_##S(T* x, const void* bias, int bdt, long long rows, int cols, int act) { \
        bias_act1<T>(x, bias, bdt, rows, cols, act);                                                         \
    }                                                                                                        \
    extern "C" __global__ void bias_act2_##S(T* x, const void* bias, int bdt, long long rows, int cols, int act) { \
        bias_act2<T>(x, bias, bdt, rows, cols, act);                                                         \
    }
FOR_EACH_T(BIAS_ACT)
