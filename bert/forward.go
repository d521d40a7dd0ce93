package bert

import (
	"fmt"
	"math"
	"strconv"

	"github.com/bertstream/bertstream/nn"
)

// Inputs is a batch of B token sequences padded to T, row-major on the
// host, as a tokenizer makes them.
type Inputs struct {
	IDs, TypeIDs, Mask []int32 // B*T each; TypeIDs may be nil (all 0)
	B, T               int
}

// Want selects what Forward computes beyond the last hidden state.
type Want struct {
	// Hidden keeps the embedding output and every layer's output.
	Hidden bool
	// Pooled runs the tanh pooler on the first token.
	Pooled bool
	// MLM computes masked-LM logits at every position ([B, T, V]) or, when
	// MLMRows is set, only at those flattened positions b*T+t ([n, V]).
	MLM     bool
	MLMRows []int32
	// NSP, Classify and TokenClassify run those heads.
	NSP, Classify, TokenClassify bool
	// Sentence pools the last hidden state over the mask into one vector
	// per sequence ([B, H]) with SentencePooling.
	Sentence        bool
	SentencePooling nn.Pooling
}

// WantAll asks for every output the model can give.
func (m *Model) WantAll() Want {
	return Want{Hidden: true, Pooled: m.pooler != nil, MLM: m.mlm != nil, NSP: m.nsp != nil,
		Classify: m.HasClassifier(), TokenClassify: m.HasTokenClassifier()}
}

// Outputs are Forward's results, tensors on the model's backend in its
// compute dtype, owned by the scope given to Forward. Fields not asked
// for are nil.
type Outputs struct {
	Sequence    *nn.Tensor   // last hidden state [B, T, H]
	Embeddings  *nn.Tensor   // embedding output [B, T, H] (Want.Hidden)
	Hidden      []*nn.Tensor // each layer's output [B, T, H] (Want.Hidden)
	Pooled      *nn.Tensor   // [B, H]
	MLMLogits   *nn.Tensor   // [B, T, V] or [len(MLMRows), V]
	NSPLogits   *nn.Tensor   // [B, 2]
	Logits      *nn.Tensor   // sequence classifier [B, labels]
	TokenLogits *nn.Tensor   // token classifier [B, T, labels]
	Sentence    *nn.Tensor   // pooled sentence embedding [B, H]
}

// Validate checks a batch against the model: sizes, and every id, type
// and mask value in range, so that no backend reads outside a table.
func (m *Model) Validate(in Inputs) error {
	c := &m.Config
	if in.B <= 0 || in.T <= 0 {
		return fmt.Errorf("empty batch: %d sequences of %d tokens", in.B, in.T)
	}
	if in.T > c.MaxPositionEmbeddings {
		return fmt.Errorf("sequence length %d exceeds the model's %d positions", in.T, c.MaxPositionEmbeddings)
	}
	n := in.B * in.T
	if len(in.IDs) != n || len(in.Mask) != n || (in.TypeIDs != nil && len(in.TypeIDs) != n) {
		return fmt.Errorf("inputs for %d x %d tokens have %d ids, %d type ids, %d mask values", in.B, in.T, len(in.IDs), len(in.TypeIDs), len(in.Mask))
	}
	for i := 0; i < n; i++ {
		if id := in.IDs[i]; id < 0 || int(id) >= c.VocabSize {
			return fmt.Errorf("token id %d at [%d,%d] is outside the vocabulary of %d", id, i/in.T, i%in.T, c.VocabSize)
		}
		if in.TypeIDs != nil {
			if ty := in.TypeIDs[i]; ty < 0 || int(ty) >= c.TypeVocabSize {
				return fmt.Errorf("token type %d at [%d,%d] is outside the %d types", ty, i/in.T, i%in.T, c.TypeVocabSize)
			}
		}
		if v := in.Mask[i]; v != 0 && v != 1 {
			return fmt.Errorf("attention mask value %d at [%d,%d] is not 0 or 1", v, i/in.T, i%in.T)
		}
	}
	for b := 0; b < in.B; b++ {
		if in.Mask[b*in.T] == 0 {
			// BERT reads the pooled output and the classifiers off the
			// first token: a batch is padded on the right.
			return fmt.Errorf("attention mask is 0 at [%d,0]: the first token of every sequence ([CLS]) must be real", b)
		}
	}
	return nil
}

