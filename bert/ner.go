package bert

import (
	"strings"
	"unicode/utf8"

	"github.com/bertstream/bertstream/bert/tokenize"
)

// The aggregations of ner, as transformers' token-classification pipeline
// names its aggregation_strategy.
const (
	AggNone    = "none"
	AggSimple  = "simple"
	AggFirst   = "first"
	AggAverage = "average"
	AggMax     = "max"
)

// Aggregations lists the aggregation names ner accepts.
var Aggregations = []string{AggNone, AggSimple, AggFirst, AggAverage, AggMax}

// Entity is one entry of ner's answer: a token (aggregation none: Entity
// and Index set) or a group of tokens (EntityGroup set). Start and End are
// character (code point) offsets into the text, as transformers gives
// them.
type Entity struct {
	Entity      string  `json:"entity,omitempty"`
	EntityGroup string  `json:"entity_group,omitempty"`
	Score       float64 `json:"score"`
	// Index is the token's position in the encoded sequence ([CLS] is 0).
	Index int    `json:"index,omitempty"`
	Word  string `json:"word"`
	Start int    `json:"start"`
	End   int    `json:"end"`
}

// NERResult is the answer of ner: the entities that are not O, in order.
type NERResult struct {
	Aggregation string   `json:"aggregation"`
	Entities    []Entity `json:"entities"`
}

// preEntity is a token with its label probabilities, as
// gather_pre_entities makes it.
type preEntity struct {
	word       string
	scores     []float64
	start, end int
	index      int
	isSubword  bool
}

// nerEntities turns the token logits of one text (row t+1 of logits is
// token t: row 0 is [CLS]) into the entities transformers' pipeline
// reports with aggregation agg.
func nerEntities(text string, toks []tokenize.Token, logits []float32, labels []string, sp tokenize.Specials, agg string) []Entity {
	L := len(labels)
	// Character offsets: the rune index at each rune's first byte, where
	// token spans begin and end.
	runeAt := make([]int, len(text)+1)
	n := 0
	for i := range text {
		runeAt[i] = n
		n++
	}
	runeAt[len(text)] = n
	var pre []preEntity
	for k, tk := range toks {
		if tk.ID == sp.CLS || tk.ID == sp.SEP || tk.ID == sp.PAD || tk.ID == sp.MASK {
			continue // special tokens written in the text, as the pipeline skips them
		}
		ref := text[tk.Start:tk.End]
		word := tk.Text
		// A "##" piece is longer than the text it came from: that is how
		// the pipeline tells a word's continuation.
		isSub := utf8.RuneCountInString(word) != utf8.RuneCountInString(ref)
		if tk.ID == sp.UNK {
			word, isSub = ref, false
		}
		pre = append(pre, preEntity{word: word, scores: softmax(logits[(k+1)*L : (k+2)*L]), start: runeAt[tk.Start],
			end: runeAt[tk.End], index: k + 1, isSubword: isSub})
	}
	var ents []Entity
	switch agg {
	case AggNone, AggSimple:
		for _, p := range pre {
			i := argmax(p.scores)
			ents = append(ents, Entity{Entity: labels[i], Score: p.scores[i], Index: p.index, Word: p.word, Start: p.start, End: p.end})
		}
	default:
		var word []preEntity
		for _, p := range pre {
			if len(word) > 0 && !p.isSubword {
				ents = append(ents, aggregateWord(word, labels, agg))
				word = word[:0]
			}
			word = append(word, p)
		}
		if len(word) > 0 {
			ents = append(ents, aggregateWord(word, labels, agg))
		}
	}
	if agg != AggNone {
		ents = groupEntities(ents)
	}
	out := []Entity{}
	for _, e := range ents {
		if e.Entity != "O" && e.EntityGroup != "O" {
			out = append(out, e)
		}
	}
	return out
}

func argmax(x []float64) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}

// aggregateWord is the pipeline's aggregate_word: one entity for the
// tokens of a word, labelled by its first token, by its most confident
// token, or by the average of its tokens' probabilities.
func aggregateWord(toks []preEntity, labels []string, agg string) Entity {
	words := make([]string, len(toks))
	for i, t := range toks {
		words[i] = t.word
	}
	var scores []float64
	switch agg {
	case AggFirst:
		scores = toks[0].scores
	case AggMax:
		best := 0
		for i, t := range toks {
			if t.scores[argmax(t.scores)] > toks[best].scores[argmax(toks[best].scores)] {
				best = i
			}
		}
		scores = toks[best].scores
	case AggAverage:
		scores = make([]float64, len(labels))
		for _, t := range toks {
			for i, s := range t.scores {
				scores[i] += s / float64(len(toks))
			}
		}
	}
	i := argmax(scores)
	return Entity{Entity: labels[i], Score: scores[i], Word: decodeTokens(words), Start: toks[0].start, End: toks[len(toks)-1].end}
}

// bioTag splits a label into its B/I prefix and its tag; a label without
// one continues (I) whatever tag it is.
func bioTag(label string) (string, string) {
	if t, ok := strings.CutPrefix(label, "B-"); ok {
		return "B", t
	}
	if t, ok := strings.CutPrefix(label, "I-"); ok {
		return "I", t
	}
	return "I", label
}

// groupEntities is the pipeline's group_entities: neighbours of one tag
// join a group unless the later one begins (B-) a new entity.
func groupEntities(ents []Entity) []Entity {
	var out, cur []Entity
	closeGroup := func() {
		tag := cur[0].Entity
		if _, t, ok := strings.Cut(tag, "-"); ok {
			tag = t
		}
		var sum float64
		words := make([]string, len(cur))
		for i, e := range cur {
			sum += e.Score
			words[i] = e.Word
		}
		out = append(out, Entity{EntityGroup: tag, Score: sum / float64(len(cur)), Word: decodeTokens(words),
			Start: cur[0].Start, End: cur[len(cur)-1].End})
	}
	for _, e := range ents {
		if len(cur) > 0 {
			bi, tag := bioTag(e.Entity)
			_, last := bioTag(cur[len(cur)-1].Entity)
			if tag != last || bi == "B" {
				closeGroup()
				cur = cur[:0]
			}
		}
		cur = append(cur, e)
	}
	if len(cur) > 0 {
		closeGroup()
	}
	return out
}

// decodeTokens is a fast BERT tokenizer's convert_tokens_to_string: the
// WordPiece decoder joins continuations ("##") to the token before and
// puts a space before the others, then undoes the spaces that
// tokenization put before punctuation and English contractions.
func decodeTokens(toks []string) string {
	var sb strings.Builder
	for i, t := range toks {
		if i > 0 {
			if c, ok := strings.CutPrefix(t, "##"); ok {
				t = c
			} else {
				t = " " + t
			}
		}
		for _, r := range [][2]string{{" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
			{" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}} {
			t = strings.ReplaceAll(t, r[0], r[1])
		}
		sb.WriteString(t)
	}
	return sb.String()
}
