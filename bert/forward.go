package bert

import (
	"fmt"
	"math"

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
	return nil
}

// Forward runs the model on a batch. Results are made in scope s;
// everything else is freed before it returns.
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
	c := &m.Config
	be := m.be
	B, T, H := in.B, in.T, c.HiddenSize
	cd := be.Compute()
	tmp := s.Child("forward")
	defer tmp.Close()
	keep := func(t *nn.Tensor) *nn.Tensor { tmp.Move(t, s); return t }

	ids, err := m.uploadI32(tmp, in.IDs, B, T)
	if err != nil {
		return nil, err
	}
	var types *nn.Tensor
	if in.TypeIDs != nil {
		if types, err = m.uploadI32(tmp, in.TypeIDs, B, T); err != nil {
			return nil, err
		}
	}
	mask, err := m.uploadI32(tmp, in.Mask, B, T)
	if err != nil {
		return nil, err
	}

	out := &Outputs{}
	x := be.New(tmp, cd, B, T, H)
	if err := be.Embed(x, ids, types, m.word, m.pos, m.typ, m.embLN.g, m.embLN.b, m.eps); err != nil {
		return nil, fmt.Errorf("embeddings: %w", err)
	}
	if want.Hidden {
		out.Embeddings = keep(x)
	}
	qkv := be.New(tmp, cd, B, T, 3*H)
	ctx := be.New(tmp, cd, B, T, H)
	proj := be.New(tmp, cd, B, T, H)
	mid := be.New(tmp, cd, B, T, H)
	inter := be.New(tmp, cd, B, T, c.IntermediateSize)
	var spare *nn.Tensor // the previous layer's input, reused when not kept
	scale := float32(1 / math.Sqrt(float64(c.HeadDim())))
	for i := range m.layers {
		l := &m.layers[i]
		next := spare
		if next == nil || want.Hidden {
			next = be.New(tmp, cd, B, T, H)
		}
		if err := m.layer(l, x, next, qkv, ctx, proj, mid, inter, mask, scale); err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		if want.Hidden {
			out.Hidden = append(out.Hidden, keep(next))
		} else {
			spare = x
		}
		x = next
	}
	if !want.Hidden {
		keep(x)
	}
	out.Sequence = x

	if want.Pooled || want.NSP || want.Classify {
		first := make([]int32, B)
		for b := range first {
			first[b] = int32(b * T)
		}
		idx, err := m.uploadI32(tmp, first, B)
		if err != nil {
			return nil, err
		}
		cls := be.New(tmp, cd, B, H)
		flat, _ := x.Reshape(B*T, H)
		if err := be.Gather(cls, flat, idx); err != nil {
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
		t := be.New(tmp, cd, B, T, len(m.Labels))
		if err := be.Linear(t, x, m.classifier.w, m.classifier.b, nn.ActNone); err != nil {
			return nil, fmt.Errorf("token classifier: %w", err)
		}
		out.TokenLogits = keep(t)
	}
	if want.MLM {
		if out.MLMLogits, err = m.mlmLogits(tmp, x, want.MLMRows, B, T); err != nil {
			return nil, fmt.Errorf("masked-LM head: %w", err)
		}
		keep(out.MLMLogits)
	}
	if want.Sentence {
		sent := be.New(tmp, cd, B, H)
		if err := be.Pool(sent, x, mask, want.SentencePooling); err != nil {
			return nil, fmt.Errorf("sentence pooling: %w", err)
		}
		out.Sentence = keep(sent)
	}
	return out, nil
}

// layer runs one encoder layer from x into next; the other tensors are
// scratch buffers of the layer's shapes.
func (m *Model) layer(l *layer, x, next, qkv, ctx, proj, mid, inter, mask *nn.Tensor, scale float32) error {
	be := m.be
	if err := be.Linear(qkv, x, l.qkv.w, l.qkv.b, nn.ActNone); err != nil {
		return fmt.Errorf("query/key/value: %w", err)
	}
	if err := be.Attention(ctx, qkv, mask, m.Config.NumAttentionHeads, scale); err != nil {
		return fmt.Errorf("attention: %w", err)
	}
	if err := be.Linear(proj, ctx, l.attnOut.w, l.attnOut.b, nn.ActNone); err != nil {
		return fmt.Errorf("attention output: %w", err)
	}
	if err := be.AddLayerNorm(mid, proj, x, l.attnLN.g, l.attnLN.b, m.eps); err != nil {
		return fmt.Errorf("attention LayerNorm: %w", err)
	}
	if err := be.Linear(inter, mid, l.inter.w, l.inter.b, m.act); err != nil {
		return fmt.Errorf("intermediate: %w", err)
	}
	if err := be.Linear(proj, inter, l.out.w, l.out.b, nn.ActNone); err != nil {
		return fmt.Errorf("output: %w", err)
	}
	if err := be.AddLayerNorm(next, proj, mid, l.outLN.g, l.outLN.b, m.eps); err != nil {
		return fmt.Errorf("output LayerNorm: %w", err)
	}
	return nil
}

func (m *Model) head(s *nn.Scope, x *nn.Tensor, l *linear, rows, n int) (*nn.Tensor, error) {
	t := m.be.New(s, m.be.Compute(), rows, n)
	return t, m.be.Linear(t, x, l.w, l.b, nn.ActNone)
}

func (m *Model) mlmLogits(s *nn.Scope, x *nn.Tensor, rows []int32, B, T int) (*nn.Tensor, error) {
	be, H, V := m.be, m.Config.HiddenSize, m.Config.VocabSize
	cd := be.Compute()
	src, _ := x.Reshape(B*T, H)
	n := B * T
	if rows != nil {
		for i, r := range rows {
			if r < 0 || int(r) >= B*T {
				return nil, fmt.Errorf("position %d (entry %d) outside the %d x %d batch", r, i, B, T)
			}
		}
		n = len(rows)
		idx, err := m.uploadI32(s, rows, n)
		if err != nil {
			return nil, err
		}
		g := be.New(s, cd, n, H)
		if err := be.Gather(g, src, idx); err != nil {
			return nil, err
		}
		src = g
	}
	h := be.New(s, cd, n, H)
	if err := be.Linear(h, src, m.mlm.transform.w, m.mlm.transform.b, m.act); err != nil {
		return nil, err
	}
	if err := be.AddLayerNorm(h, h, nil, m.mlm.ln.g, m.mlm.ln.b, m.eps); err != nil {
		return nil, err
	}
	shape := []int{n, V}
	if rows == nil {
		shape = []int{B, T, V}
	}
	logits := be.New(s, cd, shape...)
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