// packing is a batch without its padding: the real tokens of every
// sequence one after another, as the encoder computes them.
type packing struct {
	ids, types, positions []int32 // per real token
	seqs                  []int32 // sequence b is tokens seqs[b] to seqs[b+1]
	rows                  []int32 // per real token, its row b*T+t in the padded batch
	packed                []int32 // per padded row, its real token or -1
	maxLen                int
}

func pack(in Inputs) *packing {
	n := 0
	for _, v := range in.Mask {
		n += int(v)
	}
	p := &packing{ids: make([]int32, 0, n), positions: make([]int32, 0, n), rows: make([]int32, 0, n),
		seqs: make([]int32, 1, in.B+1), packed: make([]int32, in.B*in.T)}
	if in.TypeIDs != nil {
		p.types = make([]int32, 0, n)
	}
	for b := 0; b < in.B; b++ {
		for t := 0; t < in.T; t++ {
			i := b*in.T + t
			p.packed[i] = -1
			if in.Mask[i] == 0 {
				continue
			}
			p.packed[i] = int32(len(p.ids))
			p.ids = append(p.ids, in.IDs[i])
			if in.TypeIDs != nil {
				p.types = append(p.types, in.TypeIDs[i])
			}
			p.positions = append(p.positions, int32(t))
			p.rows = append(p.rows, int32(i))
		}
		p.seqs = append(p.seqs, int32(len(p.ids)))
		p.maxLen = max(p.maxLen, int(p.seqs[b+1]-p.seqs[b]))
	}
	return p
}

