// Float conversions between F32 and F16/BF16, bit for bit as the CPU's
// kernels.F32ToF16, F32ToBF16, F16ToF32 and BF16ToF32 do them: round to
// nearest even, overflow to infinity, NaN kept NaN with the CPU's quiet
// patterns (the hardware conversions would canonicalise the payload).
#include "common.cuh"

extern "C" __global__ void convert_f32_to_f16(unsigned short* dst, const float* src, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        unsigned int b = __float_as_uint(src[i]);
        if ((b & 0x7fffffffu) > 0x7f800000u)
            dst[i] = (unsigned short)(((b >> 16) & 0x8000u) | 0x7e00u);
        else
            dst[i] = __half_as_ushort(__float2half_rn(src[i]));
    }
}

extern "C" __global__ void convert_f32_to_bf16(unsigned short* dst, const float* src, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        unsigned int b = __float_as_uint(src[i]);
        if ((b & 0x7fffffffu) > 0x7f800000u) {
            dst[i] = (unsigned short)((b >> 16) | 0x40u);
            continue;
        }
        b += 0x7fffu + ((b >> 16) & 1u);
        dst[i] = (unsigned short)(b >> 16);
    }
}

extern "C" __global__ void convert_f16_to_f32(float* dst, const unsigned short* src, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        unsigned int h = src[i];
        if ((h & 0x7c00u) == 0x7c00u)  // infinities and NaNs, payload kept
            dst[i] = __uint_as_float(((h >> 15) << 31) | 0x7f800000u | ((h & 0x3ffu) << 13));
        else
            dst[i] = __half2float(__ushort_as_half((unsigned short)h));  // exact, subnormals included
    }
}

extern "C" __global__ void convert_bf16_to_f32(float* dst, const unsigned short* src, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        dst[i] = __uint_as_float((unsigned int)src[i] << 16);
}
