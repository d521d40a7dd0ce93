package api

import (
	"encoding/json"
	"net/http"
	"sort"
	"strconv"

	"github.com/bertstream/bertstream/bert/task"
)

// texts reads "inputs" as one string or a list of them.
func (s *Server) texts(raw json.RawMessage) (texts []string, single bool, err error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, false, invalid("field \"inputs\" is missing")
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}, true, nil
	}
	if err := json.Unmarshal(raw, &texts); err != nil {
		return nil, false, invalid("field \"inputs\" is neither a string nor a list of strings")
	}
	return texts, false, s.count(len(texts))
}

func (s *Server) count(n int) error {
	if n == 0 {
		return invalid("field \"inputs\" is an empty list")
	}
	if n > s.o.MaxInputs {
		return invalid("batch size %d > maximum allowed batch size %d", n, s.o.MaxInputs)
	}
	return nil
}

// pairs reads "inputs" as TEI's predict does: a string, a pair of
// strings, or a list of single strings and pairs (each a list).
func (s *Server) pairs(raw json.RawMessage) (in [][]string, single bool, err error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, false, invalid("field \"inputs\" is missing")
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return [][]string{{one}}, true, nil
	}
	var pair []string
	if json.Unmarshal(raw, &pair) == nil {
		if len(pair) == 0 {
			return nil, false, s.count(0)
		}
		if len(pair) != 2 {
			return nil, false, invalid("field \"inputs\": a list of strings is a pair and has 2 of them, not %d (a batch is a list of lists)", len(pair))
		}
		return [][]string{pair}, true, nil
	}
	if err := json.Unmarshal(raw, &in); err != nil {
		return nil, false, invalid("field \"inputs\" is neither a string, a pair of strings nor a list of them")
	}
	for i, p := range in {
		if len(p) != 1 && len(p) != 2 {
			return nil, false, invalid("input %d has %d strings: one text or a pair", i, len(p))
		}
	}
	return in, false, s.count(len(in))
}

// answer writes one value for a single input, else the list.
func answer[T any](w http.ResponseWriter, vals []T, single bool) error {
	if single {
		writeJSON(w, http.StatusOK, vals[0])
	} else {
		writeJSON(w, http.StatusOK, vals)
	}
	return nil
}

func (s *Server) embed(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Inputs    json.RawMessage `json:"inputs"`
		Normalize *bool           `json:"normalize"`
		Truncate  *bool           `json:"truncate"`
		Direction string          `json:"truncation_direction"`
		Prompt    *string         `json:"prompt_name"`
		Pooling   string          `json:"pooling"`
	}
	if err := s.decode(r, &body); err != nil {
		return err
	}
	texts, _, err := s.texts(body.Inputs)
	if err != nil {
		return err
	}
	if err := checkTEIOptions(body.Direction, body.Prompt); err != nil {
		return err
	}
	trunc, err := s.truncation(body.Truncate)
	if err != nil {
		return err
	}
	// TEI normalises unless told not to.
	norm := body.Normalize == nil || *body.Normalize
	reqs := make([]task.Request, len(texts))
	for i, t := range texts {
		if err := s.checkText(inputName(i, len(texts)), t, "", false, trunc); err != nil {
			return err
		}
		reqs[i] = task.Request{Task: task.Embed, Text: t, Pooling: body.Pooling, Normalize: norm, HasNormalize: true}
	}
	vals, err := s.run(r.Context(), reqs)
	if err != nil {
		return err
	}
	out := make([][]float32, len(vals))
	for i, v := range vals {
		var e struct {
			Embedding []float32 `json:"embedding"`
		}
		if err := as(v, &e); err != nil {
			return err
		}
		out[i] = e.Embedding
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// checkTEIOptions refuses TEI's options that this server does not offer,
// rather than answering as if they had been applied.
func checkTEIOptions(direction string, prompt *string) error {
	if direction != "" && direction != "right" && direction != "Right" {
		return invalid("truncation_direction %q: only right truncation is offered", direction)
	}
	if prompt != nil {
		return invalid("prompt_name %q: this server has no prompts", *prompt)
	}
	return nil
}

func inputName(i, n int) string {
	if n == 1 {
		return "`inputs`"
	}
	return "input " + strconv.Itoa(i)
}

// Prediction is one label of a /predict answer.
type Prediction struct {
	Label string  `json:"label"`
	Score float64 `json:"score"`
}

func (s *Server) predict(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Inputs    json.RawMessage `json:"inputs"`
		RawScores bool            `json:"raw_scores"`
		Truncate  *bool           `json:"truncate"`
		Direction string          `json:"truncation_direction"`
	}
	if err := s.decode(r, &body); err != nil {
		return err
	}
	if err := s.need(task.Classify); err != nil {
		return err
	}
	in, single, err := s.pairs(body.Inputs)
	if err != nil {
		return err
	}
	if err := checkTEIOptions(body.Direction, nil); err != nil {
		return err
	}
	trunc, err := s.truncation(body.Truncate)
	if err != nil {
		return err
	}
	reqs := make([]task.Request, len(in))
	for i, p := range in {
		req := task.Request{Task: task.Classify, Text: p[0]}
		if len(p) == 2 {
			req.TextPair, req.HasPair = p[1], true
		}
		if err := s.checkText(inputName(i, len(in)), req.Text, req.TextPair, req.HasPair, trunc); err != nil {
			return err
		}
		reqs[i] = req
	}
	vals, err := s.run(r.Context(), reqs)
	if err != nil {
		return err
	}
	labels := s.o.Model.Labels()
	out := make([][]Prediction, len(vals))
	for i, v := range vals {
		var c struct {
			Scores map[string]float64 `json:"scores"`
			Logits []float64          `json:"logits"`
		}
		if err := as(v, &c); err != nil {
			return err
		}
		ps := make([]Prediction, len(labels))
		for j, l := range labels {
			ps[j] = Prediction{Label: l, Score: c.Scores[l]}
			if body.RawScores && j < len(c.Logits) {
				ps[j].Score = c.Logits[j]
			}
		}
		sort.SliceStable(ps, func(a, b int) bool { return ps[a].Score > ps[b].Score })
		out[i] = ps
	}
	return answer(w, out, single)
}

