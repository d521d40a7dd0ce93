// Package tokenize turns text into BERT input ids the way Hugging Face's
// BertTokenizer does: clean the text, split CJK ideographs, lowercase and
// strip accents (uncased models), split punctuation, then WordPiece with
// "##" continuations; special tokens written in the text ("[MASK]") stay
// whole. Encode adds [CLS]/[SEP], type ids, longest-first truncation and
// padding to the longest row of a batch.
//
// The vocabulary comes from github.com/sugarme/tokenizer; the text
// normalisation and the WordPiece split are this package's own (see
// basic.go and wordpiece.go for why).
package tokenize

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/sugarme/tokenizer/model/wordpiece"
)

// WordPiece's defaults: Hugging Face's, for a vocab.txt and for what a
// tokenizer.json leaves out.
const (
	defaultPrefix   = "##"
	defaultMaxChars = 100
)

// DefaultMaxLen is the sequence limit when neither the tokenizer files nor
// the model's config.json give one: BERT's 512 positions.
const DefaultMaxLen = 512

// Options configure a tokenizer built from a bare vocab.txt.
type Options struct {
	// Lowercase is Hugging Face's do_lower_case.
	Lowercase bool
	// StripAccents nil follows Lowercase, as in Hugging Face.
	StripAccents *bool
	// ChineseChars puts every CJK ideograph in a word of its own.
	ChineseChars bool
	// MaxLen is the model's sequence limit, [CLS] and [SEP] included;
	// <= 0 means DefaultMaxLen.
	MaxLen int
}

// Specials holds the ids of BERT's special tokens.
type Specials struct {
	CLS, SEP, PAD, MASK, UNK int32
}

// Tokenizer is safe for concurrent use: nothing in it changes after Load.
type Tokenizer struct {
	// vocab is the library's WordPiece model, kept for its vocabulary
	// maps; wp splits the words.
	vocab wordpiece.WordPiece
	wp    wordPiece
	basic basicTokenizer
	// special maps every token that is kept whole when written in the text
	// to its id; specialByLen is the same tokens, longest first, for
	// matching.
	special      map[string]int32
	specialByLen []string
	// idToSpecial names the special ids that the WordPiece vocabulary lacks
	// (tokens added on top of it by tokenizer.json).
	idToSpecial map[int32]string
	specials    Specials
	vocabSize   int
	maxLen      int
}

// tokenNames are the special tokens Encode and the tasks rely on.
type tokenNames struct {
	cls, sep, pad, mask, unk string
}

var defaultNames = tokenNames{cls: "[CLS]", sep: "[SEP]", pad: "[PAD]", mask: "[MASK]", unk: "[UNK]"}

// build finishes a Tokenizer whose WordPiece model, normaliser settings and
// limits are set: it resolves the special tokens, which must all have ids.
// added maps tokens from tokenizer.json's added_tokens to their ids; extra
// lists further tokens to keep whole that must be in the vocabulary; prefix
// and maxChars are WordPiece's continuing_subword_prefix and
// max_input_chars_per_word.
func (t *Tokenizer) build(src string, names tokenNames, added map[string]int32, extra []string, prefix string, maxChars int) error {
	t.special = map[string]int32{}
	t.idToSpecial = map[int32]string{}
	vocab := t.vocab.GetVocab()
	if len(vocab) == 0 {
		return fmt.Errorf("%s: empty vocabulary", src)
	}
	maxID := -1
	for _, id := range vocab {
		maxID = max(maxID, id)
	}
	for tok, id := range added {
		if tok == "" {
			return fmt.Errorf("%s: empty added token (id %d)", src, id)
		}
		if id < 0 {
			return fmt.Errorf("%s: added token %q has negative id %d", src, tok, id)
		}
		t.special[tok] = id
		if vid, ok := vocab[tok]; !ok || int32(vid) != id {
			t.idToSpecial[id] = tok
		}
		maxID = max(maxID, int(id))
	}
	t.vocabSize = maxID + 1
	lookup := func(field, tok string) (int32, error) {
		if id, ok := t.special[tok]; ok {
			return id, nil
		}
		if id, ok := vocab[tok]; ok {
			t.special[tok] = int32(id)
			return int32(id), nil
		}
		return 0, fmt.Errorf("%s: %s %q is not in the vocabulary", src, field, tok)
	}
	var err error
	for _, f := range []struct {
		field string
		tok   string
		dst   *int32
	}{
		{"cls_token", names.cls, &t.specials.CLS},
		{"sep_token", names.sep, &t.specials.SEP},
		{"pad_token", names.pad, &t.specials.PAD},
		{"mask_token", names.mask, &t.specials.MASK},
		{"unk_token", names.unk, &t.specials.UNK},
	} {
		if *f.dst, err = lookup(f.field, f.tok); err != nil {
			return err
		}
	}
	for _, tok := range extra {
		if _, err := lookup("additional_special_tokens", tok); err != nil {
			return err
		}
	}
	t.specialByLen = make([]string, 0, len(t.special))
	for tok := range t.special {
		if tok != "" {
			t.specialByLen = append(t.specialByLen, tok)
		}
	}
	sort.Slice(t.specialByLen, func(i, j int) bool {
		a, b := t.specialByLen[i], t.specialByLen[j]
		if len(a) != len(b) {
			return len(a) > len(b)
		}
		return a < b
	})
	t.basic.neverSplit = make(map[string]bool, len(t.special))
	for tok := range t.special {
		t.basic.neverSplit[tok] = true
	}
	// An unknown word is the vocabulary's unk token, as in WordPiece; the
	// resolved one when only the added tokens have it.
	unk, unkText := t.specials.UNK, t.IDToToken(t.specials.UNK)
	if id, ok := vocab[names.unk]; ok {
		unk, unkText = int32(id), names.unk
	}
	t.wp = newWordPiece(vocab, prefix, maxChars, unk, unkText)
	return nil
}

