// The emulation's bfloat16: the top half of a float, rounded to nearest
// even.
#pragma once
#include <cstdint>
#include <cstring>

struct __nv_bfloat16 {
    uint16_t x;
};

inline float __bfloat162float(__nv_bfloat16 h) {
    uint32_t b = uint32_t(h.x) << 16;
    float f;
    std::memcpy(&f, &b, 4);
    return f;
}

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t b;
    std::memcpy(&b, &f, 4);
    if ((b & 0x7fffffffu) > 0x7f800000u) return {0x7fff};
    b += 0x7fffu + ((b >> 16) & 1u);
    return {uint16_t(b >> 16)};
}
