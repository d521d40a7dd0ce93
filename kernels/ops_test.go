package kernels

import (
	"fmt"
	"math"
	"math/rand"
	"testing"
)

// seqOffsets cuts n tokens into sequences of the given lengths.
func seqOffsets(lengths ...int) []int32 {
	seqs := []int32{0}
	for _, l := range lengths {
		seqs = append(seqs, seqs[len(seqs)-1]+int32(l))
	}
	return seqs
}

// TestAttentionVersions checks the fast attention of every kernel version
// against AttentionRef on odd head sizes and sequence lengths, empty and
// one-token sequences, and lengths over one block of query rows.
func TestAttentionVersions(t *testing.T) {
	withVersion(t, func(t *testing.T) {
		rng := rand.New(rand.NewSource(4))
		for _, c := range []struct {
			hidden, heads int
			lengths       []int
		}{
			{4, 1, []int{1}},
			{12, 3, []int{3, 0, 17}},
			{64, 4, []int{65, 1, 129}},
			{48, 2, []int{attnRows, attnRows + 1}},
			{32, 2, []int{2*attnRows - 1, 5, 0}},
			{768, 12, []int{33, 128}},
			{15, 5, []int{9, 16, 1, 4}},
		} {
			name := fmt.Sprintf("hidden=%d heads=%d lengths=%v", c.hidden, c.heads, c.lengths)
			seqs := seqOffsets(c.lengths...)
			n := int(seqs[len(seqs)-1])
			qkv := randSlice(rng, n*3*c.hidden)
			scale := float32(1 / math.Sqrt(float64(c.hidden/c.heads)))
			want := make([]float32, n*c.hidden)
			AttentionRef(want, qkv, seqs, c.hidden, c.heads, scale)
			got := make([]float32, n*c.hidden)
			Attention(got, qkv, seqs, c.hidden, c.heads, scale)
			if err := closeTo(got, want, 2e-6, 1e-5); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	})
}

func TestSoftmaxVersions(t *testing.T) {
	withVersion(t, func(t *testing.T) {
		rng := rand.New(rand.NewSource(5))
		for _, cols := range oddSizes {
			for _, masked := range []bool{false, true} {
				const groups, rows = 3, 4
				x := make([]float32, groups*rows*cols)
				for i := range x {
					x[i] = 16 * (rng.Float32() - 0.5)
				}
				var mask []int32
				if masked {
					mask = make([]int32, groups*cols)
					for g := 0; g < groups; g++ {
						for j := 0; j < cols; j++ {
							// group 1 is fully masked: it attends everywhere
							if g != 1 && rng.Intn(3) > 0 {
								mask[g*cols+j] = 1
							}
						}
					}
				}
				want := append([]float32(nil), x...)
				SoftmaxRef(want, groups*rows, cols, 0.7, mask, rows)
				Softmax(x, groups*rows, cols, 0.7, mask, rows)
				if err := closeTo(x, want, 1e-7, 2e-6); err != nil {
					t.Errorf("cols=%d masked=%v: %v", cols, masked, err)
				}
			}
		}
	})
}

func TestLayerNormVersions(t *testing.T) {
	withVersion(t, func(t *testing.T) {
		rng := rand.New(rand.NewSource(6))
		for _, cols := range append(oddSizes, 768) {
			const rows = 37
			x := randSlice(rng, rows*cols)
			for i := range x {
				x[i] = 3*x[i] + 20 // a mean far from 0, as BERT's outlier dimensions have
			}
			res := randSlice(rng, rows*cols)
			gamma, beta := randSlice(rng, cols), randSlice(rng, cols)
			for _, alias := range []string{"none", "x", "res", "no residual"} {
				want := make([]float32, rows*cols)
				r := res
				if alias == "no residual" {
					r = nil
				}
				LayerNormRef(want, x, r, rows, cols, gamma, beta, 1e-12)
				xs, rs := append([]float32(nil), x...), append([]float32(nil), res...)
				out := make([]float32, rows*cols)
				switch alias {
				case "x":
					out = xs
				case "res":
					out = rs
				case "no residual":
					rs = nil
				}
				LayerNorm(out, xs, rs, rows, cols, gamma, beta, 1e-12)
				if err := closeTo(out, want, 2e-5, 1e-5); err != nil {
					t.Errorf("cols=%d out aliases %s: %v", cols, alias, err)
				}
			}
		}
	})
}

func TestEmbedVersions(t *testing.T) {
	withVersion(t, func(t *testing.T) {
		rng := rand.New(rand.NewSource(7))
		const vocab, npos, ntypes = 50, 140, 3
		for _, hidden := range []int{1, 17, 768} {
			for _, n := range []int{1, 3, 129} {
				word, pos, typ := randSlice(rng, vocab*hidden), randSlice(rng, npos*hidden), randSlice(rng, ntypes*hidden)
				gamma, beta := randSlice(rng, hidden), randSlice(rng, hidden)
				ids, types, positions := make([]int32, n), make([]int32, n), make([]int32, n)
				for i := range ids {
					ids[i], types[i], positions[i] = int32(rng.Intn(vocab)), int32(rng.Intn(ntypes)), int32(rng.Intn(npos))
				}
				for _, ty := range [][]int32{nil, types} {
					want := make([]float32, n*hidden)
					if err := EmbedLayerNormRef(want, ids, ty, positions, hidden, word, pos, typ, gamma, beta, 1e-12); err != nil {
						t.Fatal(err)
					}
					got := make([]float32, n*hidden)
					if err := EmbedLayerNorm(got, ids, ty, positions, hidden, word, pos, typ, gamma, beta, 1e-12); err != nil {
						t.Fatal(err)
					}
					if err := closeTo(got, want, 2e-5, 1e-5); err != nil {
						t.Errorf("hidden=%d n=%d types=%v: %v", hidden, n, ty != nil, err)
					}
				}
				for _, bad := range []struct {
					name                  string
					ids, types, positions []int32
				}{
					{"id", []int32{vocab}, nil, []int32{0}},
					{"position", []int32{0}, nil, []int32{npos}},
					{"type", []int32{0}, []int32{-1}, []int32{0}},
					{"lengths", []int32{0, 1}, nil, []int32{0}},
				} {
					if err := EmbedLayerNorm(make([]float32, 2*hidden), bad.ids, bad.types, bad.positions, hidden, word, pos, typ, gamma, beta, 1e-12); err == nil {
						t.Errorf("bad %s accepted", bad.name)
					}
				}
			}
		}
	})
}
