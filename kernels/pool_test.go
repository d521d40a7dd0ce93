package kernels

import (
	"math/rand"
	"testing"
)

// TestPoolRef checks the reference by hand on two tokens of two values, a
// one-token sequence and an empty one; the engine's Pool is the same code.
func TestPoolRef(t *testing.T) {
	x := []float32{1, -4, 3, 2, 5, 6}
	seqs := SeqOffsets(2, 0, 1)
	for _, c := range []struct {
		p    Pooling
		want []float32
	}{
		{PoolCLS, []float32{1, -4, 0, 0, 5, 6}},
		{PoolMean, []float32{2, -1, 0, 0, 5, 6}},
		{PoolMax, []float32{3, 2, 0, 0, 5, 6}},
	} {
		got := []float32{9, 9, 9, 9, 9, 9}
		Default().Pool(got, x, seqs, 2, c.p)
		if err := closeTo(got, c.want, 0, 0); err != nil {
			t.Errorf("%s: %v", c.p, err)
		}
	}
}

// BenchmarkPool is mean pooling of 8 sequences of 128 tokens of BERT-base.
func BenchmarkPool(b *testing.B) {
	const hidden = 768
	rng := rand.New(rand.NewSource(1))
	seqs := SeqOffsets(128, 128, 128, 128, 128, 128, 128, 128)
	x, out := randSlice(rng, 8*128*hidden), make([]float32, 8*hidden)
	e := Default()
	b.SetBytes(4 * 8 * 128 * hidden)
	for b.Loop() {
		e.Pool(out, x, seqs, hidden, PoolMean)
	}
}
