// Fused multi-head self-attention over packed sequences, with
// kernels.AttentionRef's semantics: qkv [n, 3*hidden] holds the query, key
// and value projections of n real tokens (heads of dh = hidden/heads
// values each), seqs [nseq+1] the offsets of the sequences among them;
// every token attends within its own sequence, and out [n, hidden] gets
// softmax(scale * q k^T) v per head. No score matrix is written to memory.
#include <mma.h>

#include "common.cuh"

// Version 1: one thread per output element, three passes over the keys
// (max, sum, weighted values), every score recomputed. Slow; the plain
// version the others are checked against on the device.
template <typename T>
__device__ void attention1(T* out, const T* qkv, const int* seqs, int nseq, int n, int hidden, int heads,
                           float scale) {
    long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e >= (long long)n * hidden) return;
    int i = (int)(e / hidden), c = (int)(e % hidden);
    int dh = hidden / heads, h = c / dh, d = c % dh;
    int lo = 0, hi = nseq;  // the sequence holding token i: seqs[b] <= i < seqs[b+1]
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (seqs[mid] <= i) lo = mid; else hi = mid;
    }
    int s0 = seqs[lo], s1 = seqs[lo + 1];
    long long ld = 3LL * hidden;
    const T* q = qkv + i * ld + h * dh;
    float mx = -INFINITY;
    for (int j = s0; j < s1; j++) {
        const T* k = qkv + j * ld + hidden + h * dh;
        float s = 0.0f;
        for (int t = 0; t < dh; t++) s += to_f(q[t]) * to_f(k[t]);
        mx = fmaxf(mx, scale * s);
    }
    float sum = 0.0f, acc = 0.0f;
    for (int j = s0; j < s1; j++) {
        const T* k = qkv + j * ld + hidden + h * dh;
        float s = 0.0f;
        for (int t = 0; t < dh; t++) s += to_f(q[t]) * to_f(k[t]);
        float p = expf(scale * s - mx);
        sum += p;
        acc += p * to_f(qkv[j * ld + 2 * hidden + h * dh + d]);
    }
    out[e] = from_f<T>(acc / sum);
}

// Version 2, for any element type and head size up to V2_MAXD: a block per
// (tile of V2_ROWS queries, head, sequence), a warp per query. Keys and
// values pass through shared memory (as float) in tiles of 32; lane j
// scores key j of the tile, the warp keeps a running max and sum and
// rescales its output (the online softmax), and lane l owns output
// dimensions l, l+32, ... So the score matrix never exists.
#define V2_ROWS 16
#define V2_MAXD 128

template <typename T>
__device__ void attention2(T* out, const T* qkv, const int* seqs, int hidden, int heads, float scale) {
    DYNAMIC_SHARED(float, sh2);
    const int dh = hidden / heads;
    const int b = blockIdx.z, h = blockIdx.y;
    const int lo = seqs[b], n = seqs[b + 1] - lo;
    const int q0 = blockIdx.x * V2_ROWS;
    if (q0 >= n) return;  // uniform over the block
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const long long ld = 3LL * hidden;
    // An odd row stride puts the keys that the 32 lanes read at once in 32
    // different banks.
    const int kst = dh | 1;
    float* ks = sh2;            // [32][kst]
    float* vs = ks + 32 * kst;  // [32][dh]
    float* qs = vs + 32 * dh;   // [V2_ROWS][dh]
    const T* base = qkv + (long long)lo * ld + h * dh;
    const int qi = q0 + warp;  // past the end, the warp still helps to load
    for (int d = lane; d < dh; d += 32) qs[warp * dh + d] = qi < n ? to_f(base[qi * ld + d]) : 0.0f;

    float acc[V2_MAXD / 32];
#pragma unroll
    for (int i = 0; i < V2_MAXD / 32; i++) acc[i] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (int k0 = 0; k0 < n; k0 += 32) {
        __syncthreads();  // the previous tile is consumed; qs is written
        for (int e = threadIdx.x; e < 32 * dh; e += blockDim.x) {
            int r = e / dh, d = e % dh, kj = k0 + r;
            bool in = kj < n;
            ks[r * kst + d] = in ? to_f(base[kj * ld + hidden + d]) : 0.0f;
            vs[r * dh + d] = in ? to_f(base[kj * ld + 2 * hidden + d]) : 0.0f;
        }
        __syncthreads();
        float s = -INFINITY;
        if (k0 + lane < n) {
            const float* q = qs + warp * dh;
            const float* k = ks + lane * kst;
            float dot = 0.0f;
            for (int d = 0; d < dh; d++) dot += q[d] * k[d];
            s = scale * dot;
        }
        float nm = fmaxf(m, warp_max(s));  // finite: key k0 is real
        float corr = expf(m - nm);         // 0 while m is -inf
        float p = expf(s - nm);            // 0 past the end
        l = l * corr + warp_sum(p);
#pragma unroll
        for (int i = 0; i < V2_MAXD / 32; i++) acc[i] *= corr;
        int kn = min(32, n - k0);
        for (int j = 0; j < kn; j++) {
            float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
            for (int i = 0; i < V2_MAXD / 32; i++) {
                int d = lane + 32 * i;
                if (d < dh) acc[i] += pj * vs[j * dh + d];
            }
        }
        m = nm;
    }
    if (qi >= n) return;
    float inv = 1.0f / l;
    T* o = out + (long long)(lo + qi) * hidden + h * dh;
#pragma unroll
    for (int i = 0; i < V2_MAXD / 32; i++) {
        int d = lane + 32 * i;
        if (d < dh) o[d] = from_f<T>(acc[i] * inv);
    }
}

