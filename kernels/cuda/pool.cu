// Pooling of x [batch, seq, hidden] into out [batch, hidden] with
// kernels.PoolRef's semantics: CLS takes token 0; mean and max run over
// tokens whose mask is non-zero (null mask = all), and a sequence with no
// such token pools to zeros.
#include "common.cuh"

// One thread per output element: neighbouring threads read neighbouring
// columns of each token row, so every load is coalesced.
template <typename T>
__device__ void pool1(T* out, const T* x, const int* mask, int batch, int seq, int hidden, int mode) {
    long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e >= (long long)batch * hidden) return;
    int b = (int)(e / hidden), j = (int)(e % hidden);
    const T* xb = x + (long long)b * seq * hidden;
    if (mode == POOL_CLS) {
        out[e] = xb[j];
        return;
    }
    float acc = mode == POOL_MAX ? -INFINITY : 0.0f;
    int n = 0;
    for (int t = 0; t < seq; t++) {
        if (mask && !mask[(long long)b * seq + t]) continue;
        n++;
        float v = to_f(xb[(long long)t * hidden + j]);
        acc = mode == POOL_MAX ? fmaxf(acc, v) : acc + v;
    }
    if (n == 0)
        acc = 0.0f;
    else if (mode == POOL_MEAN)
        acc /= (float)n;
    out[e] = from_f<T>(acc);
}

#define POOL(S, T)                                                                                       \
    extern "C" __global__ void pool1_##S(T* out, const T* x, const int* mask, int batch, int seq,        \
                                         int hidden, int mode) {                                         \
        pool1<T>(out, x, mask, batch, seq, hidden, mode);                                                \
    }
FOR_EACH_T(POOL)
