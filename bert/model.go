package bert

import (
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/bertstream/bertstream/nn"
)

type linear struct{ w, b *nn.Tensor }
type layerNorm struct{ g, b *nn.Tensor }

type layer struct {
	qkv     linear // query, key and value fused: [3H, H]
	attnOut linear
	attnLN  layerNorm
	inter   linear
	out     linear
	outLN   layerNorm
}

type mlmHead struct {
	transform linear
	ln        layerNorm
	decoder   linear // w is the word embeddings when tied
}

// Model is a BERT encoder with the heads its checkpoint has, its weights
// on one backend.
type Model struct {
	Config Config
	// Arch is the architecture the model was built as (config.json's
	// architectures[0], or inferred from the heads present).
	Arch string
	// Labels are the class names of the classifier head, if any.
	Labels []string
	// Ignored lists checkpoint tensors that no part of the model uses
	// (heads of another architecture, buffers).
	Ignored []string

	be      nn.Backend
	weights *nn.Scope
	// prepacking is held by Prepack, closing tells it to stop.
	prepacking sync.Mutex
	closing    atomic.Bool
	act        nn.Act
	eps        float32

	word, pos, typ *nn.Tensor
	embLN          layerNorm
	layers         []layer
	pooler         *linear
	mlm            *mlmHead
	nsp            *linear
	classifier     *linear
	// tokenClassifier says the classifier applies to every token
	// (BertForTokenClassification) rather than to the pooled output.
	tokenClassifier bool
}

// Backend is the backend the model's weights live on.
func (m *Model) Backend() nn.Backend { return m.be }

// Close frees the model's weights, once a Prepack under way has stopped.
func (m *Model) Close() {
	m.closing.Store(true)
	m.prepacking.Lock()
	defer m.prepacking.Unlock()
	m.weights.Close()
}

// Prepack does now, weight by weight, what the backend left for the first
// use of the linear layers (nn.Packer: the CPU backend's packing), so that
// no request waits for it: a server runs it in the background once the
// model is loaded. Forward may run meanwhile; Close stops it.
func (m *Model) Prepack() error {
	p, ok := m.be.(nn.Packer)
	if !ok {
		return nil
	}
	m.prepacking.Lock()
	defer m.prepacking.Unlock()
	var ws []*nn.Tensor
	for _, l := range m.layers {
		ws = append(ws, l.qkv.w, l.attnOut.w, l.inter.w, l.out.w)
	}
	for _, l := range []*linear{m.pooler, m.nsp, m.classifier} {
		if l != nil {
			ws = append(ws, l.w)
		}
	}
	if m.mlm != nil {
		ws = append(ws, m.mlm.transform.w, m.mlm.decoder.w)
	}
	for _, w := range ws {
		if m.closing.Load() {
			return nil
		}
		if err := p.Pack(w); err != nil {
			return err
		}
	}
	return nil
}

// HasMLM, HasNSP, HasPooler and HasClassifier report the heads present.
func (m *Model) HasMLM() bool        { return m.mlm != nil }
func (m *Model) HasNSP() bool        { return m.nsp != nil }
func (m *Model) HasPooler() bool     { return m.pooler != nil }
func (m *Model) HasClassifier() bool { return m.classifier != nil && !m.tokenClassifier }

// HasTokenClassifier reports a per-token classification head.
func (m *Model) HasTokenClassifier() bool { return m.classifier != nil && m.tokenClassifier }

// heads says which optional parts an architecture requires.
type heads struct {
	pooler, mlm, nsp, classifier, tokenClassifier bool
}

func archHeads(arch string) (heads, error) {
	switch arch {
	case "BertModel", "":
		return heads{}, nil
	case "BertForPreTraining":
		return heads{pooler: true, mlm: true, nsp: true}, nil
	case "BertForMaskedLM":
		return heads{mlm: true}, nil
	case "BertForNextSentencePrediction":
		return heads{pooler: true, nsp: true}, nil
	case "BertForSequenceClassification":
		return heads{pooler: true, classifier: true}, nil
	case "BertForTokenClassification":
		return heads{tokenClassifier: true}, nil
	}
	return heads{}, fmt.Errorf("architecture %q is not supported (BertModel, BertForPreTraining, BertForMaskedLM, BertForNextSentencePrediction, BertForSequenceClassification, BertForTokenClassification)", arch)
}

// tensorSet hands out named host tensors, checking shapes and recording
// which were used.
type tensorSet struct {
	src  map[string]*nn.Tensor
	used map[string]bool
}

func (ts *tensorSet) has(name string) bool { return ts.src[name] != nil }

