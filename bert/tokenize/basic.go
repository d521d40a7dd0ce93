package tokenize

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/sugarme/tokenizer/normalizer"
	"golang.org/x/text/unicode/norm"
)

// This file is the one place where this package departs from
// github.com/sugarme/tokenizer v0.3.0: it replaces the library's
// BertNormalizer and BertPreTokenizer with Hugging Face's BasicTokenizer
// (transformers' slow BertTokenizer), step for step. The library's own
// pipeline, run on bert-base-uncased's vocabulary, gets these wrong
// (TestLibraryDefects pins each one, so an upgrade that fixes them shows):
//
//   - its accent stripping strips nothing, even with strip_accents true, and
//     its tokenizer.json reader turns strip_accents null (Hugging Face: "follow
//     lowercase") into false: "café", Greek and Cyrillic words, and kana with
//     voicing marks become [UNK];
//   - its clean-text step mis-aligns the text after a removed character, so
//     a zero-width space makes the word pieces of the rest of the text repeat;
//   - it treats only Cc and Cf as control characters (Hugging Face drops every
//     C* category: private use and unassigned code points too) and only ASCII
//     blanks as whitespace (Hugging Face: every Zs, so NBSP and U+3000 split
//     words);
//   - it does no NFC composition before splitting words.
//
//   - its CJK test misses Extension A (U+3400..U+4DBF).
//
// The library still provides the vocabulary (reading vocab.txt, the id maps)
// and the BERT punctuation class, which are right. Its WordPiece split is
// right too, but slow: wordpiece.go does the same split without allocating,
// and FuzzWordPiece checks the two against each other.

// basicTokenizer splits a text that holds no special tokens into the words
// that WordPiece sees.
type basicTokenizer struct {
	cleanText    bool
	chineseChars bool
	lowercase    bool
	stripAccents bool
	// neverSplit holds the special tokens: a whitespace-separated word equal
	// to one of them after cleaning is neither lowercased nor split.
	neverSplit map[string]bool
}

// isControl is Python's unicodedata.category(r).startswith("C") minus the
// three ASCII blanks BERT keeps as whitespace. Go's unicode.C lacks Cn
// (unassigned), so an unassigned code point counts here too.
func isControl(r rune) bool {
	switch r {
	case '\t', '\n', '\r':
		return false
	}
	if r < utf8.RuneSelf {
		return r < 0x20 || r == 0x7f
	}
	return unicode.Is(unicode.C, r) || !isAssigned(r)
}

func isAssigned(r rune) bool {
	return unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z, unicode.C)
}

// isWhitespace is BERT's whitespace: the ASCII blanks and Zs, plus the line
// and paragraph separators (Zl, Zp), which BERT keeps through cleaning but
// Python's str.split() then splits on, so mapping them to a space up front
// gives the same words.
func isWhitespace(r rune) bool {
	switch r {
	case ' ', '\t', '\n', '\r':
		return true
	}
	if r < utf8.RuneSelf {
		return false
	}
	return unicode.In(r, unicode.Zs, unicode.Zl, unicode.Zp)
}

// isChinese is BERT's "Chinese character": the CJK Unified Ideographs
// blocks and their compatibility blocks, not kana or Hangul. (The library's
// table lists Extension A after the main block, and Go's linear search of
// small tables stops at the first range above the rune, so it misses
// U+3400..U+4DBF.)
func isChinese(r rune) bool {
	switch {
	case r < 0x3400:
		return false
	case r <= 0x4dbf, 0x4e00 <= r && r <= 0x9fff, 0xf900 <= r && r <= 0xfaff:
		return true
	}
	return 0x20000 <= r && r <= 0x2a6df ||
		0x2a700 <= r && r <= 0x2b73f ||
		0x2b740 <= r && r <= 0x2b81f ||
		0x2b820 <= r && r <= 0x2ceaf ||
		0x2f800 <= r && r <= 0x2fa1f
}

