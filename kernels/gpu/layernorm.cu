// Residual + LayerNorm: out = LayerNorm(x + res) * gamma + beta per row,
// res optional (null), out may alias x or res: every element is read by
// the thread that later writes it, after all of its row's reads.
#include "common.cuh"

// Version 1: one thread per row, two passes for mean and variance as
// kernels.LayerNormRef does.
template <typename T>
__device__ void layernorm1(T* out, const T* x, const T* res, const T* gamma, const T* beta, int rows, int cols,
                           float eps) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const T* xr = x + (long long)r * cols;
    const T* rr = res ? res + (long long)r * cols : nullptr;
    T* o = out + (long long)r * cols;
    float mean = 0.0f;
    for (int j = 0; j < cols; j++) mean += to_f(xr[j]) + (rr ? to_f(rr[j]) : 0.0f);
    mean /= cols;
    float var = 0.0f;
    for (int j = 0; j < cols; j++) {
        float d = to_f(xr[j]) + (rr ? to_f(rr[j]) : 0.0f) - mean;
        var += d * d;
    }
    float inv = rsqrtf(var / cols + eps);
    for (int j = 0; j < cols; j++) {
        float v = to_f(xr[j]) + (rr ? to_f(rr[j]) : 0.0f);
        o[j] = from_f<T>((v - mean) * inv * to_f(gamma[j]) + to_f(beta[j]));
    }
}

// Version 2: one warp per row, lanes striding the columns (coalesced), warp
// shuffles for the sums. The row is read three times; the second and third
// reads hit L1, so DRAM sees it once.
template <typename T>
__device__ void layernorm2(T* out, const T* x, const T* res, const T* gamma, const T* beta, int rows, int cols,
                           float eps) {
    int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (r >= rows) return;  // uniform per warp
    const T* xr = x + (long long)r * cols;
    const T* rr = res ? res + (long long)r * cols : nullptr;
    T* o = out + (long long)r * cols;
    float sum = 0.0f;
    for (int j = lane; j < cols; j += 32) sum += to_f(xr[j]) + (rr ? to_f(rr[j]) : 0.0f);
    float mean = warp_sum(sum) / cols;
    float var = 0.0f;
    for (int j = lane; j < cols; j += 32) {
        float d = to_f(xr[j]) + (rr ? to_f(rr[j]) : 0.0f) - mean;
        var += d * d;
    }
    float inv = rsqrtf(warp_sum(var) / cols + eps);
    for (int j = lane; j < cols; j += 32) {
        float v = to_f(xr[j]) + (rr ? to_f(rr[j]) : 0.0f);
        o[j] = from_f<T>((v - mean) * inv * to_f(gamma[j]) + to_f(beta[j]));
    }
}

#define LAYERNORM(S, T)                                                                         \
    extern "C" __global__ void layernorm1_##S(T* out, const T* x, const T* res, const T* gamma, \
                                              const T* beta, int rows, int cols, float eps) {   \
        layernorm1<T>(out, x, res, gamma, beta, rows, cols, eps);                               \
    }                                                                                           \
    extern "C" __global__ void layernorm2_##S(T* out, const T* x, const T* res, const T* gamma, \
                                              const T* beta, int rows, int cols, float eps) {   \
        layernorm2<T>(out, x, res, gamma, beta, rows, cols, eps);                               \
    }
FOR_EACH_T(LAYERNORM)
