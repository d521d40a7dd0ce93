// The emulation's __half: IEEE half precision, converted as the hardware
// converts (round to nearest even, overflow to infinity).
#pragma once
#include <cstdint>
#include <cstring>

struct __half {
    uint16_t x;
};

inline float __half2float(__half h) {
    uint32_t sign = uint32_t(h.x >> 15) << 31, exp = (h.x >> 10) & 0x1f, mant = h.x & 0x3ff, bits;
    if (exp == 0) {
        float v = float(mant) / float(1 << 24);
        return sign ? -v : v;
    }
    if (exp == 0x1f)
        bits = sign | 0x7f800000u | mant << 13;
    else
        bits = sign | (exp + 127 - 15) << 23 | mant << 13;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

inline __half __float2half_rn(float f) {
    uint32_t b;
    std::memcpy(&b, &f, 4);
    uint16_t sign = (b >> 16) & 0x8000;
    int32_t exp = (b >> 23) & 0xff;
    uint32_t mant = b & 0x7fffff;
    if (exp == 0xff) return {uint16_t(sign | (mant ? 0x7e00 : 0x7c00))};
    int32_t e = exp - 127 + 15;
    if (e >= 0x1f) return {uint16_t(sign | 0x7c00)};
    if (e <= 0) {
        if (e < -10) return {sign};
        uint32_t m = mant | 0x800000, shift = uint32_t(14 - e), half = m >> shift, rem = m & ((1u << shift) - 1),
                 mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return {uint16_t(sign | half)};
    }
    uint32_t half = uint32_t(e) << 10 | mant >> 13, rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
    return {uint16_t(sign | half)};
}

inline unsigned short __half_as_ushort(__half h) { return h.x; }
inline __half __ushort_as_half(unsigned short u) { return {u}; }
