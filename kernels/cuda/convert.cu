// Float conversions between F32, F16 and BF16, bit for bit as the CPU's
// kernels.F32ToF16 / F32ToBF16 / F16ToF32 / BF16ToF32 do: round to nearest
// even, overflow to infinity, NaN kept NaN with the CPU's quiet patterns.
#include "common.cuh"

__device__ __forceinline__ float load_any(const void* p, int dt, long long i) { return ldp(p, dt, i); }

__device__ __forceinline__ unsigned short f32_to_f16_bits(float f) {
    unsigned int b = __float_as_uint(f);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (unsigned short)(((b >> 16) & 0x8000u) | 0x7e00u);
    return __half_as_ushort(__float2half_rn(f));
}

__device__ __forceinline__ unsigned short f32_to_bf16_bits(float f) {
    unsigned int b = __float_as_uint(f);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((b >> 16) | 0x40u);
    b += 0x7fffu + ((b >> 16) & 1u);
    return (unsigned short)(b >> 16);
}

extern "C" __global__ void convert(void* dst, int ddt, const void* src, int sdt, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float v = load_any(src, sdt, i);
        switch (ddt) {
        case DT_F16:
            ((unsigned short*)dst)[i] = f32_to_f16_bits(v);
            break;
        case DT_BF16:
            ((unsigned short*)dst)[i] = f32_to_bf16_bits(v);
            break;
        default:
            ((float*)dst)[i] = v;
        }
    }
}