// Version 3, F16 and BF16 on tensor cores (WMMA, sm_80+) for head sizes
// DH of 32 and 64: a block of 4 warps per (tile of 64 queries, head,
// sequence), each warp 16 queries. Two passes over tiles of 32 keys: the
// first computes q k^T and keeps each row's max and sum, the second
// recomputes q k^T, turns it into probabilities (already normalised, so
// that the accumulators never need rescaling) and multiplies them by the
// values into float accumulators. Recomputing q k^T costs a sixth of the
// tensor-core work of a short sequence and saves the per-row rescaling
// that WMMA's opaque fragment layout would make go through shared memory.
#define V3_ROWS 64
#define V3_KEYS 32
// Row strides of the score (float) and probability (16-bit) tiles, padded
// past 32 banks so that the lanes reading down a column of rows hit
// different banks (at most two to a bank).
#define V3_SLD (V3_KEYS + 4)
#define V3_PLD (V3_KEYS + 8)

template <typename T, int DH>
__device__ __forceinline__ void scores3(float* ss, const T* qs, const T* ks) {
    using namespace nvcuda;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> qa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> kb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> sc;
#pragma unroll
    for (int j0 = 0; j0 < V3_KEYS; j0 += 16) {
        wmma::fill_fragment(sc, 0.0f);
#pragma unroll
        for (int kk = 0; kk < DH; kk += 16) {
            wmma::load_matrix_sync(qa, qs + kk, DH);
            // k^T as a column-major matrix: element (d, j) is ks[j*DH + d].
            wmma::load_matrix_sync(kb, ks + j0 * DH + kk, DH);
            wmma::mma_sync(sc, qa, kb, sc);
        }
        wmma::store_matrix_sync(ss + j0, sc, V3_SLD, wmma::mem_row_major);
    }
}

template <typename T, int DH>
__device__ __forceinline__ void load_tile3(T* dst, const T* src, long long ld, int rows, int valid) {
    // 16-byte vectors: DH, 3*hidden and the head offset are multiples of 8
    // elements and allocations are 256-byte aligned.
    constexpr int VECS = DH / 8;
    for (int e = threadIdx.x; e < rows * VECS; e += blockDim.x) {
        int r = e / VECS, c = (e % VECS) * 8;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (r < valid) v = *reinterpret_cast<const uint4*>(src + r * ld + c);
        *reinterpret_cast<uint4*>(dst + r * DH + c) = v;
    }
}

