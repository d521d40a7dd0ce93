// Row gather and scatter, the two halves of padding removal: Gather picks
// rows of a packed [n, hidden] block (the first token of each sequence for
// the pooler, the masked positions for an MLM head); Scatter puts packed
// rows back into a padded batch that the host has zeroed. Rows move as
// words W of 16, 4 or 2 bytes, the widest that divides a row, and the host
// has checked every index.
#include "common.cuh"

template <typename W>
__device__ void gather_rows(W* out, const W* x, const int* idx, int n, int width) {
    long long total = (long long)n * width;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total; e += (long long)gridDim.x * blockDim.x) {
        long long i = e / width, c = e % width;
        out[e] = x[(long long)idx[i] * width + c];
    }
}

template <typename W>
__device__ void scatter_rows(W* out, const W* x, const int* idx, int n, int width) {
    long long total = (long long)n * width;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total; e += (long long)gridDim.x * blockDim.x) {
        long long i = e / width, c = e % width;
        out[(long long)idx[i] * width + c] = x[e];
    }
}

#define ROWS(S, W)                                                                                           \
    extern "C" __global__ void gather_rows_##S(W* out, const W* x, const int* idx, int n, int width) {      \
        gather_rows<W>(out, x, idx, n, width);                                                               \
    }                                                                                                        \
    extern "C" __global__ void scatter_rows_##S(W* out, const W* x, const int* idx, int n, int width) {     \
        scatter_rows<W>(out, x, idx, n, width);                                                              \
    }
ROWS(w16, uint4)
ROWS(w4, unsigned int)
ROWS(w2, unsigned short)
