//go:build cuda && cgo

// The kernels of kernels/gpu compiled for the host (emu.h and include/
// stand in for CUDA), and emu_launch, which runs one of them by name over
// a grid the way cuLaunchKernel would.
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "../../attention.cu"
#include "../../convert.cu"
#include "../../embed.cu"
#include "../../gather.cu"
#include "../../gelu.cu"
#include "../../layernorm.cu"
#include "../../pool.cu"
#include "../../scatter.cu"

namespace emu {
thread_local dim3 tl_thread, tl_block;
thread_local Block* tl_current;
dim3 grid_dim, block_dim;

// call passes params (8-byte slots, as the Go side fills them for the
// driver) to kernel k, each slot read as its parameter's type.
template <typename... A, size_t... I>
void call(void (*k)(A...), const uint64_t* params, std::index_sequence<I...>) {
    k(*reinterpret_cast<const A*>(&params[I])...);
}

template <typename... A>
constexpr int arity(void (*)(A...)) {
    return sizeof...(A);
}

template <auto K>
void invoke(const uint64_t* params) {
    call(K, params, std::make_index_sequence<arity(K)>{});
}
}  // namespace emu

#define K(name) {#name, {emu::arity(name), &emu::invoke<name>}}
#define K3(name) K(name##_f32), K(name##_f16), K(name##_bf16)

static const std::map<std::string, std::pair<int, void (*)(const uint64_t*)>>& kernels() {
    static const std::map<std::string, std::pair<int, void (*)(const uint64_t*)>> table = {
        K3(attention1), K3(attention2), K(attention3_d32_f16), K(attention3_d64_f16), K(attention3_d32_bf16),
        K(attention3_d64_bf16), K(convert_f32_to_f16), K(convert_f32_to_bf16), K(convert_f16_to_f32),
        K(convert_bf16_to_f32), K3(embed1), K3(embed2), K(gather_w16), K(gather_w4), K(gather_w2), K3(gelu),
        K3(bias_gelu), K3(layernorm1), K3(layernorm2), K3(pool), K(scatter_w16), K(scatter_w4), K(scatter_w2),
    };
    return table;
}

// emu_has reports whether kernel name is compiled in.
extern "C" int emu_has(const char* name) { return kernels().count(name) != 0; }

// emu_launch runs kernel name over grid (gx, gy, gz) of blocks of block
// threads with shared bytes of dynamic shared memory. It returns 0, or -1
// for an unknown kernel, -2 for a wrong number of arguments, -3 for a
// block that is not whole warps.
extern "C" int emu_launch(const char* name, int gx, int gy, int gz, int block, int shared, const uint64_t* params,
                          int nparams) {
    auto it = kernels().find(name);
    if (it == kernels().end()) return -1;
    if (it->second.first != nparams) return -2;
    if (block <= 0 || block % 32 != 0) return -3;
    auto run = it->second.second;
    emu::grid_dim = dim3{unsigned(gx), unsigned(gy), unsigned(gz)};
    emu::block_dim = dim3{unsigned(block), 1, 1};
    std::vector<char> dynamic(shared + 16);
    // One OS thread per thread of a block, reused for every block: blocks
    // run one after another, each with fresh barriers (a thread that
    // returns early leaves its block's barriers, as on the device).
    std::barrier<> step(block);
    std::unique_ptr<std::barrier<>> bar;
    std::vector<std::unique_ptr<std::barrier<>>> warpBars;
    std::vector<emu::Warp> warps(block / 32);
    emu::Block b{nullptr, &warps, dynamic.data()};
    std::vector<std::thread> threads;
    threads.reserve(block);
    for (int t = 0; t < block; t++)
        threads.emplace_back([&, t] {
            for (int z = 0; z < gz; z++)
                for (int y = 0; y < gy; y++)
                    for (int x = 0; x < gx; x++) {
                        if (t == 0) {
                            bar = std::make_unique<std::barrier<>>(block);
                            b.bar = bar.get();
                            warpBars.clear();
                            for (int w = 0; w < block / 32; w++) {
                                warpBars.push_back(std::make_unique<std::barrier<>>(32));
                                warps[w].bar = warpBars[w].get();
                            }
                        }
                        step.arrive_and_wait();
                        emu::tl_thread = dim3{unsigned(t), 0, 0};
                        emu::tl_block = dim3{unsigned(x), unsigned(y), unsigned(z)};
                        emu::tl_current = &b;
                        run(params);
                        b.bar->arrive_and_drop();
                        warps[t / 32].bar->arrive_and_drop();
                        step.arrive_and_wait();
                    }
        });
    for (auto& th : threads) th.join();
    return 0;
}
