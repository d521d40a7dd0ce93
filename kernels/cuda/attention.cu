// Fused multi-head self-attention for BERT's short sequences, with
// kernels.AttentionRef's semantics: qkv is [batch, seq, 3*hidden] (query,
// key and value projections of each token, heads of dh = hidden/heads
// values each), mask [batch, seq] (non-zero = a real token; a sequence
// without any attends everywhere; null = no mask), out [batch, seq,
// hidden] gets softmax(scale * q k^T) v per head. No score matrix is
// written to memory.
#include "common.cuh"

__device__ __forceinline__ bool attend_all(const int* mrow, int seq) {
    if (!mrow) return true;
    for (int j = 0; j < seq; j++)
        if (mrow[j]) return false;
    return true;
}

// Version 1: one thread per output element, three passes over the keys
// (max, sum, weighted values), every score recomputed. Slow; the plain
// reference the tiled version is checked against on the GPU.
template <typename T>
__device__ void attention1(T* out, const T* qkv, const int* mask, int batch, int seq, int hidden, int heads,
                           float scale) {
    long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e >= (long long)batch * seq * hidden) return;
    int dh = hidden / heads;
    int c = (int)(e % hidden);
    int i = (int)((e / hidden) % seq);
    int b = (int)(e / ((long long)hidden * seq));
    int h = c / dh, d = c % dh;
    long long ld = 3LL * hidden;
    const T* base = qkv + (long long)b * seq * ld;
    const T* q = base + i * ld + h * dh;
    const int* m = mask ? mask + (long long)b * seq : nullptr;
    if (attend_all(m, seq)) m = nullptr;
    float mx = -INFINITY;
    for (int j = 0; j < seq; j++) {
        if (m && !m[j]) continue;
        const T* k = base + j * ld + hidden + h * dh;
        float s = 0.0f;
        for (int t = 0; t < dh; t++) s += to_f(q[t]) * to_f(k[t]);
        mx = fmaxf(mx, scale * s);
    }
    float sum = 0.0f;
    for (int j = 0; j < seq; j++) {
        if (m && !m[j]) continue;
        const T* k = base + j * ld + hidden + h * dh;
        float s = 0.0f;
        for (int t = 0; t < dh; t++) s += to_f(q[t]) * to_f(k[t]);
        sum += expf(scale * s - mx);
    }
    float acc = 0.0f;
    for (int j = 0; j < seq; j++) {
        if (m && !m[j]) continue;
        const T* k = base + j * ld + hidden + h * dh;
        float s = 0.0f;
        for (int t = 0; t < dh; t++) s += to_f(q[t]) * to_f(k[t]);
        acc += expf(scale * s - mx) / sum * to_f(base[j * ld + 2 * hidden + h * dh + d]);
    }
    out[e] = from_f<T>(acc);
}

