// Row gather, the first half of padding removal: picks rows idx of a
// packed [n, hidden] block (the first token of each sequence for the
// pooler, the masked positions for an MLM head). Rows move as words W of
// 16, 4 or 2 bytes, the widest that divides a row, and the host has
// checked every index.
#include "common.cuh"

template <typename W>
__device__ void gather(W* out, const W* x, const int* idx, int n, int width) {
    long long total = (long long)n * width;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total; e += (long long)gridDim.x * blockDim.x) {
        long long i = e / width, c = e % width;
        out[e] = x[(long long)idx[i] * width + c];
    }
}

#define GATHER(S, W)                                                                              \
    extern "C" __global__ void gather_##S(W* out, const W* x, const int* idx, int n, int width) { \
        gather<W>(out, x, idx, n, width);                                                         \
    }
GATHER(w16, uint4)
GATHER(w4, unsigned int)
GATHER(w2, unsigned short)
