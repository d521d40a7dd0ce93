package bert

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/bertstream/bertstream/bert/task"
	"github.com/bertstream/bertstream/bert/tokenize"
	"github.com/bertstream/bertstream/nn"
)

// Predictor implements the task contract that the pipeline serves.
var _ task.Predictor = (*Predictor)(nil)

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", task.ErrBadRequest, fmt.Sprintf(format, args...))
}

func (p *Predictor) tooLong(r task.Request) error {
	_, a := p.Tok.Tokenize(r.Text)
	n := len(a) + 2
	if r.HasPair {
		_, pb := p.Tok.Tokenize(r.TextPair)
		n += len(pb) + 1
	}
	return fmt.Errorf("%w: %w: text is %d tokens, the limit is %d", task.ErrBadRequest, task.ErrTooLong, n, p.maxLen)
}

// ClassifyResult is the answer of classify.
type ClassifyResult struct {
	Label  string             `json:"label"`
	Score  float64            `json:"score"`
	Scores map[string]float64 `json:"scores"`
}

// TokenScore is one candidate for a masked position.
type TokenScore struct {
	Token string  `json:"token"`
	ID    int32   `json:"id"`
	Score float64 `json:"score"`
}

// MaskResult is the candidates for one [MASK].
type MaskResult struct {
	// Position is the token index of the [MASK] in the encoded sequence
	// ([CLS] is 0).
	Position int          `json:"position"`
	Top      []TokenScore `json:"top"`
}

// FillMaskResult is the answer of fill-mask: one entry per [MASK], in order.
type FillMaskResult struct {
	Masks []MaskResult `json:"masks"`
}

// NSPResult is the answer of nsp.
type NSPResult struct {
	// IsNext is the probability that the pair's second text follows the
	// first (BERT's NSP label 0).
	IsNext float64    `json:"is_next"`
	Logits [2]float64 `json:"logits"`
}

// EmbedResult is the answer of embed.
type EmbedResult struct {
	Pooling   string    `json:"pooling"`
	Normalize bool      `json:"normalized"`
	Embedding []float32 `json:"embedding"`
}

// PredictorOptions tune a Predictor.
type PredictorOptions struct {
	// MaxLen caps tokens per sequence (specials included); 0 means the
	// model's limit.
	MaxLen int
	// Truncate cuts texts over MaxLen (longest first) instead of refusing
	// them.
	Truncate bool
}

// Predictor answers task requests with a model and its tokenizer. It is
// safe for concurrent use if the backend is.
type Predictor struct {
	Model *Model
	Tok   *tokenize.Tokenizer
	// ModelName identifies the model in responses.
	ModelName string
	maxLen    int
	truncate  bool
}

// NewPredictor pairs a model with its tokenizer.
func NewPredictor(m *Model, tok *tokenize.Tokenizer, name string, opts PredictorOptions) (*Predictor, error) {
	if tok.VocabSize() > m.Config.VocabSize {
		return nil, fmt.Errorf("tokenizer has %d ids, the model's vocabulary only %d", tok.VocabSize(), m.Config.VocabSize)
	}
	maxLen := min(m.Config.MaxPositionEmbeddings, tok.MaxLen())
	if opts.MaxLen > 0 {
		maxLen = min(maxLen, opts.MaxLen)
	}
	return &Predictor{Model: m, Tok: tok, ModelName: name, maxLen: maxLen, truncate: opts.Truncate}, nil
}

// Name identifies the model.
func (p *Predictor) Name() string { return p.ModelName }

// MaxLen is the token limit per sequence.
func (p *Predictor) MaxLen() int { return p.maxLen }

// Tasks lists the tasks this model's heads support.
func (p *Predictor) Tasks() []string {
	t := []string{}
	if p.Model.HasClassifier() {
		t = append(t, task.Classify)
	}
	if p.Model.HasMLM() {
		t = append(t, task.FillMask)
	}
	if p.Model.HasNSP() {
		t = append(t, task.NSP)
	}
	return append(t, task.Embed)
}

func (p *Predictor) supports(name string) bool {
	for _, t := range p.Tasks() {
		if t == name {
			return true
		}
	}
	return false
}