// Rank is one text of a /rerank answer.
type Rank struct {
	Index int     `json:"index"`
	Score float64 `json:"score"`
	Text  *string `json:"text,omitempty"`
}

func (s *Server) rerank(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Query      *string  `json:"query"`
		Texts      []string `json:"texts"`
		RawScores  bool     `json:"raw_scores"`
		ReturnText bool     `json:"return_text"`
		Truncate   *bool    `json:"truncate"`
		Direction  string   `json:"truncation_direction"`
	}
	if err := s.decode(r, &body); err != nil {
		return err
	}
	if err := s.need(task.Rerank); err != nil {
		return err
	}
	if body.Query == nil {
		return invalid("field \"query\" is missing")
	}
	if err := s.count(len(body.Texts)); err != nil {
		return invalid("field \"texts\": %v", err)
	}
	if err := checkTEIOptions(body.Direction, nil); err != nil {
		return err
	}
	trunc, err := s.truncation(body.Truncate)
	if err != nil {
		return err
	}
	if err := s.checkText("`query`", *body.Query, "", false, true); err != nil {
		return err
	}
	for i, t := range body.Texts {
		if err := s.checkText("text "+strconv.Itoa(i), *body.Query, t, true, trunc); err != nil {
			return err
		}
	}
	vals, err := s.run(r.Context(), []task.Request{{Task: task.Rerank, Query: *body.Query, Passages: body.Texts, ReturnText: body.ReturnText}})
	if err != nil {
		return err
	}
	var res struct {
		Ranking []struct {
			Index int     `json:"index"`
			Score float64 `json:"score"`
			Logit float64 `json:"logit"`
		} `json:"ranking"`
	}
	if err := as(vals[0], &res); err != nil {
		return err
	}
	out := make([]Rank, len(res.Ranking))
	for i, rk := range res.Ranking {
		out[i] = Rank{Index: rk.Index, Score: rk.Score}
		if body.RawScores {
			out[i].Score = rk.Logit
		}
		if body.ReturnText {
			out[i].Text = &body.Texts[rk.Index]
		}
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].Score > out[b].Score })
	writeJSON(w, http.StatusOK, out)
	return nil
}

// Token is one token of a /tokenize answer: TEI's SimpleToken (Text is
// the part of the input it came from; Start and Stop, byte offsets, are
// null for the [CLS] and [SEP] the tokenizer adds), and the token as the
// vocabulary spells it.
type Token struct {
	ID      int32  `json:"id"`
	Text    string `json:"text"`
	Special bool   `json:"special"`
	Start   *int   `json:"start"`
	Stop    *int   `json:"stop"`
	Token   string `json:"token"`
}

