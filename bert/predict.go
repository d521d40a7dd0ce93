package bert

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
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

// ClassifyResult is the answer of classify. Scores are the logits through
// Function, the function transformers' text-classification pipeline
// applies for the model's problem_type and number of labels: softmax over
// the labels, a sigmoid per label (multi-label models, and one-label
// models such as cross-encoders), or none (regression: the raw score).
type ClassifyResult struct {
	Label    string             `json:"label"`
	Score    float64            `json:"score"`
	Scores   map[string]float64 `json:"scores"`
	Logits   []float64          `json:"logits"`
	Function string             `json:"function"`
}

// Ranked is one passage of a rerank answer.
type Ranked struct {
	// Index is the passage's position in the request.
	Index int `json:"index"`
	// Score is the sigmoid of the logit, as a cross-encoder's relevance.
	Score float64 `json:"score"`
	Logit float64 `json:"logit"`
	Text  string  `json:"text,omitempty"`
}

// RerankResult is the answer of rerank: the passages, most relevant first.
type RerankResult struct {
	Ranking []Ranked `json:"ranking"`
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

// EmbedResult is the answer of embed: Pooling and Normalize say what was
// done, whether the request or the model's sentence-transformers files
// chose it.
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
	// Sentence, when set, is the model's sentence-transformers settings:
	// embed's defaults.
	Sentence *SentenceConfig
}