// check validates a request without running the model.
func (p *Predictor) check(r task.Request) error {
	if !p.supports(r.Task) {
		if r.Task == "" {
			return badRequest("no task given (model %s supports %s)", p.ModelName, strings.Join(p.Tasks(), ", "))
		}
		return badRequest("task %q is not supported by model %s (supports %s)", r.Task, p.ModelName, strings.Join(p.Tasks(), ", "))
	}
	if !utf8.ValidString(r.Text) || !utf8.ValidString(r.TextPair) {
		return badRequest("text is not valid UTF-8")
	}
	if strings.TrimSpace(r.Text) == "" {
		return badRequest("text is empty")
	}
	if r.HasPair && strings.TrimSpace(r.TextPair) == "" {
		return badRequest("text_pair is empty")
	}
	if r.Task == task.NSP && !r.HasPair {
		return badRequest("nsp needs a text_pair")
	}
	if r.Task == task.Embed {
		if _, err := parsePooling(r.Pooling); err != nil {
			return err
		}
	}
	if r.TopK < 0 || r.TopK > 1000 {
		return badRequest("top_k %d outside 1..1000", r.TopK)
	}
	return nil
}

func parsePooling(s string) (nn.Pooling, error) {
	switch s {
	case "", "mean":
		return nn.PoolMean, nil
	case "cls":
		return nn.PoolCLS, nil
	case "max":
		return nn.PoolMax, nil
	}
	return 0, badRequest("pooling %q is not cls, mean or max", s)
}

// CountTokens is the number of tokens r becomes, specials included, after
// truncation when the predictor truncates; a request that is invalid or
// too long gets its error instead.
func (p *Predictor) CountTokens(r task.Request) (int, error) {
	if err := p.check(r); err != nil {
		return 0, err
	}
	b, err := p.Tok.Encode([]tokenize.Input{{Text: r.Text, Pair: r.TextPair, HasPair: r.HasPair}}, p.maxLen)
	if err != nil {
		return 0, badRequest("%v", err)
	}
	if b.Truncated[0] && !p.truncate {
		return 0, p.tooLong(r)
	}
	return b.Lengths[0], nil
}

// Predict answers every request, one result per request in order. Requests
// of one task run as one batch.
func (p *Predictor) Predict(ctx context.Context, reqs []task.Request) []task.Result {
	res := make([]task.Result, len(reqs))
	groups := map[string][]int{}
	for i, r := range reqs {
		if err := p.check(r); err != nil {
			res[i].Err = err
			continue
		}
		key := r.Task
		if r.Task == task.Embed {
			key += "/" + r.Pooling
		}
		groups[key] = append(groups[key], i)
	}
	keys := make([]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		idx := groups[k]
		if err := ctx.Err(); err != nil {
			for _, i := range idx {
				res[i].Err = err
			}
			continue
		}
		idx, b, err := p.encode(reqs, idx, res)
		if len(idx) == 0 {
			continue
		}
		var vals []any
		if err == nil {
			vals, err = p.run(reqs, idx, b)
		}
		for j, i := range idx {
			if err != nil {
				res[i].Err = err
			} else {
				res[i].Value = vals[j]
			}
		}
	}
	return res
}

// encode tokenizes the requests idx as one batch. A predictor that
// refuses over-long texts gives those requests ErrTooLong in res and
// leaves them out: the batch is then encoded again without them, which
// only bad requests cost.
func (p *Predictor) encode(reqs []task.Request, idx []int, res []task.Result) ([]int, *tokenize.Batch, error) {
	in := make([]tokenize.Input, len(idx))
	for j, i := range idx {
		in[j] = tokenize.Input{Text: reqs[i].Text, Pair: reqs[i].TextPair, HasPair: reqs[i].HasPair}
	}
	b, err := p.Tok.Encode(in, p.maxLen)
	if err != nil || p.truncate {
		return idx, b, err
	}
	kept := idx[:0:0]
	for j, i := range idx {
		if b.Truncated[j] {
			res[i].Err = p.tooLong(reqs[i])
			continue
		}
		kept = append(kept, i)
	}
	if len(kept) == len(idx) || len(kept) == 0 {
		return kept, b, nil
	}
	return p.encode(reqs, kept, res)
}