func (s *Server) tokenize(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Inputs  json.RawMessage `json:"inputs"`
		Special *bool           `json:"add_special_tokens"`
		Prompt  *string         `json:"prompt_name"`
	}
	if err := s.decode(r, &body); err != nil {
		return err
	}
	texts, _, err := s.texts(body.Inputs)
	if err != nil {
		return err
	}
	if err := checkTEIOptions("", body.Prompt); err != nil {
		return err
	}
	special := body.Special == nil || *body.Special
	out := make([][]Token, len(texts))
	for i, text := range texts {
		toks := s.o.Model.Tokens(text, special)
		out[i] = make([]Token, len(toks))
		for j, t := range toks {
			tk := Token{ID: t.ID, Text: t.Text, Special: t.Special, Token: t.Text}
			if t.Start >= 0 {
				start, stop := t.Start, t.Stop
				tk.Start, tk.Stop, tk.Text = &start, &stop, text[start:stop]
			}
			out[i][j] = tk
		}
	}
	// TEI answers a list of token lists even for one input.
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) fillMask(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Inputs json.RawMessage `json:"inputs"`
		TopK   int             `json:"top_k"`
	}
	if err := s.decode(r, &body); err != nil {
		return err
	}
	return s.simple(w, r, task.FillMask, body.Inputs, func(t *task.Request) { t.TopK = body.TopK })
}

func (s *Server) ner(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Inputs      json.RawMessage `json:"inputs"`
		Aggregation string          `json:"aggregation"`
	}
	if err := s.decode(r, &body); err != nil {
		return err
	}
	return s.simple(w, r, task.NER, body.Inputs, func(t *task.Request) { t.Aggregation = body.Aggregation })
}

// simple serves a task of one text per input, whose answer is the
// task's result as the pipeline's schema has it.
func (s *Server) simple(w http.ResponseWriter, r *http.Request, name string, inputs json.RawMessage, opt func(*task.Request)) error {
	if err := s.need(name); err != nil {
		return err
	}
	texts, single, err := s.texts(inputs)
	if err != nil {
		return err
	}
	reqs := make([]task.Request, len(texts))
	for i, t := range texts {
		if err := s.checkText(inputName(i, len(texts)), t, "", false, s.o.Model.Truncates()); err != nil {
			return err
		}
		reqs[i] = task.Request{Task: name, Text: t}
		opt(&reqs[i])
	}
	vals, err := s.run(r.Context(), reqs)
	if err != nil {
		return err
	}
	return answer(w, vals, single)
}

func (s *Server) nsp(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Inputs json.RawMessage `json:"inputs"`
	}
	if err := s.decode(r, &body); err != nil {
		return err
	}
	if err := s.need(task.NSP); err != nil {
		return err
	}
	in, single, err := s.pairs(body.Inputs)
	if err != nil {
		return err
	}
	reqs := make([]task.Request, len(in))
	for i, p := range in {
		if len(p) != 2 {
			return invalid("%s: nsp needs a pair of texts", inputName(i, len(in)))
		}
		if err := s.checkText(inputName(i, len(in)), p[0], p[1], true, s.o.Model.Truncates()); err != nil {
			return err
		}
		reqs[i] = task.Request{Task: task.NSP, Text: p[0], TextPair: p[1], HasPair: true}
	}
	vals, err := s.run(r.Context(), reqs)
	if err != nil {
		return err
	}
	return answer(w, vals, single)
}

func (s *Server) info(w http.ResponseWriter, _ *http.Request) error {
	m := s.o.Model
	labels := func() map[string]any {
		id2label, label2id := map[string]string{}, map[string]int{}
		for i, l := range m.Labels() {
			id2label[strconv.Itoa(i)] = l
			label2id[l] = i
		}
		return map[string]any{"id2label": id2label, "label2id": label2id}
	}
	var kind map[string]any
	switch {
	case s.tasks[task.Rerank]:
		kind = map[string]any{"reranker": labels()}
	case s.tasks[task.Classify]:
		kind = map[string]any{"classifier": labels()}
	default:
		pool, _ := m.EmbedDefaults()
		kind = map[string]any{"embedding": map[string]string{"pooling": pool}}
	}
	bc := s.o.Batcher.Config()
	dtype := s.o.DType
	if dtype == "" {
		dtype = "float32"
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"model_id":                m.Name(),
		"model_sha":               nil,
		"model_dtype":             dtype,
		"model_type":              kind,
		"max_concurrent_requests": bc.MaxQueue,
		"max_input_length":        m.MaxLen(),
		"max_batch_tokens":        bc.MaxTokens,
		"max_batch_requests":      bc.MaxBatch,
		"max_client_batch_size":   s.o.MaxInputs,
		"auto_truncate":           m.Truncates(),
		"tokenization_workers":    1,
		"version":                 s.o.Version,
		"sha":                     nil,
		"docker_label":            nil,
		"tasks":                   m.Tasks(),
		"max_wait_ms":             float64(bc.MaxWait.Microseconds()) / 1000,
	})
	return nil
}
