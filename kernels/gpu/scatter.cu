// Row scatter, Gather's inverse, which puts packed rows back into a padded
// batch that the host has zeroed: row i of x goes to row idx[i] of out.
// Rows move as words W of 16, 4 or 2 bytes, the widest that divides a row,
// and the host has checked that the indices are in range and distinct.
#include "common.cuh"

template <typename W>
__device__ void scatter(W* out, const W* x, const int* idx, int n, int width) {
    long long total = (long long)n * width;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total; e += (long long)gridDim.x * blockDim.x) {
        long long i = e / width, c = e % width;
        out[(long long)idx[i] * width + c] = x[e];
    }
}

#define SCATTER(S, W)                                                                              \
    extern "C" __global__ void scatter_##S(W* out, const W* x, const int* idx, int n, int width) { \
        scatter<W>(out, x, idx, n, width);                                                         \
    }
SCATTER(w16, uint4)
SCATTER(w4, unsigned int)
SCATTER(w2, unsigned short)