// clean drops NUL, U+FFFD (which is also what invalid UTF-8 decodes to) and
// control characters, turns whitespace into ' ', and spaces out CJK
// ideographs, in one pass.
func (b *basicTokenizer) clean(s string) string {
	var sb strings.Builder
	sb.Grow(len(s) + 8)
	for _, r := range s {
		if b.cleanText {
			if r == 0 || r == utf8.RuneError || isControl(r) {
				continue
			}
			if isWhitespace(r) {
				sb.WriteByte(' ')
				continue
			}
		}
		if b.chineseChars && isChinese(r) {
			sb.WriteByte(' ')
			sb.WriteRune(r)
			sb.WriteByte(' ')
			continue
		}
		sb.WriteRune(r)
	}
	return sb.String()
}

// lower is Python's str.lower: the full Unicode lowercase mapping. The only
// unconditional mapping that differs from Go's simple one is U+0130 (capital
// I with dot above), which becomes "i" + U+0307. Final sigma, the one
// context-dependent rule, never applies in Hugging Face's BERT, which
// lowercases one character at a time.
func lower(s string) string {
	if isASCII(s) {
		return strings.ToLower(s)
	}
	var sb strings.Builder
	sb.Grow(len(s) + 1)
	for _, r := range s {
		if r == 0x130 {
			sb.WriteString("i\u0307")
			continue
		}
		sb.WriteRune(unicode.ToLower(r))
	}
	return sb.String()
}

// stripAccents removes the combining marks (Mn) of the NFD form.
func stripAccents(s string) string {
	d := norm.NFD.String(s)
	var sb strings.Builder
	sb.Grow(len(d))
	for _, r := range d {
		if !unicode.Is(unicode.Mn, r) {
			sb.WriteRune(r)
		}
	}
	return sb.String()
}

// plainASCII says that s is ASCII without control characters other than
// the blanks '\t', '\n' and '\r': clean would only turn those into spaces,
// which splitting on whitespace does anyway.
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf || c == 0x7f || c < 0x20 && c != '\t' && c != '\n' && c != '\r' {
			return false
		}
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// words appends to dst the words of s: cleaned, NFC-composed, split on
// whitespace, each lowercased and stripped of accents as configured, then
// split on punctuation.
func (b *basicTokenizer) words(dst []string, s string) []string {
	if !plainASCII(s) {
		s = b.clean(s)
		if !isASCII(s) {
			s = norm.NFC.String(s)
		}
	}
	for w := range strings.FieldsSeq(s) {
		// Hugging Face lowercases the text before it looks for special
		// tokens a second time, and strips accents after, so a word is
		// checked against them at both points.
		if b.lowercase {
			w = lower(w)
		}
		if b.neverSplit[w] {
			dst = append(dst, w)
			continue
		}
		if b.stripAccents && !isASCII(w) {
			w = stripAccents(w)
			if b.neverSplit[w] {
				dst = append(dst, w)
				continue
			}
		}
		dst = splitPunct(dst, w)
	}
	return dst
}

// asciiPunct is BERT's punctuation class on ASCII, which most text is:
// the library's test goes through Unicode range tables for every character.
var asciiPunct = func() (p [utf8.RuneSelf]bool) {
	for r := range rune(utf8.RuneSelf) {
		p[r] = normalizer.IsBertPunctuation(r)
	}
	return p
}()

// splitPunct appends the pieces of w, every punctuation character on its
// own. A word left empty by accent stripping (it was only marks) yields
// nothing, as in Hugging Face.
func splitPunct(dst []string, w string) []string {
	start := 0
	for i, r := range w {
		if r < utf8.RuneSelf && !asciiPunct[r] || r >= utf8.RuneSelf && !normalizer.IsBertPunctuation(r) {
			continue
		}
		if i > start {
			dst = append(dst, w[start:i])
		}
		n := utf8.RuneLen(r)
		dst = append(dst, w[i:i+n])
		start = i + n
	}
	if start < len(w) {
		dst = append(dst, w[start:])
	}
	return dst
}
