package kernels

import (
	"math"
	"math/rand"
	"testing"
)

// bf16Edges is every bfloat16 neighbourhood at the points where rounding
// to it changes its mind: exact, just above, below, at and past the tie,
// and the top of the dropped bits, for every sign, exponent, NaN payload
// and subnormal.
func bf16Edges() []float32 {
	var in []float32
	for hi := uint32(0); hi < 1<<16; hi++ {
		for _, lo := range []uint32{0, 1, 0x7fff, 0x8000, 0x8001, 0xffff} {
			in = append(in, math.Float32frombits(hi<<16|lo))
		}
	}
	return in
}

// TestBF16Convert checks each BF16 version's conversion of activations,
// the vector code included, against f32ToBF16 bit for bit: every
// bfloat16 neighbourhood at the points where rounding changes its mind
// (ties, NaN payloads, subnormals, overflow), random bits, and lengths
// that leave a tail for the scalar code. It then checks the row layout the
// micro-kernels read, an odd row padded with a zero.
func TestBF16Convert(t *testing.T) {
	in := bf16Edges()
	rng := rand.New(rand.NewSource(5))
	for range 1<<16 + 7 {
		in = append(in, math.Float32frombits(rng.Uint32()))
	}
	for _, kern := range bf16Kernels() {
		t.Run(kern.name, func(t *testing.T) {
			for _, n := range []int{len(in), 15, 17, 33} {
				got := make([]uint16, n)
				kern.toBF16(got, in[:n])
				for i, f := range in[:n] {
					if want := f32ToBF16(f); got[i] != want {
						t.Fatalf("n=%d: value %d (%#08x) = %#04x, want %#04x", n, i, math.Float32bits(f), got[i], want)
					}
				}
			}
			for _, k := range []int{1, 2, 31, 33, 768} {
				const m = 5
				x := randSlice(rng, m*k)
				kw := (k + 1) / 2
				out := make([]float32, m*kw)
				for i := range out {
					out[i] = math.Float32frombits(0xdeadbeef) // to be overwritten, padding included
				}
				kern.convert(&rowTask{rows: m, out: out, x: x, cols: k}, 0, m)
				h := halves(out)
				for r := 0; r < m; r++ {
					for p := 0; p < 2*kw; p++ {
						want := uint16(0)
						if p < k {
							want = f32ToBF16(x[r*k+p])
						}
						if got := h[r*2*kw+p]; got != want {
							t.Fatalf("k=%d: row %d value %d = %#04x, want %#04x", k, r, p, got, want)
						}
					}
				}
			}
		})
	}
}

// TestBF16PairScaled checks each BF16 version's pair (two rows into one of
// pairs, the values of attention) and toBF16Scaled (a softmax's division
// and conversion in one) against f32ToBF16 bit for bit, on the inputs of
// TestBF16Convert, lengths that leave a tail for the scalar code, and a
// missing high row.
func TestBF16PairScaled(t *testing.T) {
	in := bf16Edges()
	rng := rand.New(rand.NewSource(9))
	rng.Shuffle(len(in), func(i, j int) { in[i], in[j] = in[j], in[i] })
	half := len(in) / 2
	for _, kern := range bf16Kernels() {
		t.Run(kern.name, func(t *testing.T) {
			for _, n := range []int{half, 15, 17, 33} {
				lo, hi := in[:n], in[half:half+n]
				got := make([]uint32, n)
				kern.pair(got, lo, hi)
				for j := range got {
					if want := uint32(f32ToBF16(lo[j])) | uint32(f32ToBF16(hi[j]))<<16; got[j] != want {
						t.Fatalf("n=%d: pair of %#x and %#x = %#x, want %#x", n, math.Float32bits(lo[j]), math.Float32bits(hi[j]), got[j], want)
					}
				}
				kern.pair(got, lo, nil)
				for j := range got {
					if want := uint32(f32ToBF16(lo[j])); got[j] != want {
						t.Fatalf("n=%d: %#x paired with nothing = %#x, want %#x", n, math.Float32bits(lo[j]), got[j], want)
					}
				}
				for _, s := range []float32{1, 1.0 / 3, 7.5e-3} {
					h := make([]uint16, n)
					kern.toBF16Scaled(h, lo, s)
					for j := range h {
						if want := f32ToBF16(lo[j] * s); h[j] != want {
							t.Fatalf("n=%d: %#x times %g = %#x, want %#x", n, math.Float32bits(lo[j]), s, h[j], want)
						}
					}
				}
			}
		})
	}
}