// TensorError is a tensor of the checkpoint that is missing or does not
// fit the config. Name is the model's name for it, which a loader that
// renames tensors may set back to the file's.
type TensorError struct {
	Name string
	// Problem follows the name: "has shape [..], the config implies [..]".
	Problem string
}

func (e *TensorError) Error() string { return "tensor " + e.Name + " " + e.Problem }

func (ts *tensorSet) get(name string, shape ...int) (*nn.Tensor, error) {
	t := ts.src[name]
	if t == nil {
		return nil, &TensorError{name, fmt.Sprintf("%v is missing", shape)}
	}
	if !nn.SameShape(t.Shape(), shape) {
		return nil, &TensorError{name, fmt.Sprintf("has shape %v, the config implies %v", t.Shape(), shape)}
	}
	if t.DType() != nn.F32 {
		return nil, &TensorError{name, fmt.Sprintf("is %s; the model is built from F32 host tensors", t.DType())}
	}
	ts.used[name] = true
	return t, nil
}

// New builds a model on backend be from host F32 tensors named as in a
// Hugging Face BertForPreTraining checkpoint ("bert.embeddings...",
// "bert.encoder.layer.N...", "bert.pooler...", "cls.predictions...",
// "cls.seq_relationship...", "classifier..."). The architecture decides
// which heads must be present; other heads present are loaded as well.
// The tensors are copied to the backend: the caller keeps ownership of src.
func New(cfg Config, be nn.Backend, src map[string]*nn.Tensor) (m *Model, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	arch := cfg.Architecture()
	need, err := archHeads(arch)
	if err != nil {
		return nil, err
	}
	act, _ := cfg.Act()
	weights := nn.NewScope("weights")
	m = &Model{Config: cfg, Arch: arch, be: be, weights: weights, act: act, eps: float32(cfg.LayerNormEps)}
	// The error returns set m to nil before this runs: free through the
	// scope itself.
	defer func() {
		if err != nil {
			weights.Close()
		}
	}()
	ts := &tensorSet{src: src, used: map[string]bool{}}
	H, I, V := cfg.HiddenSize, cfg.IntermediateSize, cfg.VocabSize

	up := func(name string, shape ...int) (*nn.Tensor, error) {
		t, err := ts.get(name, shape...)
		if err != nil {
			return nil, err
		}
		return m.upload(name, t)
	}
	upLinear := func(prefix string, out, in int) (linear, error) {
		w, err := up(prefix+".weight", out, in)
		if err != nil {
			return linear{}, err
		}
		if err := be.PrepareWeight(w); err != nil {
			return linear{}, fmt.Errorf("prepare %s.weight: %w", prefix, err)
		}
		b, err := up(prefix+".bias", out)
		return linear{w, b}, err
	}
	upLN := func(prefix string) (layerNorm, error) {
		g, err := up(prefix+".weight", H)
		if err != nil {
			return layerNorm{}, err
		}
		b, err := up(prefix+".bias", H)
		return layerNorm{g, b}, err
	}

	if m.word, err = up("bert.embeddings.word_embeddings.weight", V, H); err != nil {
		return nil, err
	}
	if m.pos, err = up("bert.embeddings.position_embeddings.weight", cfg.MaxPositionEmbeddings, H); err != nil {
		return nil, err
	}
	if m.typ, err = up("bert.embeddings.token_type_embeddings.weight", cfg.TypeVocabSize, H); err != nil {
		return nil, err
	}
	if m.embLN, err = upLN("bert.embeddings.LayerNorm"); err != nil {
		return nil, err
	}
	for i := 0; i < cfg.NumHiddenLayers; i++ {
		p := fmt.Sprintf("bert.encoder.layer.%d.", i)
		var l layer
		if l.qkv, err = m.fuseQKV(ts, p+"attention.self.", H); err != nil {
			return nil, err
		}
		if l.attnOut, err = upLinear(p+"attention.output.dense", H, H); err != nil {
			return nil, err
		}
		if l.attnLN, err = upLN(p + "attention.output.LayerNorm"); err != nil {
			return nil, err
		}
		if l.inter, err = upLinear(p+"intermediate.dense", I, H); err != nil {
			return nil, err
		}
		if l.out, err = upLinear(p+"output.dense", H, I); err != nil {
			return nil, err
		}
		if l.outLN, err = upLN(p + "output.LayerNorm"); err != nil {
			return nil, err
		}
		m.layers = append(m.layers, l)
	}

	if need.pooler || ts.has("bert.pooler.dense.weight") {
		p, err := upLinear("bert.pooler.dense", H, H)
		if err != nil {
			return nil, err
		}
		m.pooler = &p
	}
	if need.mlm || ts.has("cls.predictions.transform.dense.weight") {
		var h mlmHead
		if h.transform, err = upLinear("cls.predictions.transform.dense", H, H); err != nil {
			return nil, err
		}
		if h.ln, err = upLN("cls.predictions.transform.LayerNorm"); err != nil {
			return nil, err
		}
		if ts.has("cls.predictions.decoder.weight") {
			if h.decoder.w, err = up("cls.predictions.decoder.weight", V, H); err != nil {
				return nil, err
			}
		} else {
			h.decoder.w = m.word // tied, as save_pretrained leaves it out
		}
		if err := be.PrepareWeight(h.decoder.w); err != nil {
			return nil, fmt.Errorf("prepare MLM decoder: %w", err)
		}
		biasName := "cls.predictions.bias"
		if !ts.has(biasName) && ts.has("cls.predictions.decoder.bias") {
			biasName = "cls.predictions.decoder.bias"
		}
		if h.decoder.b, err = up(biasName, V); err != nil {
			return nil, err
		}
		// Both names may be present and hold the same tied parameter.
		ts.used["cls.predictions.decoder.bias"] = true
		m.mlm = &h
	}
	if need.nsp || ts.has("cls.seq_relationship.weight") {
		if m.pooler == nil {
			return nil, fmt.Errorf("tensor bert.pooler.dense.weight is missing: the next-sentence head needs the pooler")
		}
		l, err := upLinear("cls.seq_relationship", 2, H)
		if err != nil {
			return nil, err
		}
		m.nsp = &l
	}
	if need.classifier || need.tokenClassifier || ts.has("classifier.weight") {
		labels, err := cfg.Labels()
		if err != nil {
			return nil, err
		}
		n := len(labels)
		if n == 0 {
			if w := src["classifier.weight"]; w != nil && w.Rank() == 2 {
				n = w.Dim(0)
			}
			labels, _ = (&Config{NumLabels: n}).Labels()
		}
		if n == 0 {
			return nil, fmt.Errorf("tensor classifier.weight is missing")
		}
		l, err := upLinear("classifier", n, H)
		if err != nil {
			return nil, fmt.Errorf("%w (config has %d labels)", err, n)
		}
		m.classifier = &l
		m.Labels = labels
		m.tokenClassifier = need.tokenClassifier
		if m.tokenClassifier == false && !need.classifier && m.pooler == nil {
			m.tokenClassifier = true // no pooler: only a per-token head makes sense
		}
		if !m.tokenClassifier && m.pooler == nil {
			return nil, fmt.Errorf("tensor bert.pooler.dense.weight is missing: the sequence classifier needs the pooler")
		}
	}
	if m.Arch == "" {
		m.Arch = inferArch(m)
	}

	var unknown []string
	for name := range src {
		if ts.used[name] {
			continue
		}
		if strings.HasSuffix(name, "position_ids") {
			m.Ignored = append(m.Ignored, name)
			continue
		}
		if strings.HasPrefix(name, "bert.") {
			unknown = append(unknown, name)
			continue
		}
		m.Ignored = append(m.Ignored, name)
	}
	sort.Strings(m.Ignored)
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("tensor %s is not part of a %d-layer BERT (%d unexpected encoder tensors): does config.json match the checkpoint?", unknown[0], cfg.NumHiddenLayers, len(unknown))
	}
	return m, nil
}

