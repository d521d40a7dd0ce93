package kernels

import "fmt"

// EmbedLayerNormRef computes the embeddings of n tokens: for token i, row
// ids[i] of word, row positions[i] of pos and row types[i] of typ (types
// may be nil: all 0) summed, then LayerNorm. out is n x hidden. It returns
// an error naming the first index out of range instead of reading outside
// a table.
func EmbedLayerNormRef(out []float32, ids, types, positions []int32, hidden int, word, pos, typ []float32, gamma, beta []float32, eps float32) error {
	if err := CheckEmbedIndexes(ids, types, positions, len(word)/hidden, len(pos)/hidden, len(typ)/hidden); err != nil {
		return err
	}
	for i, id := range ids {
		ty := int32(0)
		if types != nil {
			ty = types[i]
		}
		o := out[i*hidden : (i+1)*hidden]
		w := word[int(id)*hidden:]
		p := pos[int(positions[i])*hidden:]
		t := typ[int(ty)*hidden:]
		for j := range o {
			o[j] = w[j] + p[j] + t[j]
		}
	}
	LayerNormRef(out, out, nil, len(ids), hidden, gamma, beta, eps)
	return nil
}

// CheckEmbedIndexes reports the first id, position or type (types may be
// nil) outside a table of vocab, npos or ntypes rows, and lengths that
// differ; every backend's embedding checks its indexes with it.
func CheckEmbedIndexes(ids, types, positions []int32, vocab, npos, ntypes int) error {
	if len(positions) != len(ids) || (types != nil && len(types) != len(ids)) {
		return fmt.Errorf("%d ids, %d positions and %d token types differ", len(ids), len(positions), len(types))
	}
	for i, id := range ids {
		if id < 0 || int(id) >= vocab {
			return fmt.Errorf("token id %d at %d outside the vocabulary of %d", id, i, vocab)
		}
		if p := positions[i]; p < 0 || int(p) >= npos {
			return fmt.Errorf("position %d at %d outside the %d position embeddings", p, i, npos)
		}
		if types != nil {
			if ty := types[i]; ty < 0 || int(ty) >= ntypes {
				return fmt.Errorf("token type %d at %d outside the %d token types", ty, i, ntypes)
			}
		}
	}
	return nil
}

// EmbedLayerNorm is the fast EmbedLayerNormRef, across cores.
func (e *Engine) EmbedLayerNorm(out []float32, ids, types, positions []int32, hidden int, word, pos, typ []float32, gamma, beta []float32, eps float32) error {
	if err := CheckEmbedIndexes(ids, types, positions, len(word)/hidden, len(pos)/hidden, len(typ)/hidden); err != nil {
		return err
	}
	if len(ids) == 0 {
		return nil
	}
	t := rowTasks.Get().(*rowTask)
	*t = rowTask{fn: embedRows, rows: len(ids), cols: hidden, vec: e.vec, out: out, gamma: gamma, beta: beta, eps: eps,
		ids: ids, types: types, positions: positions, word: word, pos: pos, typ: typ}
	runRows(e.Threads(), t)
	return nil
}

func embedRows(t *rowTask, lo, hi int) {
	c := t.cols
	for i := lo; i < hi; i++ {
		o := t.out[i*c : (i+1)*c]
		copy(o, t.word[int(t.ids[i])*c:])
		t.vec.add(o, t.pos[int(t.positions[i])*c:])
		ty := 0
		if t.types != nil {
			ty = int(t.types[i])
		}
		t.vec.add(o, t.typ[ty*c:])
		layerNorm(t.vec, o, t.gamma, t.beta, t.eps)
	}
}
