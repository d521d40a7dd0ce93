package kernels

import (
	"math"
	"sort"
	"sync"
)

// AttentionRef is multi-head self-attention over packed sequences: qkv
// holds, for each of n tokens, the concatenated query, key and value
// projections (3*hidden values, heads of hidden/heads each); sequence b is
// tokens seqs[b] to seqs[b+1], all real (padding was removed before), and
// attends only within itself. out receives n x hidden: per head,
// softmax(scale*q k^T) v.
func AttentionRef(out, qkv []float32, seqs []int32, hidden, heads int, scale float32) {
	dh := hidden / heads
	ld := 3 * hidden
	for b := 0; b+1 < len(seqs); b++ {
		lo, hi := int(seqs[b]), int(seqs[b+1])
		n := hi - lo
		scores := make([]float32, n*n)
		for h := 0; h < heads; h++ {
			for i := 0; i < n; i++ {
				q := qkv[(lo+i)*ld+h*dh : (lo+i)*ld+h*dh+dh]
				for j := 0; j < n; j++ {
					k := qkv[(lo+j)*ld+hidden+h*dh : (lo+j)*ld+hidden+h*dh+dh]
					var s float64
					for d := range q {
						s += float64(q[d]) * float64(k[d])
					}
					scores[i*n+j] = float32(s)
				}
			}
			for i := 0; i < n; i++ {
				softmaxRef(scores[i*n:(i+1)*n], scale)
			}
			for i := 0; i < n; i++ {
				o := out[(lo+i)*hidden+h*dh : (lo+i)*hidden+h*dh+dh]
				for d := range o {
					var s float64
					for j := 0; j < n; j++ {
						s += float64(scores[i*n+j]) * float64(qkv[(lo+j)*ld+2*hidden+h*dh+d])
					}
					o[d] = float32(s)
				}
			}
		}
	}
}

// softmaxRef sets x = softmax(scale*x).
func softmaxRef(x []float32, scale float32) {
	maxv := math.Inf(-1)
	for _, v := range x {
		maxv = math.Max(maxv, float64(scale*v))
	}
	var sum float64
	for _, v := range x {
		sum += math.Exp(float64(scale*v) - maxv)
	}
	for j, v := range x {
		x[j] = float32(math.Exp(float64(scale*v)-maxv) / sum)
	}
}

// Attention is the fast AttentionRef. Tasks are (sequence,
// head) pairs, or parts of a head's queries when there are too few pairs
// to keep every core busy. A task packs the head's keys and values once,
// then for each block of queries (the tuning's attnRows) computes the
// score tile with the SGEMM micro-kernel, turns it into probabilities
// with the vector softmax and multiplies by the values: no more than one
// tile of scores per core exists.
func (e *Engine) Attention(out, qkv []float32, seqs []int32, hidden, heads int, scale float32) {
	e.attention(out, qkv, seqs, hidden, heads, scale, nil)
}

// AttentionBF16 is Attention with the two products of each sequence of at
// least BF16AttentionMin() tokens in BF16, as the BF16 linear layers compute
// theirs: queries, keys, values and probabilities rounded to bfloat16
// (f32ToBF16), the products summed in float32 by the BF16 micro-kernel,
// as PyTorch's bfloat16 autocast runs attention. The softmax stays
// float32, and so does all of a shorter sequence's attention: the choice
// is the sequence's own, whatever else shares the call.
func (e *Engine) AttentionBF16(out, qkv []float32, seqs []int32, hidden, heads int, scale float32) {
	e.attention(out, qkv, seqs, hidden, heads, scale, e.bf16)
}

// BF16AttentionMin is the shortest sequence whose attention AttentionBF16
// computes in BF16, from the blocking table (tuning.bf16AttnMin).
func (e *Engine) BF16AttentionMin() int { return e.tune.bf16AttnMin }

func (e *Engine) attention(out, qkv []float32, seqs []int32, hidden, heads int, scale float32, bf16 *bf16Kernel) {
	if len(seqs) < 2 || seqs[len(seqs)-1] == seqs[0] {
		return
	}
	threads := e.Threads()
	t := attentionTasks.Get().(*attentionTask)
	*t = attentionTask{out: out, qkv: qkv, seqs: seqs, hidden: hidden, heads: heads, scale: scale,
		kern: e.gemm, bf16: bf16, vec: e.vec, rows: e.tune.attnRows, first: t.first[:0], split: 1}
	if bf16 != nil {
		t.words, t.bf16Min = e.bf16Words, e.tune.bf16AttnMin
	}
	if pairs := (len(seqs) - 1) * heads; pairs < 4*threads {
		t.split = (4*threads + pairs - 1) / pairs
	}
	total := 0
	for b := 0; b+1 < len(seqs); b++ {
		t.first = append(t.first, total)
		total += heads * t.parts(int(seqs[b+1]-seqs[b]))
	}
	parallel(threads, total, t)
	first := t.first
	*t = attentionTask{first: first}
	attentionTasks.Put(t)
}

type attentionTask struct {
	out, qkv      []float32
	seqs          []int32
	hidden, heads int
	scale         float32
	kern          *microKernel
	// bf16, when not nil, computes the products (see AttentionBF16);
	// words packs its keys' words.
	bf16    *bf16Kernel
	words   *microKernel
	bf16Min int
	vec     *vecOps
	rows    int // query rows of a score tile
	// first[b] is the number of the first task of sequence b.
	first []int
	// split is how many parts a head's queries may be cut into.
	split int
}

var attentionTasks = sync.Pool{New: func() any { return new(attentionTask) }}

// parts is how many tasks share one head of a sequence of n tokens.
func (t *attentionTask) parts(n int) int {
	return min(t.split, (n+t.rows-1)/t.rows)
}

