// A CPU emulation of the part of CUDA that bertstream's kernels use, so
// that their logic (indexing, tiling, barriers, warp shuffles, the online
// softmax, WMMA tiles) can be checked where there is no GPU. Each thread
// of a block is an OS thread; blocks run one after another, so __shared__
// arrays become function statics; __syncthreads and the warp operations
// are barriers. WMMA fragments hold whole tiles in every lane, which is a
// legal layout for the opaque fragment API. It says nothing about speed,
// and the device's own arithmetic (rounding of its transcendentals) is
// the host's here.
//
// Force-included (-include emu.h) before the kernel sources.
#pragma once
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

using std::max;
using std::min;

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
struct uint4 {
    unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }

namespace emu {
struct Warp {
    std::barrier<>* bar;
    uint64_t slot[32];
};
struct Block {
    std::barrier<>* bar;
    std::vector<Warp>* warps;
    char* dynamic;
};
extern thread_local dim3 tl_thread, tl_block;
extern thread_local Block* tl_current;
extern dim3 grid_dim, block_dim;

inline Warp& warp() { return (*tl_current->warps)[tl_thread.x / 32]; }
inline unsigned lane() { return tl_thread.x % 32; }

// exchange publishes v for the warp and returns what lane src published.
template <typename T>
T exchange(T v, unsigned src) {
    Warp& w = warp();
    uint64_t mine = 0;
    std::memcpy(&mine, &v, sizeof(T));
    w.slot[lane()] = mine;
    w.bar->arrive_and_wait();
    uint64_t got = w.slot[src % 32];
    w.bar->arrive_and_wait();  // nobody overwrites a slot still being read
    T out;
    std::memcpy(&out, &got, sizeof(T));
    return out;
}
}  // namespace emu

#define threadIdx emu::tl_thread
#define blockIdx emu::tl_block
#define blockDim emu::block_dim
#define gridDim emu::grid_dim
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(n)
#define DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(emu::tl_current->dynamic)

inline void __syncthreads() { emu::tl_current->bar->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp().bar->arrive_and_wait(); }
template <typename T>
T __shfl_sync(unsigned, T v, int src) { return emu::exchange(v, (unsigned)src); }
template <typename T>
T __shfl_xor_sync(unsigned, T v, int mask) { return emu::exchange(v, emu::lane() ^ (unsigned)mask); }
inline int __any_sync(unsigned, int p) {
    int any = 0;
    for (unsigned l = 0; l < 32; l++) any |= emu::exchange(p != 0, l);
    return any;
}

inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
