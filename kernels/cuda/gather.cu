// Row gather and scatter: padding removal (gather the real tokens of a
// padded batch into a dense [ntok, hidden] block, or the masked positions
// for an MLM head) and its restore (scatter the dense rows back into a
// zeroed padded batch). An index outside [0, rows) moves nothing and
// records its position in *err with atomicMin, for the host to report.
#include "common.cuh"

template <typename T>
__device__ void gather_rows(T* out, const T* x, const int* idx, int n, int hidden, int rows, int* err) {
    long long total = (long long)n * hidden;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total; e += (long long)gridDim.x * blockDim.x) {
        int i = (int)(e / hidden), c = (int)(e % hidden);
        int r = idx[i];
        if (r < 0 || r >= rows) {
            atomicMin(err, i);
            continue;
        }
        out[e] = x[(long long)r * hidden + c];
    }
}

template <typename T>
__device__ void scatter_rows(T* out, const T* x, const int* idx, int n, int hidden, int rows, int* err) {
    long long total = (long long)n * hidden;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total; e += (long long)gridDim.x * blockDim.x) {
        int i = (int)(e / hidden), c = (int)(e % hidden);
        int r = idx[i];
        if (r < 0 || r >= rows) {
            atomicMin(err, i);
            continue;
        }
        out[(long long)r * hidden + c] = x[e];
    }
}

#define GATHER(S, T)                                                                                         \
    extern "C" __global__ void gather_rows_##S(T* out, const T* x, const int* idx, int n, int hidden, int rows, \
                                               int* err) {                                                   \
        gather_rows<T>(out, x, idx, n, hidden, rows, err);                                                   \
    }                                                                                                        \
    extern "C" __global__ void scatter_rows_##S(T* out, const T* x, const int* idx, int n, int hidden,       \
                                                int rows, int* err) {                                        \
        scatter_rows<T>(out, x, idx, n, hidden, rows, err);                                                  \
    }
FOR_EACH_T(GATHER)