// FromVocab builds a tokenizer from a vocab.txt (one token per line, the id
// is the line number) with the default special tokens.
func FromVocab(vocabPath string, opts Options) (*Tokenizer, error) {
	return fromVocab(vocabPath, opts, defaultNames, nil)
}

func fromVocab(path string, opts Options, names tokenNames, extra []string) (*Tokenizer, error) {
	wp, err := wordpiece.NewWordPieceFromFile(path, names.unk)
	if err != nil {
		return nil, fmt.Errorf("tokenize: reading vocabulary %s: %w", path, err)
	}
	t := &Tokenizer{vocab: wp, basic: opts.basic(), maxLen: maxLen(opts.MaxLen, 0, 0)}
	if err := t.build(path, names, nil, extra, defaultPrefix, defaultMaxChars); err != nil {
		return nil, fmt.Errorf("tokenize: %w", err)
	}
	return t, nil
}

// Tokenize returns the WordPiece tokens of text and their ids, without
// [CLS] and [SEP]. Any bytes are accepted: invalid UTF-8 is dropped like
// U+FFFD.
func (t *Tokenizer) Tokenize(text string) (tokens []string, ids []int32) {
	return t.tokenize(text, true)
}

// tokenize is Tokenize, the tokens' text only when withText: a server
// needs the ids alone.
func (t *Tokenizer) tokenize(text string, withText bool) (tokens []string, ids []int32) {
	var wordBuf [32]string
	var pieceBuf [8]piece
	words := t.split(wordBuf[:0], text)
	ids = make([]int32, 0, len(words)+len(words)/4+1)
	if withText {
		tokens = make([]string, 0, cap(ids))
	}
	for _, w := range words {
		if id, ok := t.special[w]; ok {
			ids = append(ids, id)
			if withText {
				tokens = append(tokens, w)
			}
			continue
		}
		if !utf8.ValidString(w) {
			// Without clean_text invalid bytes reach WordPiece, which
			// sees each as U+FFFD, as Python and the library do.
			w = string([]rune(w))
		}
		ps, ok := t.wp.pieces(pieceBuf[:0], w)
		if !ok {
			ids = append(ids, t.wp.unk)
			if withText {
				tokens = append(tokens, t.wp.unkText)
			}
			continue
		}
		for _, p := range ps {
			ids = append(ids, p.id)
			if withText {
				tokens = append(tokens, t.wp.text(w, p))
			}
		}
	}
	return tokens, ids
}

// split cuts text at the special tokens written in it (leftmost match, the
// longest one where several start at the same place), keeps those whole and
// runs the rest through the basic tokenizer.
func (t *Tokenizer) split(dst []string, text string) []string {
	for text != "" {
		at, tok := -1, ""
		for _, s := range t.specialByLen {
			if i := strings.Index(text, s); i >= 0 && (at < 0 || i < at) {
				at, tok = i, s
			}
		}
		if at < 0 {
			return t.basic.words(dst, text)
		}
		dst = t.basic.words(dst, text[:at])
		dst = append(dst, tok)
		text = text[at+len(tok):]
	}
	return dst
}

// Input is one row of a batch: a text, or a pair of texts.
type Input struct {
	Text, Pair string
	HasPair    bool
	// By is the tokenizer whose Pretokenize filled IDs and PairIDs with
	// the tokens of Text and Pair; Encode by that tokenizer uses them and
	// tokenizes nothing again. nil: Encode tokenizes the texts.
	By           *Tokenizer
	IDs, PairIDs []int32
}