// Predictor answers task requests with a model and its tokenizer. It is
// safe for concurrent use if the backend is.
type Predictor struct {
	Model *Model
	Tok   *tokenize.Tokenizer
	// ModelName identifies the model in responses.
	ModelName string
	// Dir is the model directory as the user gave it, for messages.
	Dir      string
	maxLen   int
	truncate bool
	sentence *SentenceConfig
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
	if st := opts.Sentence; st != nil && !validPooling(st.Pooling) {
		return nil, fmt.Errorf("sentence-transformers pooling %q is not one of %s", st.Pooling, strings.Join(Poolings, ", "))
	}
	return &Predictor{Model: m, Tok: tok, ModelName: name, maxLen: maxLen, truncate: opts.Truncate, sentence: opts.Sentence}, nil
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
		if len(p.Model.Labels) == 1 {
			t = append(t, task.Rerank)
		}
	}
	if p.Model.HasTokenClassifier() {
		t = append(t, task.NER)
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

// UnsupportedTask is the error for a task the model does not serve: it
// names the model and the tasks it does serve.
func (p *Predictor) UnsupportedTask(name string) error {
	model := "model " + p.ModelName
	if p.Dir != "" {
		model = "model directory " + p.Dir
	}
	if name == "" {
		return badRequest("no task given (%s supports %s)", model, strings.Join(p.Tasks(), ", "))
	}
	return badRequest("task %q is not supported by %s (supports %s)", name, model, strings.Join(p.Tasks(), ", "))
}

// maxPassages bounds one rerank request; a larger set is split by the
// client, which also bounds what one bad request costs.
const maxPassages = 1000

// check validates a request, whose task is canonical, without running the
// model.
func (p *Predictor) check(r task.Request) error {
	if !p.supports(r.Task) {
		return p.UnsupportedTask(r.Task)
	}
	if !utf8.ValidString(r.Text) || !utf8.ValidString(r.TextPair) || !utf8.ValidString(r.Query) {
		return badRequest("text is not valid UTF-8")
	}
	if r.Task == task.Rerank {
		if strings.TrimSpace(r.Query) == "" {
			return badRequest("rerank needs a query")
		}
		if len(r.Passages) == 0 || len(r.Passages) > maxPassages {
			return badRequest("rerank needs 1 to %d passages, has %d", maxPassages, len(r.Passages))
		}
		for i, ps := range r.Passages {
			if !utf8.ValidString(ps) {
				return badRequest("passage %d is not valid UTF-8", i)
			}
			if strings.TrimSpace(ps) == "" {
				return badRequest("passage %d is empty", i)
			}
		}
		return nil
	}
	if strings.TrimSpace(r.Text) == "" {
		return badRequest("text is empty")
	}
	if r.HasPair && strings.TrimSpace(r.TextPair) == "" {
		return badRequest("text_pair is empty")
	}
	switch r.Task {
	case task.NSP:
		if !r.HasPair {
			return badRequest("nsp needs a text_pair")
		}
	case task.NER:
		if r.HasPair {
			return badRequest("ner takes one text, not a text_pair")
		}
		if r.Aggregation != "" && !slices.Contains(Aggregations, r.Aggregation) {
			return badRequest("aggregation %q is not one of %s", r.Aggregation, strings.Join(Aggregations, ", "))
		}
	case task.Embed:
		if r.Pooling != "" && !validPooling(r.Pooling) {
			return badPooling(r.Pooling)
		}
	}
	if r.TopK < 0 || r.TopK > 1000 {
		return badRequest("top_k %d outside 1..1000", r.TopK)
	}
	return nil
}

// embedSettings resolves embed's pooling and normalisation: the request's
// where it chose, else the sentence-transformers files', else mean and no
// normalisation.
func (p *Predictor) embedSettings(r task.Request) (string, bool) {
	pool, norm := PoolMean, false
	if p.sentence != nil {
		pool, norm = p.sentence.Pooling, p.sentence.Normalize
	}
	if r.Pooling != "" {
		pool = r.Pooling
	}
	if r.Normalize || r.HasNormalize {
		norm = r.Normalize
	}
	return pool, norm
}

// limit is the token limit of a task: embed on a sentence-transformers
// model also keeps to its max_seq_length.
func (p *Predictor) limit(name string) int {
	if name == task.Embed && p.sentence != nil && p.sentence.MaxSeqLength > 0 {
		return min(p.maxLen, p.sentence.MaxSeqLength)
	}
	return p.maxLen
}

// inputs are the rows a request becomes: one, or a rerank request's
// (query, passage) pairs.
func (p *Predictor) inputs(r task.Request) []tokenize.Input {
	if r.Task == task.Rerank {
		in := make([]tokenize.Input, len(r.Passages))
		for i, ps := range r.Passages {
			in[i] = tokenize.Input{Text: r.Query, Pair: ps, HasPair: true}
		}
		return in
	}
	text := r.Text
	if r.Task == task.Embed && p.sentence != nil && p.sentence.Lowercase {
		text = strings.ToLower(text)
	}
	return []tokenize.Input{{Text: text, Pair: r.TextPair, HasPair: r.HasPair}}
}

// prepared is Prepare's work on a request: its rows, tokenized.
type prepared struct {
	p *Predictor
	// r is the request as prepared, for telling a stale preparation.
	r  task.Request
	in []tokenize.Input
}

// Prepare tokenizes r's rows ahead of its batch (task.Preparer).
func (p *Predictor) Prepare(r task.Request) task.Request {
	c := canonical(r)
	if p.check(c) != nil {
		return r
	}
	in := p.inputs(c)
	for i := range in {
		in[i] = p.Tok.Pretokenize(in[i])
	}
	c.Prepared = nil
	// The copy kept for telling a stale preparation must not share the
	// caller's passages, which could change in place.
	c.Passages = slices.Clone(c.Passages)
	r.Prepared = &prepared{p: p, r: c, in: in}
	return r
}

// rows are the rows r becomes, tokenized already when r was prepared by p
// and has not changed since. r is canonical.
func (p *Predictor) rows(r task.Request) []tokenize.Input {
	if pr, ok := r.Prepared.(*prepared); ok && pr.p == p && sameRequest(pr.r, r) {
		return pr.in
	}
	return p.inputs(r)
}

// sameRequest compares what a request's rows are made of.
func sameRequest(a, b task.Request) bool {
	return a.Task == b.Task && a.Text == b.Text && a.TextPair == b.TextPair && a.HasPair == b.HasPair &&
		a.Query == b.Query && slices.Equal(a.Passages, b.Passages)
}

// truncates says whether a task cuts over-long texts: when the predictor
// does, and always for embed on a sentence-transformers model, which
// truncates to its max_seq_length as sentence-transformers does.
func (p *Predictor) truncates(name string) bool {
	return p.truncate || name == task.Embed && p.sentence != nil && p.sentence.MaxSeqLength > 0
}

func canonical(r task.Request) task.Request {
	r.Task = task.Canonical(r.Task)
	return r
}

// CountTokens is the number of tokens r becomes, specials included, after
// truncation when the predictor truncates; a request that is invalid or
// too long gets its error instead. A rerank request costs all its pairs.
func (p *Predictor) CountTokens(r task.Request) (int, error) {
	r = canonical(r)
	if err := p.check(r); err != nil {
		return 0, err
	}
	b, err := p.Tok.Encode(p.rows(r), p.limit(r.Task))
	if err != nil {
		return 0, badRequest("%v", err)
	}
	n := 0
	for i, l := range b.Lengths {
		if b.Truncated[i] && !p.truncates(r.Task) {
			return 0, p.tooLong(r, i)
		}
		n += l
	}
	return n, nil
}

func (p *Predictor) tooLong(r task.Request, row int) error {
	in := p.inputs(r)[row]
	_, a := p.Tok.Tokenize(in.Text)
	n := len(a) + 2
	if in.HasPair {
		_, pb := p.Tok.Tokenize(in.Pair)
		n += len(pb) + 1
	}
	what := "text"
	if r.Task == task.Rerank {
		what = fmt.Sprintf("query and passage %d", row)
	}
	return fmt.Errorf("%w: %w: %s is %d tokens, the limit is %d", task.ErrBadRequest, task.ErrTooLong, what, n, p.limit(r.Task))
}

// Predict answers every request, one result per request in order. Requests
// of one task (and, for embed, one pooling) run as one batch.
func (p *Predictor) Predict(ctx context.Context, reqs []task.Request) []task.Result {
	res := make([]task.Result, len(reqs))
	reqs = slices.Clone(reqs)
	groups := map[string][]int{}
	for i := range reqs {
		reqs[i] = canonical(reqs[i])
		r := reqs[i]
		if err := p.check(r); err != nil {
			res[i].Err = err
			continue
		}
		key := r.Task
		if r.Task == task.Embed {
			pool, _ := p.embedSettings(r)
			key += "/" + pool
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
		idx, b, rows, err := p.encode(reqs, idx, res)
		if len(idx) == 0 {
			continue
		}
		var vals []any
		if err == nil {
			vals, err = p.run(reqs, idx, b, rows)
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

// encode tokenizes the requests idx as one batch; rows[j] is the first row
// of request idx[j] (a rerank request has one row per passage). A
// predictor that refuses over-long texts gives those requests ErrTooLong
// in res and leaves them out: the batch is then encoded again without
// them, which only bad requests cost.
func (p *Predictor) encode(reqs []task.Request, idx []int, res []task.Result) ([]int, *tokenize.Batch, []int, error) {
	var in []tokenize.Input
	rows := make([]int, len(idx)+1)
	for j, i := range idx {
		rows[j] = len(in)
		in = append(in, p.rows(reqs[i])...)
	}
	rows[len(idx)] = len(in)
	b, err := p.Tok.Encode(in, p.limit(reqs[idx[0]].Task))
	if err != nil || p.truncates(reqs[idx[0]].Task) {
		return idx, b, rows, err
	}
	kept := idx[:0:0]
	for j, i := range idx {
		bad := -1
		for row := rows[j]; row < rows[j+1] && bad < 0; row++ {
			if b.Truncated[row] {
				bad = row - rows[j]
			}
		}
		if bad >= 0 {
			res[i].Err = p.tooLong(reqs[i], bad)
			continue
		}
		kept = append(kept, i)
	}
	if len(kept) == len(idx) || len(kept) == 0 {
		return kept, b, rows, nil
	}
	return p.encode(reqs, kept, res)
}

// run computes one task for the requests idx (all valid, same task),
// encoded as b, request idx[j] from row rows[j].
func (p *Predictor) run(reqs []task.Request, idx []int, b *tokenize.Batch, rows []int) ([]any, error) {
	name := reqs[idx[0]].Task
	inputs := Inputs{IDs: b.IDs, TypeIDs: b.TypeIDs, Mask: b.Mask, B: b.B, T: b.T}
	var want Want
	var maskRows []int32
	pool, _ := p.embedSettings(reqs[idx[0]])
	switch name {
	case task.Classify, task.Rerank:
		want.Classify = true
	case task.NER:
		want.TokenClassify = true
	case task.NSP:
		want.NSP = true
	case task.Embed:
		if kernel, ok := backendPooling(pool); ok {
			want.Sentence, want.SentencePooling = true, kernel
		}
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
	case task.Classify, task.Rerank:
		logits, err := down(out.Logits)
		if err != nil {
			return nil, err
		}
		L := len(m.Labels)
		for j, i := range idx {
			if name == task.Rerank {
				vals[j] = rerank(reqs[i], logits[rows[j]:rows[j+1]])
				continue
			}
			vals[j] = p.classify(logits[rows[j]*L : (rows[j]+1)*L])
		}
	case task.NER:
		logits, err := down(out.TokenLogits)
		if err != nil {
			return nil, err
		}
		L := len(m.Labels)
		for j, i := range idx {
			r := reqs[i]
			toks := p.Tok.TokenizeOffsets(r.Text)
			row := rows[j]
			// Encode cut the same tokens from the end when it truncated.
			toks = toks[:b.Lengths[row]-2]
			for k, tk := range toks {
				if tk.ID != b.IDs[row*b.T+k+1] {
					return nil, fmt.Errorf("ner: token %d of %q is %d with offsets, %d encoded", k, r.Text, tk.ID, b.IDs[row*b.T+k+1])
				}
			}
			agg := r.Aggregation
			if agg == "" {
				agg = AggNone
			}
			ents := nerEntities(r.Text, toks, logits[row*b.T*L:(row+1)*b.T*L], m.Labels, p.Tok.Special(), agg)
			vals[j] = NERResult{Aggregation: agg, Entities: ents}
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
		H := m.Config.HiddenSize
		var emb, seq []float32
		if want.Sentence {
			emb, err = down(out.Sentence)
		} else {
			seq, err = down(out.Sequence)
		}
		if err != nil {
			return nil, err
		}
		for j, i := range idx {
			var v []float32
			if want.Sentence {
				v = append([]float32(nil), emb[j*H:(j+1)*H]...)
			} else {
				v = hostPool(pool, seq, j, b.T, H, b.Lengths[j])
			}
			if pool == PoolMeanSqrtLen {
				// sentence-transformers divides the sum by the square root
				// of the length: the mean times that root.
				f := float32(math.Sqrt(float64(b.Lengths[j])))
				for k := range v {
					v[k] *= f
				}
			}
			_, norm := p.embedSettings(reqs[i])
			if norm {
				normalize(v)
			}
			vals[j] = EmbedResult{Pooling: pool, Normalize: norm, Embedding: v}
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

// classify turns one row of logits into scores with the function
// transformers' pipeline uses for this model.
func (p *Predictor) classify(logits []float32) ClassifyResult {
	m := p.Model
	fn := m.Config.ClassifyFunction(len(m.Labels))
	r := ClassifyResult{Scores: map[string]float64{}, Function: fn, Logits: make([]float64, len(logits))}
	for k, l := range logits {
		r.Logits[k] = float64(l)
	}
	var scores []float64
	switch fn {
	case FuncSoftmax:
		scores = softmax(logits)
	case FuncSigmoid:
		scores = make([]float64, len(logits))
		for k, l := range r.Logits {
			scores[k] = sigmoid(l)
		}
	default:
		scores = r.Logits
	}
	for k, sc := range scores {
		r.Scores[m.Labels[k]] = sc
		if k == 0 || sc > r.Score {
			r.Label, r.Score = m.Labels[k], sc
		}
	}
	return r
}

// rerank orders a request's passages by their logits, most relevant first
// (ties: the earlier passage first).
func rerank(r task.Request, logits []float32) RerankResult {
	out := make([]Ranked, len(logits))
	for i, l := range logits {
		out[i] = Ranked{Index: i, Logit: float64(l), Score: sigmoid(float64(l))}
		if r.ReturnText {
			out[i].Text = r.Passages[i]
		}
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].Logit > out[b].Logit })
	return RerankResult{Ranking: out}
}

func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

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