// run computes one task for the requests idx (all valid, same task),
// encoded as b.
func (p *Predictor) run(reqs []task.Request, idx []int, b *tokenize.Batch) ([]any, error) {
	name := reqs[idx[0]].Task
	inputs := Inputs{IDs: b.IDs, TypeIDs: b.TypeIDs, Mask: b.Mask, B: b.B, T: b.T}
	var want Want
	var maskRows []int32
	switch name {
	case task.Classify:
		want.Classify = true
	case task.NSP:
		want.NSP = true
	case task.Embed:
		pool, _ := parsePooling(reqs[idx[0]].Pooling)
		want.Sentence, want.SentencePooling = true, pool
	case task.FillMask:
		mask := p.Tok.Special().MASK
		for i, id := range b.IDs {
			if id == mask && b.Mask[i] == 1 {
				maskRows = append(maskRows, int32(i))
			}
		}
		want.MLM, want.MLMRows = true, maskRows
		if len(maskRows) == 0 {
			// Nothing to predict anywhere: every request gets an empty list.
			vals := make([]any, len(idx))
			for j := range vals {
				vals[j] = FillMaskResult{Masks: []MaskResult{}}
			}
			return vals, nil
		}
	}
	m := p.Model
	s := nn.NewScope("predict")
	defer s.Close()
	out, err := m.Forward(s, inputs, want)
	if err != nil {
		return nil, err
	}
	be := m.Backend()
	host := s.Child("host")
	down := func(t *nn.Tensor) ([]float32, error) {
		h, err := be.Download(host, t, nn.F32)
		if err != nil {
			return nil, err
		}
		return h.F32(), nil
	}
	vals := make([]any, len(idx))
	switch name {
	case task.Classify:
		logits, err := down(out.Logits)
		if err != nil {
			return nil, err
		}
		L := len(m.Labels)
		for j := range idx {
			probs := softmax(logits[j*L : (j+1)*L])
			r := ClassifyResult{Scores: map[string]float64{}}
			for k, pr := range probs {
				r.Scores[m.Labels[k]] = pr
				if k == 0 || pr > r.Score {
					r.Label, r.Score = m.Labels[k], pr
				}
			}
			vals[j] = r
		}
	case task.NSP:
		logits, err := down(out.NSPLogits)
		if err != nil {
			return nil, err
		}
		for j := range idx {
			probs := softmax(logits[2*j : 2*j+2])
			vals[j] = NSPResult{IsNext: probs[0], Logits: [2]float64{float64(logits[2*j]), float64(logits[2*j+1])}}
		}
	case task.Embed:
		emb, err := down(out.Sentence)
		if err != nil {
			return nil, err
		}
		H := m.Config.HiddenSize
		for j, i := range idx {
			v := append([]float32(nil), emb[j*H:(j+1)*H]...)
			if reqs[i].Normalize {
				var ss float64
				for _, x := range v {
					ss += float64(x) * float64(x)
				}
				if ss > 0 {
					inv := float32(1 / math.Sqrt(ss))
					for k := range v {
						v[k] *= inv
					}
				}
			}
			pool, _ := parsePooling(reqs[i].Pooling)
			vals[j] = EmbedResult{Pooling: pool.String(), Normalize: reqs[i].Normalize, Embedding: v}
		}
	case task.FillMask:
		logits, err := down(out.MLMLogits)
		if err != nil {
			return nil, err
		}
		V := m.Config.VocabSize
		results := make([]FillMaskResult, len(idx))
		for j := range results {
			results[j].Masks = []MaskResult{}
		}
		for n, row := range maskRows {
			j, pos := int(row)/b.T, int(row)%b.T
			k := reqs[idx[j]].TopK
			if k == 0 {
				k = 5
			}
			probs := softmax(logits[n*V : (n+1)*V])
			top := TopK(probs, k)
			mr := MaskResult{Position: pos}
			for _, id := range top {
				mr.Top = append(mr.Top, TokenScore{Token: p.Tok.IDToToken(int32(id)), ID: int32(id), Score: probs[id]})
			}
			results[j].Masks = append(results[j].Masks, mr)
		}
		for j := range results {
			vals[j] = results[j]
		}
	}
	return vals, nil
}

// softmax in float64, stable against large logits.
func softmax(x []float32) []float64 {
	m := math.Inf(-1)
	for _, v := range x {
		m = math.Max(m, float64(v))
	}
	out := make([]float64, len(x))
	var s float64
	for i, v := range x {
		out[i] = math.Exp(float64(v) - m)
		s += out[i]
	}
	for i := range out {
		out[i] /= s
	}
	return out
}

// TopK returns the indexes of the k largest values of x, largest first
// (ties: lower index first).
func TopK[T cmp.Ordered](x []T, k int) []int {
	k = min(k, len(x))
	if k <= 0 {
		return nil
	}
	idx := make([]int, 0, k+1)
	for i, v := range x {
		if len(idx) == k && v <= x[idx[k-1]] {
			continue
		}
		pos := sort.Search(len(idx), func(j int) bool { return x[idx[j]] < v })
		idx = append(idx, 0)
		copy(idx[pos+1:], idx[pos:])
		idx[pos] = i
		if len(idx) > k {
			idx = idx[:k]
		}
	}
	return idx
}