template <typename T, int DH>
__device__ void attention3(T* out, const T* qkv, const int* seqs, int hidden, int heads, float scale) {
    using namespace nvcuda;
    __shared__ __align__(32) T qs[V3_ROWS * DH];
    __shared__ __align__(32) T ks[V3_KEYS * DH];
    __shared__ __align__(32) T vs[V3_KEYS * DH];
    __shared__ __align__(32) float ss[4][16 * (V3_SLD > DH ? V3_SLD : DH)];  // scores, then the output
    __shared__ __align__(32) T ps[4][16 * V3_PLD];
    const int b = blockIdx.z, h = blockIdx.y;
    const int lo = seqs[b], n = seqs[b + 1] - lo;
    const int q0 = blockIdx.x * V3_ROWS;
    if (q0 >= n) return;  // uniform over the block
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const long long ld = 3LL * hidden;
    const T* base = qkv + (long long)lo * ld + h * DH;
    load_tile3<T, DH>(qs, base + q0 * ld, ld, V3_ROWS, n - q0);

    // Lanes 2r and 2r+1 hold row r of the warp's 16: keys 0-15 and 16-31
    // of each tile.
    const int r = lane >> 1, half = lane & 1;
    float* sw = ss[warp];
    const T* qw = qs + warp * 16 * DH;
    float m = -INFINITY, l = 0.0f;
    for (int k0 = 0; k0 < n; k0 += V3_KEYS) {
        __syncthreads();  // ks is free (and qs written)
        load_tile3<T, DH>(ks, base + k0 * ld + hidden, ld, V3_KEYS, n - k0);
        __syncthreads();
        scores3<T, DH>(sw, qw, ks);
        __syncwarp();
        float cm = -INFINITY;
        for (int c = 0; c < 16; c++) {
            int j = half * 16 + c;
            if (k0 + j < n) cm = fmaxf(cm, scale * sw[r * V3_SLD + j]);
        }
        float nm = fmaxf(m, fmaxf(cm, __shfl_xor_sync(0xffffffffu, cm, 1)));
        float sum = 0.0f;
        for (int c = 0; c < 16; c++) {
            int j = half * 16 + c;
            if (k0 + j < n) sum += expf(scale * sw[r * V3_SLD + j] - nm);
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        l = l * expf(m - nm) + sum;
        m = nm;
        __syncwarp();  // sw is read before the next tile overwrites it
    }

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> o[DH / 16];
#pragma unroll
    for (int i = 0; i < DH / 16; i++) wmma::fill_fragment(o[i], 0.0f);
    wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> pa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> vb;
    const float inv = 1.0f / l;
    T* pw = ps[warp];
    for (int k0 = 0; k0 < n; k0 += V3_KEYS) {
        __syncthreads();
        load_tile3<T, DH>(ks, base + k0 * ld + hidden, ld, V3_KEYS, n - k0);
        load_tile3<T, DH>(vs, base + k0 * ld + 2 * hidden, ld, V3_KEYS, n - k0);
        __syncthreads();
        scores3<T, DH>(sw, qw, ks);
        __syncwarp();
        for (int c = 0; c < 16; c++) {
            int j = half * 16 + c;
            float p = k0 + j < n ? expf(scale * sw[r * V3_SLD + j] - m) * inv : 0.0f;
            pw[r * V3_PLD + j] = from_f<T>(p);
        }
        __syncwarp();
#pragma unroll
        for (int kk = 0; kk < V3_KEYS; kk += 16) {
            wmma::load_matrix_sync(pa, pw + kk, V3_PLD);
#pragma unroll
            for (int i = 0; i < DH / 16; i++) {
                wmma::load_matrix_sync(vb, vs + kk * DH + i * 16, DH);
                wmma::mma_sync(o[i], pa, vb, o[i]);
            }
        }
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < DH / 16; i++) wmma::store_matrix_sync(sw + i * 16, o[i], DH, wmma::mem_row_major);
    __syncwarp();
    for (int e = lane; e < 16 * DH; e += 32) {
        int rr = e / DH, d = e % DH, qi = q0 + warp * 16 + rr;
        if (qi < n) out[(long long)(lo + qi) * hidden + h * DH + d] = from_f<T>(sw[e]);
    }
}

#define ATTENTION(S, T)                                                                                       \
    extern "C" __global__ void attention1_##S(T* out, const T* qkv, const int* seqs, int nseq, int n,        \
                                              int hidden, int heads, float scale) {                          \
        attention1<T>(out, qkv, seqs, nseq, n, hidden, heads, scale);                                        \
    }                                                                                                        \
    extern "C" __global__ void __launch_bounds__(V2_ROWS * 32)                                               \
        attention2_##S(T* out, const T* qkv, const int* seqs, int hidden, int heads, float scale) {          \
        attention2<T>(out, qkv, seqs, hidden, heads, scale);                                                 \
    }
FOR_EACH_T(ATTENTION)

#define ATTENTION3(S, T, DH)                                                                                  \
    extern "C" __global__ void __launch_bounds__(128)                                                        \
        attention3_d##DH##_##S(T* out, const T* qkv, const int* seqs, int hidden, int heads, float scale) {  \
        attention3<T, DH>(out, qkv, seqs, hidden, heads, scale);                                             \
    }
ATTENTION3(f16, __half, 32)
ATTENTION3(f16, __half, 64)
ATTENTION3(bf16, __nv_bfloat16, 32)
ATTENTION3(bf16, __nv_bfloat16, 64)
