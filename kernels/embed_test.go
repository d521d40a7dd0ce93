package kernels

import (
	"math/rand"
	"testing"
)

func TestEmbedVersions(t *testing.T) {
	forVersions(t, func(t *testing.T, e *Engine) {
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
					if err := e.EmbedLayerNorm(got, ids, ty, positions, hidden, word, pos, typ, gamma, beta, 1e-12); err != nil {
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
					if err := e.EmbedLayerNorm(make([]float32, 2*hidden), bad.ids, bad.types, bad.positions, hidden, word, pos, typ, gamma, beta, 1e-12); err == nil {
						t.Errorf("bad %s accepted", bad.name)
					}
				}
			}
		}
	})
}

// BenchmarkEmbedLayerNorm is BERT-base's embeddings of 8 x 128 tokens.
func BenchmarkEmbedLayerNorm(b *testing.B) {
	const vocab, npos, tokens, hidden = 30522, 512, 8 * 128, 768
	rng := rand.New(rand.NewSource(1))
	word, pos, typ := randSlice(rng, vocab*hidden), randSlice(rng, npos*hidden), randSlice(rng, 2*hidden)
	gamma, beta := randSlice(rng, hidden), randSlice(rng, hidden)
	ids, types, positions := make([]int32, tokens), make([]int32, tokens), make([]int32, tokens)
	for i := range ids {
		ids[i], types[i], positions[i] = int32(rng.Intn(vocab)), int32(rng.Intn(2)), int32(i%128)
	}
	out := make([]float32, tokens*hidden)
	for _, v := range Versions() {
		e := engine(b, Config{Version: v})
		b.Run(v, func(b *testing.B) {
			b.SetBytes(4 * 4 * tokens * hidden)
			for b.Loop() {
				if err := e.EmbedLayerNorm(out, ids, types, positions, hidden, word, pos, typ, gamma, beta, 1e-12); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