func inferArch(m *Model) string {
	switch {
	case m.mlm != nil && m.nsp != nil:
		return "BertForPreTraining"
	case m.mlm != nil:
		return "BertForMaskedLM"
	case m.nsp != nil:
		return "BertForNextSentencePrediction"
	case m.classifier != nil && m.tokenClassifier:
		return "BertForTokenClassification"
	case m.classifier != nil:
		return "BertForSequenceClassification"
	}
	return "BertModel"
}

func (m *Model) upload(name string, t *nn.Tensor) (*nn.Tensor, error) {
	d, err := m.be.Upload(m.weights, t, m.be.Compute())
	if err != nil {
		return nil, fmt.Errorf("upload %s: %w", name, err)
	}
	return d, nil
}

// fuseQKV concatenates the query, key and value projections into one
// [3H, H] linear layer, so that attention's input is one GEMM. A backend
// that can (nn.RowFuser: the CPU) makes the fused weight from the three
// tensors without a concatenated copy.
func (m *Model) fuseQKV(ts *tensorSet, prefix string, H int) (linear, error) {
	host := nn.NewScope("qkv")
	defer host.Close()
	b := nn.NewHost(host, nn.F32, 3*H)
	ws := make([]*nn.Tensor, 3)
	for i, part := range []string{"query", "key", "value"} {
		pw, err := ts.get(prefix+part+".weight", H, H)
		if err != nil {
			return linear{}, err
		}
		pb, err := ts.get(prefix+part+".bias", H)
		if err != nil {
			return linear{}, err
		}
		ws[i] = pw
		copy(b.F32()[i*H:], pb.F32())
	}
	var dw *nn.Tensor
	if f, ok := m.be.(nn.RowFuser); ok {
		var err error
		if dw, err = f.FuseRows(m.weights, ws...); err != nil {
			return linear{}, fmt.Errorf("fuse %s{query,key,value}.weight: %w", prefix, err)
		}
	} else {
		w := nn.NewHost(host, nn.F32, 3*H, H)
		for i, pw := range ws {
			copy(w.F32()[i*H*H:], pw.F32())
		}
		var err error
		if dw, err = m.upload(prefix+"{query,key,value}.weight", w); err != nil {
			return linear{}, err
		}
	}
	if err := m.be.PrepareWeight(dw); err != nil {
		return linear{}, fmt.Errorf("prepare %s: %w", prefix+"qkv", err)
	}
	db, err := m.upload(prefix+"{query,key,value}.bias", b)
	return linear{dw, db}, err
}

