package bert

import "github.com/bertstream/bertstream/bert/task"

// Tokens splits text as the model reads it, with the span of each token in
// text; with special, between [CLS] and [SEP], as a request is encoded.
// Tokens the vocabulary keeps whole when written in the text ([MASK])
// are special too.
func (p *Predictor) Tokens(text string, special bool) []task.Token {
	sp := p.Tok.Special()
	kept := map[int32]bool{sp.CLS: true, sp.SEP: true, sp.PAD: true, sp.MASK: true, sp.UNK: false}
	var out []task.Token
	if special {
		out = append(out, task.Token{ID: sp.CLS, Text: p.Tok.IDToToken(sp.CLS), Special: true, Start: -1, Stop: -1})
	}
	for _, t := range p.Tok.TokenizeOffsets(text) {
		// An unknown word is [UNK], but not one written as "[UNK]".
		whole := kept[t.ID] || t.ID == sp.UNK && text[t.Start:t.End] == t.Text
		out = append(out, task.Token{ID: t.ID, Text: t.Text, Special: whole, Start: t.Start, Stop: t.End})
	}
	if special {
		out = append(out, task.Token{ID: sp.SEP, Text: p.Tok.IDToToken(sp.SEP), Special: true, Start: -1, Stop: -1})
	}
	return out
}

// Labels are the classifier's labels by index (the order of a
// classification's logits); none without a classifier head.
func (p *Predictor) Labels() []string { return p.Model.Labels }

// Truncates says whether the predictor cuts texts over MaxLen instead of
// refusing them.
func (p *Predictor) Truncates() bool { return p.truncate }

// EmbedDefaults are the pooling and normalisation embed applies to a
// request that does not choose them.
func (p *Predictor) EmbedDefaults() (pooling string, normalize bool) {
	return p.embedSettings(task.Request{})
}
