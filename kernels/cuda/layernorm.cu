// Residual + LayerNorm: out = LayerNorm(x + res) * gamma + beta per row,
// res optional, out may alias x or res (every element is read by the
// thread that later writes it, after all of the row's reads).
#include "common.cuh"

// Version 1: one thread per row, two passes for mean and variance as
// kernels.AddLayerNormRef does.
template <typename T>
__device__ void add_layernorm1(T* out, const T* x, const T* res, const void* gamma, const void* beta, int pdt,
                               int rows, int cols, float eps) {
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
    float inv = 1.0f / sqrtf(var / cols + eps);
    for (int j = 0; j < cols; j++) {
        float v = to_f(xr[j]) + (rr ? to_f(rr[j]) : 0.0f);
        o[j] = from_f<T>((v - mean) * inv * ldp(gamma, pdt, j) + ldp(beta, pdt, j));
    }
}

// Version 2: one warp per row, lanes striding the columns (coalesced), warp
// shuffles for the sums.
template <typename T>
__device__ void add_layernorm2(T* out, const T* x, const T* res, const void* gamma, const void* beta, int pdt,
                               int rows, int cols, float eps) {
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
    float inv = 1.0f / sqrtf(warp_sum(var) / cols + eps);
    for (int j = lane; j < cols; j += 32) {
        float v = to_f(xr[j]) + (rr ? to_f(rr[j]) : 0.0f);
        o[j] = from_f<T>((v - mean) * inv * ldp(gamma, pdt, j) + ldp(beta, pdt, j));
    }
}

#define ADD_LAYERNORM(S, T)                                                                                 \
    extern "C" __global__ void add_layernorm1_##S(T* out, const T* x, const T* res, const void* gamma,      \
                                                  const void* beta, int pdt, int rows, int cols, float eps) { \
        add_layernorm1<T>(out, x, res, gamma, beta, pdt, rows, cols, eps);                                  \
    }                                                                                                       \
    extern "C" __global__ void add_layernorm2_##S(T* out, const T* x, const T* res, const void* gamma,      \
                                                  const void* beta, int pdt, int rows, int cols, float eps) { \
        add_layernorm2<T>(out, x, res, gamma, beta, pdt, rows, cols, eps);                                  \
    }
FOR_EACH_T(ADD_LAYERNORM)
