package kernels

import (
	"fmt"
	"math"
	"math/rand"
	"testing"
)

// TestAttentionVersions checks the fast attention of every kernel version
// against AttentionRef on odd head sizes and sequence lengths, empty and
// one-token sequences, and lengths over one block of query rows.
func TestAttentionVersions(t *testing.T) {
	forVersions(t, func(t *testing.T, e *Engine) {
		rng := rand.New(rand.NewSource(4))
		rows := e.tune.attnRows
		for _, c := range []struct {
			hidden, heads int
			lengths       []int
		}{
			{4, 1, []int{1}},
			{12, 3, []int{3, 0, 17}},
			{64, 4, []int{65, 1, 129}},
			{48, 2, []int{rows, rows + 1}},
			{32, 2, []int{2*rows - 1, 5, 0}},
			{768, 12, []int{33, 128}},
			{15, 5, []int{9, 16, 1, 4}},
		} {
			name := fmt.Sprintf("hidden=%d heads=%d lengths=%v", c.hidden, c.heads, c.lengths)
			seqs := SeqOffsets(c.lengths...)
			n := int(seqs[len(seqs)-1])
			qkv := randSlice(rng, n*3*c.hidden)
			scale := float32(1 / math.Sqrt(float64(c.hidden/c.heads)))
			want := make([]float32, n*c.hidden)
			AttentionRef(want, qkv, seqs, c.hidden, c.heads, scale)
			got := make([]float32, n*c.hidden)
			e.Attention(got, qkv, seqs, c.hidden, c.heads, scale)
			if err := closeTo(got, want, 2e-6, 1e-5); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	})
}

// TestAttentionSoftmax checks the row softmax of every kernel version
// against the reference, on odd lengths and scores wide enough that the
// maximum matters.
func TestAttentionSoftmax(t *testing.T) {
	forVersions(t, func(t *testing.T, e *Engine) {
		rng := rand.New(rand.NewSource(5))
		for _, cols := range oddSizes {
			const rows = 12
			x := make([]float32, rows*cols)
			for i := range x {
				x[i] = 16 * (rng.Float32() - 0.5)
			}
			want := append([]float32(nil), x...)
			for r := 0; r < rows; r++ {
				softmaxRef(want[r*cols:(r+1)*cols], 0.7)
				softmaxRow(e.vec, x[r*cols:(r+1)*cols], 0.7)
			}
			if err := closeTo(x, want, 1e-7, 2e-6); err != nil {
				t.Errorf("cols=%d: %v", cols, err)
			}
		}
	})
}

func BenchmarkAttention(b *testing.B) {
	const hidden, heads = 768, 12
	for _, v := range Versions() {
		e := engine(b, Config{Version: v})
		for _, sh := range [][2]int{{8, 128}, {1, 384}} {
			bs, t := sh[0], sh[1]
			b.Run(fmt.Sprintf("%s/B=%d/T=%d", v, bs, t), func(b *testing.B) {
				rng := rand.New(rand.NewSource(1))
				lengths := make([]int, bs)
				for i := range lengths {
					lengths[i] = t
				}
				seqs := SeqOffsets(lengths...)
				qkv := randSlice(rng, bs*t*3*hidden)
				out := make([]float32, bs*t*hidden)
				scale := float32(1 / math.Sqrt(hidden/heads))
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					e.Attention(out, qkv, seqs, hidden, heads, scale)
				}
				b.ReportMetric(4*float64(bs*t*t*hidden)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// BenchmarkAttentionSoftmax is the row softmax alone, on a row as long as
// BERT's intermediate layer.
func BenchmarkAttentionSoftmax(b *testing.B) {
	x := make([]float32, 3072)
	for i := range x {
		x[i] = float32(i%200)/25 - 4
	}
	y := append([]float32(nil), x...)
	for _, v := range Versions() {
		e := engine(b, Config{Version: v})
		b.Run(v, func(b *testing.B) {
			b.SetBytes(int64(4 * len(x)))
			for b.Loop() {
				copy(y, x)
				softmaxRow(e.vec, y, 0.125)
			}
		})
	}
}
