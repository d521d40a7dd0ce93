package kernels

import "fmt"

// Pooling names how a sequence of token vectors becomes one vector.
type Pooling uint8

const (
	PoolCLS  Pooling = iota // the first token
	PoolMean                // mean over tokens whose mask is non-zero
	PoolMax                 // element-wise max over tokens whose mask is non-zero
)

func (p Pooling) String() string {
	switch p {
	case PoolCLS:
		return "cls"
	case PoolMean:
		return "mean"
	case PoolMax:
		return "max"
	}
	return fmt.Sprintf("Pooling(%d)", uint8(p))
}

// PoolRef pools the rows of x (n x hidden) of each sequence into out
// (len(seqs)-1 x hidden): sequence b is rows seqs[b] to seqs[b+1] of x, all
// of them real tokens. An empty sequence pools to zeros.
func PoolRef(out, x []float32, seqs []int32, hidden int, p Pooling) {
	for b := 0; b+1 < len(seqs); b++ {
		o := out[b*hidden : (b+1)*hidden]
		lo, hi := int(seqs[b]), int(seqs[b+1])
		if lo == hi {
			clear(o)
			continue
		}
		copy(o, x[lo*hidden:(lo+1)*hidden])
		if p == PoolCLS {
			continue
		}
		for t := lo + 1; t < hi; t++ {
			row := x[t*hidden : (t+1)*hidden]
			for j, v := range row {
				if p == PoolMax {
					o[j] = max(o[j], v)
				} else {
					o[j] += v
				}
			}
		}
		if p == PoolMean {
			for j := range o {
				o[j] /= float32(hi - lo)
			}
		}
	}
}

// Pool is PoolRef's entry point: one pass over the rows, memory-bound, so
// the reference is already as fast as the memory allows and no version of
// e changes it.
func (e *Engine) Pool(out, x []float32, seqs []int32, hidden int, p Pooling) {
	PoolRef(out, x, seqs, hidden, p)
}