func (t *attentionTask) run(i int, s *scratch) {
	b := sort.SearchInts(t.first, i+1) - 1
	for b+1 < len(t.first) && t.first[b+1] == t.first[b] {
		b++ // skip empty sequences, which have no tasks
	}
	lo, n := int(t.seqs[b]), int(t.seqs[b+1]-t.seqs[b])
	parts := t.parts(n)
	r := i - t.first[b]
	h, part := r/parts, r%parts
	blocks := (n + t.rows - 1) / t.rows
	H, dh := t.hidden, t.hidden/t.heads
	ld := 3 * H
	col := h * dh
	if t.bf16 != nil && n >= t.bf16Min {
		t.runBF16(s, lo, n, col, part*blocks/parts, (part+1)*blocks/parts)
		return
	}
	kern := t.kern

	// The keys as op(B) = k^T of q k^T, the values as op(B) of p v.
	kp := grow(&s.b, packedLen(kern, n, dh))
	packB(kern, kp, true, n, dh, t.qkv[lo*ld+H+col:], ld)
	vp := grow(&s.v, packedLen(kern, dh, n))
	packB(kern, vp, false, dh, n, t.qkv[lo*ld+2*H+col:], ld)
	for blk := part * blocks / parts; blk < (part+1)*blocks/parts; blk++ {
		q0 := blk * t.rows
		rows := min(t.rows, n-q0)
		scores := grow(&s.scores, rows*n)
		// The scale goes into the softmax, so that q is read in place.
		gemmSerial(kern, rows, n, dh, t.qkv[(lo+q0)*ld+col:], ld, kp, scores, n, s)
		for r := 0; r < rows; r++ {
			softmaxRow(t.vec, scores[r*n:(r+1)*n], t.scale)
		}
		gemmSerial(kern, rows, dh, n, scores, n, vp, t.out[(lo+q0)*H+col:], H, s)
	}
}

// runBF16 is run's work in BF16 for the query blocks [blk0, blk1) of the
// head at column col of the sequence of n tokens at lo.
func (t *attentionTask) runBF16(s *scratch, lo, n, col, blk0, blk1 int) {
	bk := t.bf16
	mk, nr := bk.microKernel, bk.nr
	H, dh := t.hidden, t.hidden/t.heads
	ld := 3 * H
	dw, nw := (dh+1)/2, (n+1)/2 // words of a query or key, of a row of probabilities

	// The keys as op(B) = k^T: each key rounded into a row of words, the
	// rows then transposed into panels of nr keys.
	kw := grow(&s.words, n*dw)
	for j := 0; j < n; j++ {
		toWords(bk, kw[j*dw:(j+1)*dw], t.qkv[(lo+j)*ld+H+col:(lo+j)*ld+H+col+dh])
	}
	kp := grow(&s.b, packedLen(mk, n, dh))
	packB(t.words, kp, true, n, dw, kw, dw)

	// The values as op(B) of p v: pairs of tokens, straight from their
	// rows, nr dimensions a panel.
	vp := grow(&s.v, packedLen(mk, dh, n))
	for j0 := 0; j0 < dh; j0 += nr {
		panel := words(vp[j0*nw : j0*nw+nr*nw])
		cols := min(nr, dh-j0)
		if cols < nr {
			clear(panel)
		}
		for p := 0; p < nw; p++ {
			v := (lo+2*p)*ld + 2*H + col + j0
			var hi []float32
			if 2*p+1 < n {
				hi = t.qkv[v+ld : v+ld+cols]
			}
			bk.pair(panel[p*nr:p*nr+cols], t.qkv[v:v+cols], hi)
		}
	}

	for blk := blk0; blk < blk1; blk++ {
		q0 := blk * t.rows
		rows := min(t.rows, n-q0)
		qh := grow(&s.half, rows*dw)
		for r := 0; r < rows; r++ {
			toWords(bk, qh[r*dw:(r+1)*dw], t.qkv[(lo+q0+r)*ld+col:(lo+q0+r)*ld+col+dh])
		}
		scores := grow(&s.scores, rows*n)
		gemmSerial(mk, rows, n, dw, qh, dw, kp, scores, n, s)
		// softmaxRow, its division by the sum rounding the probabilities
		// to BF16 as it goes.
		ph := grow(&s.half, rows*nw)
		for r := 0; r < rows; r++ {
			x := scores[r*n : (r+1)*n]
			sum := expRow(t.vec, x, t.scale)
			h := halves(ph[r*nw : (r+1)*nw])
			bk.toBF16Scaled(h[:n], x, 1/sum)
			if n%2 == 1 {
				h[n] = 0
			}
		}
		gemmSerial(mk, rows, dh, nw, ph, nw, vp, t.out[(lo+q0)*H+col:], H, s)
	}
}

// toWords writes the values of src rounded to BF16 into the words dst,
// (len(src)+1)/2 of them, a zero after an odd count.
func toWords(bk *bf16Kernel, dst, src []float32) {
	h := halves(dst)
	bk.toBF16(h[:len(src)], src)
	if len(src)%2 == 1 {
		h[len(src)] = 0
	}
}

// softmaxRow sets x = softmax(scale*x) with the primitives v.
func softmaxRow(v *vecOps, x []float32, scale float32) {
	if len(x) == 0 {
		return
	}
	v.scale(x, 1/expRow(v, x, scale))
}

// expRow sets x[i] = e^(scale*x[i] - scale*max(x)), softmax's numerators, and
// returns their sum.
func expRow(v *vecOps, x []float32, scale float32) float32 {
	return v.expSum(x, scale, scale*v.max(x))
}
