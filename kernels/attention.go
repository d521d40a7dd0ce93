package kernels

import (
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
			SoftmaxRef(scores, n, n, scale, nil, n)
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

// attnRows is how many query rows of one head a task takes: its score
// tile (attnRows x sequence length) stays in L2 between the two products.
const attnRows = 48

// Attention is the fast version of AttentionRef. The work is split into
// tasks of (sequence, head, block of attnRows queries) shared by the
// cores; each computes its score tile with the SGEMM micro-kernel, turns
// it into probabilities with the vector softmax and multiplies by the
// head's values, so no more than one tile of scores per core exists.
func Attention(out, qkv []float32, seqs []int32, hidden, heads int, scale float32) {
	if len(seqs) < 2 || seqs[len(seqs)-1] == seqs[0] {
		return
	}
	t := attentionTasks.Get().(*attentionTask)
	*t = attentionTask{out: out, qkv: qkv, seqs: seqs, hidden: hidden, heads: heads, scale: scale,
		kern: active.Load(), vec: activeVec.Load(), first: t.first[:0]}
	total := 0
	for b := 0; b+1 < len(seqs); b++ {
		t.first = append(t.first, total)
		n := int(seqs[b+1] - seqs[b])
		total += heads * ((n + attnRows - 1) / attnRows)
	}
	parallel(total, t)
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
	vec           *vecOps
	// first[b] is the number of the first task of sequence b.
	first []int
}

var attentionTasks = sync.Pool{New: func() any { return new(attentionTask) }}

func (t *attentionTask) run(i int, s *scratch) {
	b := sort.SearchInts(t.first, i+1) - 1
	for b+1 < len(t.first) && t.first[b+1] == t.first[b] {
		b++ // skip empty sequences, which have no tasks
	}
	lo, n := int(t.seqs[b]), int(t.seqs[b+1]-t.seqs[b])
	blocks := (n + attnRows - 1) / attnRows
	r := i - t.first[b]
	h, blk := r/blocks, r%blocks
	q0 := blk * attnRows
	rows := min(attnRows, n-q0)
	H, dh := t.hidden, t.hidden/t.heads
	ld := 3 * H
	col := h * dh

	scores := grow(&s.scores, rows*n)
	// scores = q k^T (the keys are op(B) = k^T, read transposed); the
	// scale goes into the softmax, so that q is read in place.
	sgemmSerial(t.kern, false, true, rows, n, dh, 1,
		t.qkv[(lo+q0)*ld+col:], ld, t.qkv[lo*ld+H+col:], ld, scores, n, s)
	for r := 0; r < rows; r++ {
		softmaxRow(t.vec, scores[r*n:(r+1)*n], t.scale)
	}
	sgemmSerial(t.kern, false, false, rows, dh, n, 1,
		scores, n, t.qkv[lo*ld+2*H+col:], ld, t.out[(lo+q0)*H+col:], H, s)
}

// sgemmSerial is C = alpha*op(A)*op(B) on the calling goroutine, for
// products that are themselves one task of a parallel kernel.
func sgemmSerial(kern *microKernel, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, s *scratch) {
	bp := grow(&s.b, packedLen(kern, n, k))
	packB(kern, bp, transB, n, k, b, ldb)
	g := gemmTask{kern: kern, transA: transA, m: m, n: n, k: k, kElems: k, alpha: alpha,
		a: a, lda: lda, bp: bp, c: c, ldc: ldc}
	g.mc = (kern.mc + kern.mr - 1) / kern.mr * kern.mr
	g.mBlocks = (m + g.mc - 1) / g.mc
	g.panelsPerChunk = (n + kern.nr - 1) / kern.nr
	for i := 0; i < g.mBlocks; i++ {
		g.run(i, s)
	}
}
