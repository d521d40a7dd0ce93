package tokenize

import "unicode/utf8"

// wordPiece is WordPiece's greedy longest-match-first split of a word, as
// Hugging Face's WordpieceTokenizer (and sugarme's WordPiece.Tokenize) do
// it: the longest prefix of the word in the vocabulary, then the longest
// continuation ("##" + text) of the rest, and so on; a word with a part
// that matches nothing, or longer than maxChars characters, is [UNK].
//
// sugarme's Tokenize builds every candidate it tries with fmt.Sprintf from
// a rune slice and returns each piece with its own offset slice: about half
// of the microsecond a word that tokenizing a request took (BenchmarkPretokenize).
// Here a candidate is a substring of the word, looked up in the pieces that
// start a word or in those that continue one (keyed without their prefix),
// so a word allocates nothing.
type wordPiece struct {
	start, cont map[string]int32
	prefix      string
	maxChars    int
	// maxBytes is the longest piece: no longer candidate is tried.
	maxBytes int
	unk      int32
	unkText  string
}

// piece is one token of a word w: w[lo:hi], a continuation when lo > 0.
type piece struct {
	id     int32
	lo, hi int
}

func newWordPiece(vocab map[string]int, prefix string, maxChars int, unk int32, unkText string) wordPiece {
	wp := wordPiece{
		start: make(map[string]int32, len(vocab)), cont: map[string]int32{},
		prefix: prefix, maxChars: maxChars, unk: unk, unkText: unkText,
	}
	for tok, id := range vocab {
		wp.start[tok] = int32(id)
		wp.maxBytes = max(wp.maxBytes, len(tok))
		if len(tok) >= len(prefix) && tok[:len(prefix)] == prefix {
			wp.cont[tok[len(prefix):]] = int32(id)
		}
	}
	return wp
}

// pieces appends the pieces of w to dst; false (and dst as it was) when w
// is [UNK].
func (wp *wordPiece) pieces(dst []piece, w string) ([]piece, bool) {
	if utf8.RuneCountInString(w) > wp.maxChars {
		return dst, false
	}
	n0 := len(dst)
	for lo := 0; lo < len(w); {
		m := wp.start
		if lo > 0 {
			m = wp.cont
		}
		hi := min(len(w), lo+wp.maxBytes)
		for hi < len(w) && !utf8.RuneStart(w[hi]) {
			hi--
		}
		for ; hi > lo; hi = lo + lastRuneStart(w[lo:hi]) {
			if id, ok := m[w[lo:hi]]; ok {
				dst = append(dst, piece{id, lo, hi})
				break
			}
		}
		if hi == lo {
			return dst[:n0], false
		}
		lo = hi
	}
	return dst, true
}

// lastRuneStart is where the last character of s starts.
func lastRuneStart(s string) int {
	_, n := utf8.DecodeLastRuneInString(s)
	return len(s) - n
}

// text is the token of piece p of w, with the continuation prefix.
func (wp *wordPiece) text(w string, p piece) string {
	if p.lo == 0 {
		return w[:p.hi]
	}
	return wp.prefix + w[p.lo:p.hi]
}