// Forward runs the model on a batch. Results are made in scope s;
// everything else is freed before it returns.
//
// Padding costs nothing: the encoder runs on the real tokens of the batch
// packed one sequence after another, and the per-token outputs are put
// back into the padded [B, T, ...] layout at the end, with zeros at padded
// positions.
func (m *Model) Forward(s *nn.Scope, in Inputs, want Want) (*Outputs, error) {
	if err := m.Validate(in); err != nil {
		return nil, err
	}
	if want.MLM && m.mlm == nil {
		return nil, fmt.Errorf("the %s checkpoint has no masked-LM head", m.Arch)
	}
	if want.NSP && m.nsp == nil {
		return nil, fmt.Errorf("the %s checkpoint has no next-sentence head", m.Arch)
	}
	if want.Classify && !m.HasClassifier() {
		return nil, fmt.Errorf("the %s checkpoint has no sequence classifier", m.Arch)
	}
	if want.TokenClassify && !m.HasTokenClassifier() {
		return nil, fmt.Errorf("the %s checkpoint has no token classifier", m.Arch)
	}
	if (want.Pooled || want.NSP || want.Classify) && m.pooler == nil {
		return nil, fmt.Errorf("the %s checkpoint has no pooler", m.Arch)
	}
	p := pack(in)
	var mlmRows []int32
	if want.MLM && want.MLMRows != nil {
		mlmRows = make([]int32, len(want.MLMRows))
		for i, r := range want.MLMRows {
			if r < 0 || int(r) >= in.B*in.T {
				return nil, fmt.Errorf("masked-LM position %d (entry %d) outside the %d x %d batch", r, i, in.B, in.T)
			}
			if mlmRows[i] = p.packed[r]; mlmRows[i] < 0 {
				return nil, fmt.Errorf("masked-LM position [%d,%d] (entry %d) is padding", int(r)/in.T, int(r)%in.T, i)
			}
		}
	}
	c := &m.Config
	be := m.be
	B, T, H, N := in.B, in.T, c.HiddenSize, len(p.ids)
	cd := be.Compute()
	tmp := s.Child("forward")
	defer tmp.Close()
	keep := func(t *nn.Tensor) *nn.Tensor { tmp.Move(t, s); return t }
	ints := func(v []int32) (*nn.Tensor, error) { return m.uploadI32(tmp, v, len(v)) }

	ids, err := ints(p.ids)
	if err != nil {
		return nil, err
	}
	positions, err := ints(p.positions)
	if err != nil {
		return nil, err
	}
	var types *nn.Tensor
	if p.types != nil {
		if types, err = ints(p.types); err != nil {
			return nil, err
		}
	}
	seqs, err := ints(p.seqs)
	if err != nil {
		return nil, err
	}
	var rows *nn.Tensor // packed token -> padded row, for Scatter
	unpad := func(x *nn.Tensor) (*nn.Tensor, error) {
		if rows == nil {
			if rows, err = ints(p.rows); err != nil {
				return nil, err
			}
		}
		out := be.New(tmp, cd, B, T, x.Cols())
		return out, be.Scatter(out, x, rows)
	}

	out := &Outputs{}
	nn.Region(be, "embeddings")
	x := be.New(tmp, cd, N, H)
	if err := be.Embed(x, ids, types, positions, m.word, m.pos, m.typ, m.embLN.g, m.embLN.b, m.eps); err != nil {
		return nil, fmt.Errorf("embeddings: %w", err)
	}
	if want.Hidden {
		if out.Embeddings, err = unpad(x); err != nil {
			return nil, fmt.Errorf("embeddings: %w", err)
		}
		keep(out.Embeddings)
	}
	bufs := layerBufs{
		qkv:   be.New(tmp, cd, N, 3*H),
		ctx:   be.New(tmp, cd, N, H),
		proj:  be.New(tmp, cd, N, H),
		mid:   be.New(tmp, cd, N, H),
		inter: be.New(tmp, cd, N, c.IntermediateSize),
		seqs:  seqs, maxLen: p.maxLen,
		scale: float32(1 / math.Sqrt(float64(c.HeadDim()))),
	}
	next := be.New(tmp, cd, N, H)
	for i := range m.layers {
		if _, ok := be.(nn.Regioner); ok {
			nn.Region(be, "layer "+strconv.Itoa(i))
		}
		if err := m.layer(&m.layers[i], x, next, &bufs); err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		x, next = next, x
		if want.Hidden {
			h, err := unpad(x)
			if err != nil {
				return nil, fmt.Errorf("layer %d: %w", i, err)
			}
			out.Hidden = append(out.Hidden, keep(h))
		}
	}
	nn.Region(be, "heads")
	if want.Hidden {
		out.Sequence = out.Hidden[len(out.Hidden)-1]
	} else if out.Sequence, err = unpad(x); err != nil {
		return nil, err
	} else {
		keep(out.Sequence)
	}

	if want.Pooled || want.NSP || want.Classify {
		// The first token of sequence b is packed token seqs[b].
		first, err := ints(p.seqs[:B])
		if err != nil {
			return nil, err
		}
		cls := be.New(tmp, cd, B, H)
		if err := be.Gather(cls, x, first); err != nil {
			return nil, fmt.Errorf("pooler: %w", err)
		}
		pooled := be.New(tmp, cd, B, H)
		if err := be.Linear(pooled, cls, m.pooler.w, m.pooler.b, nn.ActTanh); err != nil {
			return nil, fmt.Errorf("pooler: %w", err)
		}
		if want.Pooled {
			out.Pooled = keep(pooled)
		}
		if want.NSP {
			if out.NSPLogits, err = m.head(tmp, pooled, m.nsp, B, 2); err != nil {
				return nil, fmt.Errorf("next-sentence head: %w", err)
			}
			keep(out.NSPLogits)
		}
		if want.Classify {
			if out.Logits, err = m.head(tmp, pooled, m.classifier, B, len(m.Labels)); err != nil {
				return nil, fmt.Errorf("classifier: %w", err)
			}
			keep(out.Logits)
		}
	}
	if want.TokenClassify {
		t, err := m.head(tmp, x, m.classifier, N, len(m.Labels))
		if err != nil {
			return nil, fmt.Errorf("token classifier: %w", err)
		}
		if out.TokenLogits, err = unpad(t); err != nil {
			return nil, fmt.Errorf("token classifier: %w", err)
		}
		keep(out.TokenLogits)
	}
	if want.MLM {
		if mlmRows != nil {
			if out.MLMLogits, err = m.mlmLogits(tmp, x, mlmRows); err != nil {
				return nil, fmt.Errorf("masked-LM head: %w", err)
			}
		} else {
			logits, err := m.mlmLogits(tmp, x, nil)
			if err != nil {
				return nil, fmt.Errorf("masked-LM head: %w", err)
			}
			if out.MLMLogits, err = unpad(logits); err != nil {
				return nil, fmt.Errorf("masked-LM head: %w", err)
			}
		}
		keep(out.MLMLogits)
	}
	if want.Sentence {
		sent := be.New(tmp, cd, B, H)
		if err := be.Pool(sent, x, seqs, want.SentencePooling); err != nil {
			return nil, fmt.Errorf("sentence pooling: %w", err)
		}
		out.Sentence = keep(sent)
	}
	return out, nil
}

