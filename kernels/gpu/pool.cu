// Pooling of packed sequences with kernels.PoolRef's semantics: x [n,
// hidden] holds sequence b in rows seqs[b] to seqs[b+1], all real tokens;
// out [nseq, hidden] gets the first row (CLS), the mean or the element-wise
// max; an empty sequence pools to zeros.
#include "common.cuh"

// Must match kernels.Pooling.
enum { POOL_CLS = 0, POOL_MEAN = 1, POOL_MAX = 2 };

// One thread per output column: neighbouring threads read neighbouring
// columns of each row, so every load is coalesced, and the sum runs in the
// reference's order.
template <typename T>
__device__ void pool(T* out, const T* x, const int* seqs, int nseq, int hidden, int mode) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= hidden) return;
    for (int b = blockIdx.y; b < nseq; b += gridDim.y) {
        int lo = seqs[b], hi = seqs[b + 1];
        float acc = 0.0f;
        if (lo < hi) {
            acc = to_f(x[(long long)lo * hidden + j]);
            if (mode != POOL_CLS) {
                for (int t = lo + 1; t < hi; t++) {
                    float v = to_f(x[(long long)t * hidden + j]);
                    acc = mode == POOL_MAX ? fmaxf(acc, v) : acc + v;
                }
                if (mode == POOL_MEAN) acc /= (float)(hi - lo);
            }
        }
        out[(long long)b * hidden + j] = from_f<T>(acc);
    }
}

#define POOL(S, T)                                                                                 \
    extern "C" __global__ void pool_##S(T* out, const T* x, const int* seqs, int nseq, int hidden, \
                                        int mode) {                                                \
        pool<T>(out, x, seqs, nseq, hidden, mode);                                                 \
    }
FOR_EACH_T(POOL)
