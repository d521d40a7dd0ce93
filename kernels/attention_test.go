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
			name, seqs, qkv, scale, want, got := attentionCase(rng, c.hidden, c.heads, c.lengths)
			AttentionRef(want, qkv, seqs, c.hidden, c.heads, scale)
			e.Attention(got, qkv, seqs, c.hidden, c.heads, scale)
			if err := closeTo(got, want, 2e-6, 1e-5); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	})
}

// attentionCase is one case of an attention test: its name, the sequence
// offsets of lengths, random projections, the usual scale and room for the
// expected and computed outputs.
func attentionCase(rng *rand.Rand, hidden, heads int, lengths []int) (name string, seqs []int32, qkv []float32, scale float32, want, got []float32) {
	seqs = SeqOffsets(lengths...)
	n := int(seqs[len(seqs)-1])
	return fmt.Sprintf("hidden=%d heads=%d lengths=%v", hidden, heads, lengths), seqs, randSlice(rng, n*3*hidden),
		float32(1 / math.Sqrt(float64(hidden/heads))), make([]float32, n*hidden), make([]float32, n*hidden)
}

// attentionBF16Ref is AttentionRef on queries, keys and values rounded to
// BF16, its probabilities rounded to BF16 before they weigh the values: the
// products AttentionBF16 computes, summed in float64. Sequences shorter
// than shortest tokens are AttentionRef's.
func attentionBF16Ref(out, qkv []float32, seqs []int32, hidden, heads int, scale float32, shortest int) {
	AttentionRef(out, qkv, seqs, hidden, heads, scale)
	q := roundBF16(qkv)
	dh, ld := hidden/heads, 3*hidden
	for b := 0; b+1 < len(seqs); b++ {
		lo, hi := int(seqs[b]), int(seqs[b+1])
		n := hi - lo
		if n < shortest {
			continue
		}
		scores := make([]float32, n)
		for h := 0; h < heads; h++ {
			for i := 0; i < n; i++ {
				qi := q[(lo+i)*ld+h*dh : (lo+i)*ld+h*dh+dh]
				for j := 0; j < n; j++ {
					k := q[(lo+j)*ld+hidden+h*dh : (lo+j)*ld+hidden+h*dh+dh]
					var s float64
					for d := range qi {
						s += float64(qi[d]) * float64(k[d])
					}
					scores[j] = float32(s)
				}
				softmaxRef(scores, scale)
				p := roundBF16(scores)
				o := out[(lo+i)*hidden+h*dh : (lo+i)*hidden+h*dh+dh]
				for d := range o {
					var s float64
					for j := 0; j < n; j++ {
						s += float64(p[j]) * float64(q[(lo+j)*ld+2*hidden+h*dh+d])
					}
					o[d] = float32(s)
				}
			}
		}
	}
}

// TestAttentionBF16 checks AttentionBF16 of every BF16 kernel, on 1 and 2
// goroutines, against attentionBF16Ref on odd head sizes and lengths, each
// case with sequences on both sides of BF16AttentionMin(): the products are
// exact on the rounded values, so what is left is float32 summation and
// the rare probability that the float32 softmax puts on the other side of
// a BF16 rounding boundary (a change of at most 2^-8 of that probability's
// share of the output; 3e-5 at most here). It must also be much closer to
// that reference than to F32 attention (3-4e-4 away), or it is not
// rounding what AttentionBF16 says it rounds; and the short sequences
// must be F32 attention's. One sequence is long enough for several k
// slices of the probabilities' product.
func TestAttentionBF16(t *testing.T) {
	for _, v := range BF16Versions() {
		for _, threads := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s/threads=%d", v, threads), func(t *testing.T) {
				e := engine(t, Config{BF16Version: v, Threads: threads})
				rng := rand.New(rand.NewSource(6))
				long := e.BF16AttentionMin()
				for _, c := range []struct {
					hidden, heads int
					lengths       []int
				}{
					{4, 1, []int{long, 1}},
					{12, 3, []int{3, 0, long + 17}},
					{64, 4, []int{long - 1, long + 1}},
					{48, 2, []int{2*long + 1, long}},
					{768, 12, []int{33, 2 * long}},
					{15, 5, []int{9, long + 16, 1}},
					{70, 2, []int{long + 31, 2}},
					{4, 1, []int{1101}},
				} {
					name, seqs, qkv, scale, want, got := attentionCase(rng, c.hidden, c.heads, c.lengths)
					attentionBF16Ref(want, qkv, seqs, c.hidden, c.heads, scale, long)
					e.AttentionBF16(got, qkv, seqs, c.hidden, c.heads, scale)
					if err := closeTo(got, want, 1e-4, 1e-5); err != nil {
						t.Errorf("%s: %v", name, err)
					}
					for b := 0; b+1 < len(seqs); b++ {
						if lo, hi := int(seqs[b])*c.hidden, int(seqs[b+1])*c.hidden; hi-lo < long*c.hidden {
							if err := closeTo(got[lo:hi], want[lo:hi], 2e-6, 1e-5); err != nil {
								t.Errorf("%s: sequence %d, shorter than %d tokens: %v", name, b, long, err)
							}
						}
					}
					exact := make([]float32, len(want))
					AttentionRef(exact, qkv, seqs, c.hidden, c.heads, scale)
					var worst float64
					for i := range exact {
						worst = max(worst, math.Abs(float64(got[i]-exact[i])))
					}
					var ref float64
					for i := range want {
						ref = max(ref, math.Abs(float64(got[i]-want[i])))
					}
					t.Logf("%s: at most %.2g from the reference, %.2g from F32 attention", name, ref, worst)
					if 4*ref > worst {
						t.Errorf("%s: %.2g from the BF16 reference, no closer than to F32 attention (%.2g)", name, ref, worst)
					}
				}
			})
		}
	}
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
	type run struct {
		name string
		f    func(e *Engine) func(out, qkv []float32, seqs []int32, hidden, heads int, scale float32)
		e    *Engine
	}
	var runs []run
	for _, v := range Versions() {
		runs = append(runs, run{v, func(e *Engine) func([]float32, []float32, []int32, int, int, float32) { return e.Attention }, engine(b, Config{Version: v})})
	}
	for _, v := range BF16Versions()[:1] {
		runs = append(runs, run{v, func(e *Engine) func([]float32, []float32, []int32, int, int, float32) { return e.AttentionBF16 }, engine(b, Config{BF16Version: v})})
	}
	for _, r := range runs {
		for _, sh := range [][2]int{{8, 128}, {4, 192}, {4, 256}, {1, 384}} {
			bs, t := sh[0], sh[1]
			b.Run(fmt.Sprintf("%s/B=%d/T=%d", r.name, bs, t), func(b *testing.B) {
				rng := rand.New(rand.NewSource(1))
				lengths := make([]int, bs)
				for i := range lengths {
					lengths[i] = t
				}
				seqs := SeqOffsets(lengths...)
				qkv := randSlice(rng, bs*t*3*hidden)
				out := make([]float32, bs*t*hidden)
				scale := float32(1 / math.Sqrt(hidden/heads))
				attend := r.f(r.e)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					attend(out, qkv, seqs, hidden, heads, scale)
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
