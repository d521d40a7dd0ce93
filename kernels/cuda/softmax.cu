// Scaled masked softmax over the last dimension, in place, with
// kernels.SoftmaxRef's semantics: x is nrows x cols; row r uses mask row
// r / rowsPerMask (cols entries, non-zero = attend); masked columns become
// 0; a row whose mask is all zero attends everywhere; mask may be null.
#include "common.cuh"

// Version 1: one thread per row, three passes.
template <typename T>
__device__ void softmax1(T* x, const int* mask, int nrows, int cols, int rowsPerMask, float scale) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= nrows) return;
    T* row = x + (long long)r * cols;
    const int* m = mask ? mask + (long long)(r / rowsPerMask) * cols : nullptr;
    if (m) {
        bool any = false;
        for (int j = 0; j < cols && !any; j++) any = m[j] != 0;
        if (!any) m = nullptr;
    }
    float mx = -INFINITY;
    for (int j = 0; j < cols; j++)
        if (!m || m[j]) mx = fmaxf(mx, scale * to_f(row[j]));
    float sum = 0.0f;
    for (int j = 0; j < cols; j++)
        if (!m || m[j]) sum += expf(scale * to_f(row[j]) - mx);
    for (int j = 0; j < cols; j++)
        row[j] = from_f<T>((m && !m[j]) ? 0.0f : expf(scale * to_f(row[j]) - mx) / sum);
}

// Version 2: one warp per row, coalesced lanes, shuffle reductions.
template <typename T>
__device__ void softmax2(T* x, const int* mask, int nrows, int cols, int rowsPerMask, float scale) {
    int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (r >= nrows) return;  // uniform per warp
    T* row = x + (long long)r * cols;
    const int* m = mask ? mask + (long long)(r / rowsPerMask) * cols : nullptr;
    if (m) {
        int any = 0;
        for (int j = lane; j < cols; j += 32) any |= m[j] != 0;
        if (!__any_sync(0xffffffffu, any)) m = nullptr;
    }
    float mx = -INFINITY;
    for (int j = lane; j < cols; j += 32)
        if (!m || m[j]) mx = fmaxf(mx, scale * to_f(row[j]));
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int j = lane; j < cols; j += 32)
        if (!m || m[j]) sum += expf(scale * to_f(row[j]) - mx);
    float inv = 1.0f / warp_sum(sum);
    for (int j = lane; j < cols; j += 32)
        row[j] = from_f<T>((m && !m[j]) ? 0.0f : expf(scale * to_f(row[j]) - mx) * inv);
}

#define SOFTMAX(S, T)                                                                                     \
    extern "C" __global__ void softmax1_##S(T* x, const int* mask, int nrows, int cols, int rowsPerMask, \
                                            float scale) {                                               \
        softmax1<T>(x, mask, nrows, cols, rowsPerMask, scale);                                           \
    }                                                                                                    \
    extern "C" __global__ void softmax2_##S(T* x, const int* mask, int nrows, int cols, int rowsPerMask, \
                                            float scale) {                                               \
        softmax2<T>(x, mask, nrows, cols, rowsPerMask, scale);                                           \
    }
FOR_EACH_T(SOFTMAX)