// Version 2: a block per (query tile of QB rows, head, batch item), one
// thread per query row. Key and value tiles of KT rows go through shared
// memory as float; each thread keeps a running max, sum and its output row
// (DH floats, DH >= dh, zero-padded) in registers and rescales them when
// the max grows (the online softmax), so the score matrix never exists.
// Shared rows are padded to DH+1 floats so that threads reading their own
// query row hit distinct banks; key and value reads are broadcasts.
template <typename T, int DH, int QB, int KT>
__device__ void attention2(T* out, const T* qkv, const int* mask, int seq, int hidden, int heads, float scale) {
    __shared__ float qs[QB][DH + 1];
    __shared__ float ks[KT][DH + 1];
    __shared__ float vs[KT][DH];
    __shared__ int ms[KT];
    const int dh = hidden / heads;
    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * QB, tid = threadIdx.x;
    const long long ld = 3LL * hidden;
    const T* base = qkv + (long long)b * seq * ld;
    const int* mrow = mask ? mask + (long long)b * seq : nullptr;

    int any = 0;
    if (mrow)
        for (int j = tid; j < seq; j += QB) any |= mrow[j] != 0;
    const bool masked = __syncthreads_or(any) != 0;

    for (int e = tid; e < QB * DH; e += QB) {
        int r = e / DH, d = e % DH, qi = q0 + r;
        qs[r][d] = (qi < seq && d < dh) ? to_f(base[qi * ld + h * dh + d]) : 0.0f;
    }

    float acc[DH];
#pragma unroll
    for (int d = 0; d < DH; d++) acc[d] = 0.0f;
    float run_max = -INFINITY, run_sum = 0.0f;

    for (int k0 = 0; k0 < seq; k0 += KT) {
        __syncthreads();  // the previous tile is consumed; qs is written
        for (int e = tid; e < KT * DH; e += QB) {
            int r = e / DH, d = e % DH, kj = k0 + r;
            bool in = kj < seq && d < dh;
            ks[r][d] = in ? to_f(base[kj * ld + hidden + h * dh + d]) : 0.0f;
            vs[r][d] = in ? to_f(base[kj * ld + 2 * hidden + h * dh + d]) : 0.0f;
        }
        for (int r = tid; r < KT; r += QB) {
            int kj = k0 + r;
            ms[r] = kj < seq && (!masked || mrow[kj] != 0);
        }
        __syncthreads();

        float s[KT];
        float tile_max = -INFINITY;
#pragma unroll
        for (int j = 0; j < KT; j++) {
            float dot = 0.0f;
#pragma unroll
            for (int d = 0; d < DH; d++) dot += qs[tid][d] * ks[j][d];
            s[j] = ms[j] ? scale * dot : -INFINITY;
            tile_max = fmaxf(tile_max, s[j]);
        }
        if (tile_max == -INFINITY) continue;  // nothing to attend to in this tile
        float new_max = fmaxf(run_max, tile_max);
        float corr = expf(run_max - new_max);  // 0 while run_max is -inf
        run_sum *= corr;
#pragma unroll
        for (int d = 0; d < DH; d++) acc[d] *= corr;
#pragma unroll
        for (int j = 0; j < KT; j++) {
            float p = expf(s[j] - new_max);  // 0 for masked keys
            run_sum += p;
#pragma unroll
            for (int d = 0; d < DH; d++) acc[d] += p * vs[j][d];
        }
        run_max = new_max;
    }

    int qi = q0 + tid;
    if (qi >= seq) return;
    float inv = 1.0f / run_sum;
    T* o = out + ((long long)b * seq + qi) * hidden + h * dh;
#pragma unroll
    for (int d = 0; d < DH; d++)
        if (d < dh) o[d] = from_f<T>(acc[d] * inv);
}

// Tile shapes keep the static shared memory under 48 KiB: about 33 KiB for
// DH 64 and 128, 17 KiB for DH 32. The Go side launches QB threads.
#define ATTENTION(S, T)                                                                                     \
    extern "C" __global__ void attention1_##S(T* out, const T* qkv, const int* mask, int batch, int seq,   \
                                              int hidden, int heads, float scale) {                        \
        attention1<T>(out, qkv, mask, batch, seq, hidden, heads, scale);                                   \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(64) attention2_dh32_##S(                                  \
        T* out, const T* qkv, const int* mask, int seq, int hidden, int heads, float scale) {              \
        attention2<T, 32, 64, 32>(out, qkv, mask, seq, hidden, heads, scale);                              \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(64) attention2_dh64_##S(                                  \
        T* out, const T* qkv, const int* mask, int seq, int hidden, int heads, float scale) {              \
        attention2<T, 64, 64, 32>(out, qkv, mask, seq, hidden, heads, scale);                              \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(32) attention2_dh128_##S(                                 \
        T* out, const T* qkv, const int* mask, int seq, int hidden, int heads, float scale) {              \
        attention2<T, 128, 32, 16>(out, qkv, mask, seq, hidden, heads, scale);                             \
    }
FOR_EACH_T(ATTENTION)