// Pretokenize returns x with its texts' tokens, so that a server can
// tokenize a request as it arrives, on the goroutine that reads it, and
// the batch it joins later is encoded without that work. The tokens are
// never written to: Encode cuts by slicing.
func (t *Tokenizer) Pretokenize(x Input) Input {
	_, x.IDs = t.tokenize(x.Text, false)
	x.PairIDs = nil
	if x.HasPair {
		_, x.PairIDs = t.tokenize(x.Pair, false)
	}
	x.By = t
	return x
}

// Batch is an encoded batch, row-major [B,T], padded with the pad id (type
// id 0, mask 0) to the longest row.
type Batch struct {
	IDs, TypeIDs, Mask []int32
	B, T               int
	// Lengths are the unpadded row lengths.
	Lengths []int
	// Truncated says which rows lost tokens to the length limit.
	Truncated []bool
}

// ErrMaxLen is returned by Encode when the length limit cannot hold the
// special tokens of a row.
var ErrMaxLen = errors.New("length limit too small for [CLS] and [SEP]")

// Encode tokenizes a batch as "[CLS] a [SEP]" or "[CLS] a [SEP] b [SEP]"
// (type ids 0 up to the first [SEP], 1 after), cutting tokens longest-first
// (one at a time from the longer of a and b, from b on a tie) so that every
// row fits maxLen, then pads to the longest row. maxLen <= 0, or above the
// model's limit, means the model's limit.
func (t *Tokenizer) Encode(in []Input, maxLen int) (*Batch, error) {
	if maxLen <= 0 || maxLen > t.maxLen {
		maxLen = t.maxLen
	}
	type row struct{ a, b []int32 }
	rows := make([]row, len(in))
	b := &Batch{B: len(in), Lengths: make([]int, len(in)), Truncated: make([]bool, len(in))}
	for i, x := range in {
		nSpecial := 2
		if x.HasPair {
			nSpecial = 3
		}
		if maxLen < nSpecial {
			return nil, fmt.Errorf("tokenize: row %d: max length %d, needs %d: %w", i, maxLen, nSpecial, ErrMaxLen)
		}
		a, p := x.IDs, x.PairIDs
		if x.By != t {
			_, a = t.tokenize(x.Text, false)
			p = nil
			if x.HasPair {
				_, p = t.tokenize(x.Pair, false)
			}
		}
		excess := len(a) + len(p) + nSpecial - maxLen
		if excess > 0 {
			b.Truncated[i] = true
			for ; excess > 0; excess-- {
				if len(a) > len(p) {
					a = a[:len(a)-1]
				} else {
					p = p[:len(p)-1]
				}
			}
		}
		rows[i] = row{a, p}
		b.Lengths[i] = len(a) + len(p) + nSpecial
		b.T = max(b.T, b.Lengths[i])
	}
	n := b.B * b.T
	b.IDs, b.TypeIDs, b.Mask = make([]int32, n), make([]int32, n), make([]int32, n)
	for i, r := range rows {
		ids := b.IDs[i*b.T : (i+1)*b.T]
		types := b.TypeIDs[i*b.T : (i+1)*b.T]
		mask := b.Mask[i*b.T : (i+1)*b.T]
		k := 0
		put := func(id, typ int32) {
			ids[k], types[k], mask[k] = id, typ, 1
			k++
		}
		put(t.specials.CLS, 0)
		for _, id := range r.a {
			put(id, 0)
		}
		put(t.specials.SEP, 0)
		if in[i].HasPair {
			for _, id := range r.b {
				put(id, 1)
			}
			put(t.specials.SEP, 1)
		}
		for ; k < b.T; k++ {
			ids[k] = t.specials.PAD
		}
	}
	return b, nil
}

// VocabSize is the number of ids: one past the largest id of the vocabulary
// and the added tokens.
func (t *Tokenizer) VocabSize() int { return t.vocabSize }

// MaxLen is the model's sequence limit, [CLS] and [SEP] included.
func (t *Tokenizer) MaxLen() int { return t.maxLen }

// IDToToken returns the token of an id, or "" for an id that has none.
func (t *Tokenizer) IDToToken(id int32) string {
	if tok, ok := t.idToSpecial[id]; ok {
		return tok
	}
	tok, _ := t.vocab.IdToToken(int(id))
	return tok
}

// TokenToID returns the id of a token of the vocabulary or of the special
// tokens.
func (t *Tokenizer) TokenToID(tok string) (int32, bool) {
	if id, ok := t.special[tok]; ok {
		return id, true
	}
	id, ok := t.vocab.TokenToId(tok)
	return int32(id), ok
}

// Special returns the ids of the special tokens.
func (t *Tokenizer) Special() Specials { return t.specials }
