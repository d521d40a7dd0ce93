package kernels

import (
	"math"
	"math/rand"
	"testing"
)

// bf16Nearest rounds f to bfloat16 the slow way: of the two bfloat16
// values around f, the nearer one, the even one on a tie; past the largest
// finite one, infinity is the next value up (2^128), as IEEE 754 rounds.
// It shares no arithmetic with f32ToBF16, which adds to the bits.
func bf16Nearest(f float32) uint16 {
	b := math.Float32bits(f)
	sign, mag := b&0x80000000, b&0x7fffffff
	if mag > 0x7f800000 {
		return uint16((b | 0x00400000) >> 16)
	}
	down := mag &^ 0xffff
	if down == mag {
		return uint16((sign | mag) >> 16)
	}
	up := down + 0x10000
	value := func(m uint32) float64 {
		if m == 0x7f800000 {
			return math.Ldexp(1, 128)
		}
		return float64(math.Float32frombits(m))
	}
	x := float64(math.Float32frombits(mag))
	dDown, dUp := x-value(down), value(up)-x // exact: float32s are float64s
	r := down
	if dUp < dDown || dUp == dDown && (down>>16)&1 == 1 {
		r = up
	}
	return uint16((sign | r) >> 16)
}

// TestF32ToBF16 checks the one float32 to bfloat16 rounding, which both
// F32ToBF16 and the BF16 GEMM packers use, on its edge cases (expected bits
// written out, as the two roundings it replaces both gave them) and
// against bf16Nearest on a sweep of every bfloat16 neighbourhood.
func TestF32ToBF16(t *testing.T) {
	for _, c := range []struct {
		name string
		in   uint32
		want uint16
	}{
		{"+0", 0x00000000, 0x0000},
		{"-0", 0x80000000, 0x8000},
		{"one", 0x3f800000, 0x3f80},
		{"below a tie", 0x3f807fff, 0x3f80},
		{"tie, even below", 0x3f808000, 0x3f80},
		{"above a tie", 0x3f808001, 0x3f81},
		{"tie, odd below", 0x3f818000, 0x3f82},
		{"negative tie, odd below", 0xbf818000, 0xbf82},
		{"carry into the exponent", 0x3fffffff, 0x4000},
		{"smallest subnormal", 0x00000001, 0x0000},
		{"subnormal tie, even below", 0x00008000, 0x0000},
		{"subnormal above a tie", 0x00008001, 0x0001},
		{"subnormal tie, odd below", 0x00018000, 0x0002},
		{"negative subnormal", 0x80008001, 0x8001},
		{"largest subnormal to smallest normal", 0x007fffff, 0x0080},
		{"largest finite bfloat16", 0x7f7f0000, 0x7f7f},
		{"just below the overflow tie", 0x7f7f7fff, 0x7f7f},
		{"overflow tie", 0x7f7f8000, 0x7f80},
		{"max float32", 0x7f7fffff, 0x7f80},
		{"-max float32", 0xff7fffff, 0xff80},
		{"+Inf", 0x7f800000, 0x7f80},
		{"-Inf", 0xff800000, 0xff80},
		{"quiet NaN", 0x7fc00000, 0x7fc0},
		{"NaN, payload in the dropped bits", 0x7f800001, 0x7fc0},
		{"NaN that rounding would carry into the sign", 0x7fffffff, 0x7fff},
		{"negative NaN", 0xffc00001, 0xffc0},
		{"negative signalling NaN", 0xff800001, 0xffc0},
	} {
		f := math.Float32frombits(c.in)
		if got := f32ToBF16(f); got != c.want {
			t.Errorf("%s: f32ToBF16(%#08x) = %#04x, want %#04x", c.name, c.in, got, c.want)
		}
		if got := bf16Nearest(f); got != c.want {
			t.Errorf("%s: bf16Nearest(%#08x) = %#04x, want %#04x (the reference is wrong)", c.name, c.in, got, c.want)
		}
	}

	// Every bfloat16 value, with the dropped half at the points where the
	// rounding changes its mind, then random bits.
	var in []float32
	for hi := uint32(0); hi < 1<<16; hi++ {
		for _, lo := range []uint32{0, 1, 0x7fff, 0x8000, 0x8001, 0xffff} {
			in = append(in, math.Float32frombits(hi<<16|lo))
		}
	}
	rng := rand.New(rand.NewSource(1))
	for range 1 << 16 {
		in = append(in, math.Float32frombits(rng.Uint32()))
	}
	got := make([]uint16, len(in))
	F32ToBF16(got, in)
	for i, f := range in {
		if want := bf16Nearest(f); got[i] != want {
			t.Fatalf("F32ToBF16(%#08x) = %#04x, want %#04x", math.Float32bits(f), got[i], want)
		}
		if s := f32ToBF16(f); s != got[i] {
			t.Fatalf("f32ToBF16(%#08x) = %#04x, F32ToBF16 gave %#04x", math.Float32bits(f), s, got[i])
		}
	}
}

// TestF16ToF32Table: the lookup gives, for every half, the bits of the
// branching conversion (NaN payloads included).
func TestF16ToF32Table(t *testing.T) {
	src := make([]uint16, 1<<16)
	for i := range src {
		src[i] = uint16(i)
	}
	dst := make([]float32, len(src))
	F16ToF32(dst, src)
	for i, h := range src {
		if math.Float32bits(dst[i]) != math.Float32bits(f16ToF32(h)) {
			t.Fatalf("half %#04x: %#08x, want %#08x", h, math.Float32bits(dst[i]), math.Float32bits(f16ToF32(h)))
		}
	}
	if dst[0x3c00] != 1 || dst[0xc000] != -2 || !math.IsInf(float64(dst[0x7c00]), 1) || dst[1] != 1.0/(1<<24) {
		t.Errorf("known halves: %v %v %v %v", dst[0x3c00], dst[0xc000], dst[0x7c00], dst[1])
	}
}
