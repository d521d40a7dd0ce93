package tokenize

import (
	"unicode"
	"unicode/utf8"

	"github.com/sugarme/tokenizer/normalizer"
	"golang.org/x/text/unicode/norm"
)

// Token is one WordPiece token and the part of the original text it came
// from, as a fast Hugging Face tokenizer's offset mapping gives it.
type Token struct {
	// Text is the token as the vocabulary has it ("##ing" for a
	// continuation, "[UNK]" for an unknown word).
	Text string
	ID   int32
	// Start and End are byte offsets into the text given to
	// TokenizeOffsets: text[Start:End] is what became the token, before
	// lowercasing and accent stripping. An unknown word's [UNK] spans the
	// whole word; pieces of a character that normalisation expands (the
	// "i" and the dot of "İ") share its span.
	Start, End int
}

// TokenizeOffsets is Tokenize with offsets: the same tokens, in the same
// order, each with the span of the text it came from.
func (t *Tokenizer) TokenizeOffsets(text string) []Token {
	var out []Token
	for pos := 0; pos < len(text); {
		at, tok := -1, ""
		for _, s := range t.specialByLen {
			if i := indexFrom(text, s, pos); i >= 0 && (at < 0 || i < at) {
				at, tok = i, s
			}
		}
		end := len(text)
		if at >= 0 {
			end = at
		}
		for _, w := range t.basic.alignedWords(nil, text, pos, end) {
			out = t.appendPieces(out, w)
		}
		if at < 0 {
			break
		}
		out = append(out, Token{Text: tok, ID: t.special[tok], Start: at, End: at + len(tok)})
		pos = at + len(tok)
	}
	return out
}

func indexFrom(s, sub string, from int) int {
	for i := from; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

// appendPieces runs WordPiece on one aligned word.
func (t *Tokenizer) appendPieces(out []Token, w alignedWord) []Token {
	word := string(w.runes)
	whole := func(tok string, id int32) []Token {
		return append(out, Token{Text: tok, ID: id, Start: w.start[0], End: w.end[len(w.end)-1]})
	}
	if w.special {
		return whole(word, t.special[word])
	}
	ps, ok := t.wp.pieces(nil, word)
	if !ok {
		return whole(t.wp.unkText, t.wp.unk)
	}
	for _, p := range ps {
		// w.start and w.end are by rune; the pieces' bounds are bytes of word.
		lo := utf8.RuneCountInString(word[:p.lo])
		hi := lo + utf8.RuneCountInString(word[p.lo:p.hi])
		out = append(out, Token{Text: t.wp.text(word, p), ID: p.id, Start: w.start[lo], End: w.end[hi-1]})
	}
	return out
}

// alignedWord is a word as WordPiece sees it, each rune with the byte span
// of the original character(s) it came from.
type alignedWord struct {
	runes      []rune
	start, end []int
	// special: the word equals a special token once lowercased.
	special bool
}

// alignedWords is words on text[lo:hi] keeping, for every rune of every
// word, where in text it came from: the same words, built from the same
// steps, applied one character (one NFC segment) at a time.
func (b *basicTokenizer) alignedWords(dst []alignedWord, text string, lo, hi int) []alignedWord {
	var raw []srcRune
	flush := func() {
		if len(raw) > 0 {
			dst = b.normaliseWord(dst, raw)
		}
		raw = raw[:0]
	}
	for i := lo; i < hi; {
		r, n := utf8.DecodeRuneInString(text[i:hi])
		at := i
		i += n
		if b.cleanText {
			if r == 0 || r == utf8.RuneError || isControl(r) {
				continue
			}
			if isWhitespace(r) {
				flush()
				continue
			}
		}
		if unicode.IsSpace(r) {
			flush()
			continue
		}
		if b.chineseChars && isChinese(r) {
			flush()
			raw = append(raw, srcRune{r, at, i})
			flush()
			continue
		}
		raw = append(raw, srcRune{r, at, i})
	}
	flush()
	return dst
}

// srcRune is a rune of the original text and its byte span.
type srcRune struct {
	r          rune
	start, end int
}

// normaliseWord composes (NFC), lowercases, strips accents and splits at
// punctuation one whitespace-delimited word, given as its runes with their
// spans, and appends the resulting words.
func (b *basicTokenizer) normaliseWord(dst []alignedWord, raw []srcRune) []alignedWord {
	s := make([]byte, 0, 4*len(raw))
	var starts, ends []int // per byte of s, the span of its source rune
	for _, x := range raw {
		k := len(s)
		s = utf8.AppendRune(s, x.r)
		for ; k < len(s); k++ {
			starts = append(starts, x.start)
			ends = append(ends, x.end)
		}
	}
	var w alignedWord
	add := func(r rune, start, end int) {
		w.runes = append(w.runes, r)
		w.start = append(w.start, start)
		w.end = append(w.end, end)
	}
	var it norm.Iter
	it.Init(norm.NFC, s)
	for prev := 0; !it.Done(); {
		seg := it.Next()
		pos := it.Pos()
		start, end := starts[prev], ends[pos-1]
		prev = pos
		str := string(seg)
		if b.lowercase {
			str = lower(str)
		}
		for _, r := range str {
			add(r, start, end)
		}
	}
	if len(w.runes) == 0 {
		return dst
	}
	if b.neverSplit[string(w.runes)] {
		w.special = true
		return append(dst, w)
	}
	if b.stripAccents && !isASCII(string(w.runes)) {
		var stripped alignedWord
		for k, r := range w.runes {
			if r < utf8.RuneSelf {
				stripped.runes = append(stripped.runes, r)
				stripped.start = append(stripped.start, w.start[k])
				stripped.end = append(stripped.end, w.end[k])
				continue
			}
			for _, d := range norm.NFD.String(string(r)) {
				if !unicode.Is(unicode.Mn, d) {
					stripped.runes = append(stripped.runes, d)
					stripped.start = append(stripped.start, w.start[k])
					stripped.end = append(stripped.end, w.end[k])
				}
			}
		}
		w = stripped
		if len(w.runes) > 0 && b.neverSplit[string(w.runes)] {
			w.special = true
			return append(dst, w)
		}
	}
	// Punctuation splits the word, each punctuation character a word.
	from := 0
	for k, r := range w.runes {
		if !normalizer.IsBertPunctuation(r) {
			continue
		}
		if k > from {
			dst = append(dst, w.slice(from, k))
		}
		dst = append(dst, w.slice(k, k+1))
		from = k + 1
	}
	if from < len(w.runes) {
		dst = append(dst, w.slice(from, len(w.runes)))
	}
	return dst
}

func (w alignedWord) slice(i, j int) alignedWord {
	return alignedWord{runes: w.runes[i:j], start: w.start[i:j], end: w.end[i:j]}
}
