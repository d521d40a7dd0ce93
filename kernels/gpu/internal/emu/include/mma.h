// The emulation's WMMA: every lane holds the whole tile (the fragment
// layout is opaque to kernels, so this one is as legal as the hardware's),
// products are exact in float as the tensor cores' are for F16/BF16
// inputs, and lane 0 alone writes a stored tile.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

inline float widen(float v) { return v; }
inline float widen(__half v) { return __half2float(v); }
inline float widen(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
    float v[16 * 16];  // row-major M x K (a), K x N (b) or M x N (accumulator)
};

template <typename F>
void fill_fragment(F& f, float x) {
    for (float& e : f.v) e = x;
}

template <typename T>
void load_matrix_sync(fragment<matrix_a, 16, 16, 16, T, row_major>& f, const T* p, unsigned ldm) {
    for (int i = 0; i < 16; i++)
        for (int k = 0; k < 16; k++) f.v[i * 16 + k] = widen(p[i * ldm + k]);
}
template <typename T>
void load_matrix_sync(fragment<matrix_b, 16, 16, 16, T, row_major>& f, const T* p, unsigned ldm) {
    for (int k = 0; k < 16; k++)
        for (int n = 0; n < 16; n++) f.v[k * 16 + n] = widen(p[k * ldm + n]);
}
template <typename T>
void load_matrix_sync(fragment<matrix_b, 16, 16, 16, T, col_major>& f, const T* p, unsigned ldm) {
    for (int k = 0; k < 16; k++)
        for (int n = 0; n < 16; n++) f.v[k * 16 + n] = widen(p[n * ldm + k]);
}

template <typename A, typename B>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const A& a, const B& b,
              const fragment<accumulator, 16, 16, 16, float>& c) {
    float out[256];
    for (int i = 0; i < 16; i++)
        for (int n = 0; n < 16; n++) {
            float s = c.v[i * 16 + n];
            for (int k = 0; k < 16; k++) s += a.v[i * 16 + k] * b.v[k * 16 + n];
            out[i * 16 + n] = s;
        }
    for (int e = 0; e < 256; e++) d.v[e] = out[e];
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm, layout_t) {
    if (emu::lane() == 0)
        for (int i = 0; i < 16; i++)
            for (int n = 0; n < 16; n++) p[i * ldm + n] = f.v[i * 16 + n];
    __syncwarp();
}
}  // namespace wmma
}  // namespace nvcuda