// RandomTensors makes host tensors with BERT's initialisation (normal with
// std 0.02, LayerNorm at 1 and 0, zero biases perturbed slightly) for the
// architecture of cfg, named as New expects; for benchmarks and tests of
// shapes no checkpoint has.
func RandomTensors(s *nn.Scope, cfg Config, seed int64) (map[string]*nn.Tensor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	need, err := archHeads(cfg.Architecture())
	if err != nil {
		return nil, err
	}
	r := rand.New(rand.NewSource(seed))
	H, I, V := cfg.HiddenSize, cfg.IntermediateSize, cfg.VocabSize
	out := map[string]*nn.Tensor{}
	normal := func(name string, std float64, mean float64, shape ...int) {
		t := nn.NewHost(s, nn.F32, shape...)
		for i := range t.F32() {
			t.F32()[i] = float32(mean + std*r.NormFloat64())
		}
		out[name] = t
	}
	lin := func(p string, o, i int) {
		normal(p+".weight", 0.02, 0, o, i)
		normal(p+".bias", 0.02, 0, o)
	}
	ln := func(p string) {
		normal(p+".weight", 0.02, 1, H)
		normal(p+".bias", 0.02, 0, H)
	}
	normal("bert.embeddings.word_embeddings.weight", 0.02, 0, V, H)
	normal("bert.embeddings.position_embeddings.weight", 0.02, 0, cfg.MaxPositionEmbeddings, H)
	normal("bert.embeddings.token_type_embeddings.weight", 0.02, 0, cfg.TypeVocabSize, H)
	ln("bert.embeddings.LayerNorm")
	for i := 0; i < cfg.NumHiddenLayers; i++ {
		p := fmt.Sprintf("bert.encoder.layer.%d.", i)
		for _, part := range []string{"query", "key", "value"} {
			lin(p+"attention.self."+part, H, H)
		}
		lin(p+"attention.output.dense", H, H)
		ln(p + "attention.output.LayerNorm")
		lin(p+"intermediate.dense", I, H)
		lin(p+"output.dense", H, I)
		ln(p + "output.LayerNorm")
	}
	if need.pooler || cfg.Architecture() == "BertModel" {
		lin("bert.pooler.dense", H, H)
	}
	if need.mlm {
		lin("cls.predictions.transform.dense", H, H)
		ln("cls.predictions.transform.LayerNorm")
		normal("cls.predictions.bias", 0.02, 0, V)
	}
	if need.nsp {
		lin("cls.seq_relationship", 2, H)
	}
	if need.classifier || need.tokenClassifier {
		labels, _ := cfg.Labels()
		n := len(labels)
		if n == 0 {
			n = 2
		}
		lin("classifier", n, H)
	}
	return out, nil
}

// NewRandom builds a model of cfg's shape with random weights on be.
func NewRandom(cfg Config, be nn.Backend, seed int64) (*Model, error) {
	host := nn.NewScope("random-weights")
	defer host.Close()
	ts, err := RandomTensors(host, cfg, seed)
	if err != nil {
		return nil, err
	}
	return New(cfg, be, ts)
}
