package kernels

import (
	"math"
	"sync"
)

// F16ToF32 converts IEEE 754 half-precision bit patterns to float32,
// subnormals, infinities and NaNs included.
func F16ToF32(dst []float32, src []uint16) {
	f16Once.Do(func() {
		for h := range f16Table {
			f16Table[h] = f16ToF32(uint16(h))
		}
	})
	dst = dst[:len(src)]
	for i, h := range src {
		dst[i] = f16Table[h]
	}
}

// f16Table holds every half's float32: a 256 KB lookup that stays in L2
// instead of f16ToF32's branches for each value, which were most of the
// time an F16 model takes to load and answer once.
var (
	f16Table [1 << 16]float32
	f16Once  sync.Once
)

func f16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0:
		// Subnormal half: value = mant * 2^-24, exactly representable in float32.
		v := float32(mant) * (1.0 / (1 << 24))
		if sign != 0 {
			v = -v
		}
		return v
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// F32ToF16 converts float32 to half precision with round-to-nearest-even,
// overflowing to infinity as PyTorch's .half() does.
func F32ToF16(dst []uint16, src []float32) {
	for i, f := range src {
		dst[i] = f32ToF16(f)
	}
}

func f32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 {
			return sign
		}
		// Subnormal half: shift the implicit-one mantissa into place and round.
		m := mant | 0x800000
		shift := uint32(14 - e)
		half := m >> shift
		rem := m & (1<<shift - 1)
		mid := uint32(1) << (shift - 1)
		if rem > mid || (rem == mid && half&1 == 1) {
			half++
		}
		return sign | uint16(half)
	}
	half := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && half&1 == 1) {
		half++ // may carry into the exponent, which is the correct rounding
	}
	return sign | uint16(half)
}

// BF16ToF32 converts bfloat16 bit patterns to float32 (exact).
func BF16ToF32(dst []float32, src []uint16) {
	for i, h := range src {
		dst[i] = math.Float32frombits(uint32(h) << 16)
	}
}

// F32ToBF16 converts float32 to bfloat16 with round-to-nearest-even,
// keeping NaNs NaN.
func F32ToBF16(dst []uint16, src []float32) {
	for i, f := range src {
		dst[i] = f32ToBF16(f)
	}
}

// f32ToBF16 rounds f to bfloat16 (nearest even; infinity past the
// largest finite bfloat16). It is the package's only such rounding, so the
// BF16 GEMM's packers round as F32ToBF16 does, which is also the reference
// the CUDA conversion kernel and the BF16 tolerances are checked against.
func f32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		// Rounding would turn a NaN whose payload lies only in the
		// dropped bits into an infinity, and carry the largest payloads
		// into the sign bit: truncate and set the quiet bit instead.
		return uint16(b>>16) | 0x40
	}
	// Adding 0x7fff rounds up past the halfway point; the kept LSB adds the
	// one more that sends an exact tie up only when that makes it even.
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}