// layerBufs are the scratch tensors of an encoder layer, shared by all.
type layerBufs struct {
	qkv, ctx, proj, mid, inter *nn.Tensor
	seqs                       *nn.Tensor
	maxLen                     int
	scale                      float32
}

// layer runs one encoder layer from x into next.
func (m *Model) layer(l *layer, x, next *nn.Tensor, b *layerBufs) error {
	be := m.be
	if err := be.Linear(b.qkv, x, l.qkv.w, l.qkv.b, nn.ActNone); err != nil {
		return fmt.Errorf("query/key/value: %w", err)
	}
	if err := be.Attention(b.ctx, b.qkv, b.seqs, b.maxLen, m.Config.NumAttentionHeads, b.scale); err != nil {
		return fmt.Errorf("attention: %w", err)
	}
	if err := be.Linear(b.proj, b.ctx, l.attnOut.w, l.attnOut.b, nn.ActNone); err != nil {
		return fmt.Errorf("attention output: %w", err)
	}
	if err := be.LayerNorm(b.mid, b.proj, x, l.attnLN.g, l.attnLN.b, m.eps); err != nil {
		return fmt.Errorf("attention LayerNorm: %w", err)
	}
	if err := be.Linear(b.inter, b.mid, l.inter.w, l.inter.b, m.act); err != nil {
		return fmt.Errorf("intermediate: %w", err)
	}
	if err := be.Linear(b.proj, b.inter, l.out.w, l.out.b, nn.ActNone); err != nil {
		return fmt.Errorf("output: %w", err)
	}
	if err := be.LayerNorm(next, b.proj, b.mid, l.outLN.g, l.outLN.b, m.eps); err != nil {
		return fmt.Errorf("output LayerNorm: %w", err)
	}
	return nil
}

func (m *Model) head(s *nn.Scope, x *nn.Tensor, l *linear, rows, n int) (*nn.Tensor, error) {
	t := m.be.New(s, m.be.Compute(), rows, n)
	return t, m.be.Linear(t, x, l.w, l.b, nn.ActNone)
}

// mlmLogits computes masked-LM logits for the packed tokens x [n, H], or
// only for the packed tokens rows when rows is not nil.
func (m *Model) mlmLogits(s *nn.Scope, x *nn.Tensor, rows []int32) (*nn.Tensor, error) {
	be, H, V := m.be, m.Config.HiddenSize, m.Config.VocabSize
	cd := be.Compute()
	src := x
	n := x.Rows()
	if rows != nil {
		n = len(rows)
		idx, err := m.uploadI32(s, rows, n)
		if err != nil {
			return nil, err
		}
		g := be.New(s, cd, n, H)
		if err := be.Gather(g, x, idx); err != nil {
			return nil, err
		}
		src = g
	}
	h := be.New(s, cd, n, H)
	if err := be.Linear(h, src, m.mlm.transform.w, m.mlm.transform.b, m.act); err != nil {
		return nil, err
	}
	if err := be.LayerNorm(h, h, nil, m.mlm.ln.g, m.mlm.ln.b, m.eps); err != nil {
		return nil, err
	}
	logits := be.New(s, cd, n, V)
	if err := be.Linear(logits, h, m.mlm.decoder.w, m.mlm.decoder.b, nn.ActNone); err != nil {
		return nil, err
	}
	return logits, nil
}

func (m *Model) uploadI32(s *nn.Scope, v []int32, shape ...int) (*nn.Tensor, error) {
	h, err := nn.HostI32(s, v, shape...)
	if err != nil {
		return nil, err
	}
	if m.be.Device() == "cpu" {
		return h, nil
	}
	d, err := m.be.Upload(s, h, nn.I32)
	h.Release()
	return d, err
}
