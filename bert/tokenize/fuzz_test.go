package tokenize

import (
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sugarme/tokenizer"
	"github.com/sugarme/tokenizer/normalizer"
	"github.com/sugarme/tokenizer/pretokenizer"
)

// FuzzTokenize feeds arbitrary bytes, invalid UTF-8 included, to Tokenize
// and Encode: nothing may panic, every id must name its token, and every
// encoded row must fit the limit.
func FuzzTokenize(f *testing.F) {
	for _, c := range loadCases(f) {
		f.Add(c.Text)
	}
	for _, s := range []string{"\xff\xfe", "a\xc3", "[MASK", "[MASK]]", "\u0301\u0301", "İ", "\u3400\U00020000", "\ue000", "x\u2028y"} {
		f.Add(s)
	}
	tok := uncased(f)
	f.Fuzz(func(t *testing.T, s string) {
		tokens, ids := tok.Tokenize(s)
		if len(tokens) != len(ids) {
			t.Fatalf("%d tokens, %d ids", len(tokens), len(ids))
		}
		for i, id := range ids {
			if id < 0 || int(id) >= tok.VocabSize() || tok.IDToToken(id) != tokens[i] {
				t.Fatalf("token %d: %q has id %d, which is %q", i, tokens[i], id, tok.IDToToken(id))
			}
			if !utf8.ValidString(tokens[i]) || tokens[i] == "" {
				t.Fatalf("token %d: %q", i, tokens[i])
			}
		}
		again, _ := tok.Tokenize(s)
		if !slices.Equal(again, tokens) {
			t.Fatalf("not deterministic: %q then %q", tokens, again)
		}
		const limit = 8
		b, err := tok.Encode([]Input{{Text: s}, {Text: s, Pair: s, HasPair: true}}, limit)
		if err != nil {
			t.Fatal(err)
		}
		if b.T > limit || b.Lengths[0] != min(len(ids)+2, limit) || b.Lengths[1] != min(2*len(ids)+3, limit) {
			t.Fatalf("T %d, lengths %v for %d tokens", b.T, b.Lengths, len(ids))
		}
	})
}

// TestLibraryDefects pins the sugarme/tokenizer v0.3.0 defects that basic.go
// works around. If an upgrade fixes them, this fails: time to reconsider
// which steps the library can do.
func TestLibraryDefects(t *testing.T) {
	if normalizer.IsChinese(0x3400) {
		t.Error("library now sees U+3400 as a CJK ideograph")
	}
	lib := tokenizer.NewTokenizer(uncased(t).vocab)
	lib.WithNormalizer(normalizer.NewBertNormalizer(true, true, true, true))
	lib.WithPreTokenizer(pretokenizer.NewBertPreTokenizer())
	for text, wrong := range map[string]string{
		"café":                  "[UNK]",
		"\u200bzero\u200bwidth": "zero ##wi ##dt ##h ##zer ##ow ##id ##th ##zer ##ow ##id ##th",
	} {
		en, err := lib.EncodeSingle(text, false)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(en.Tokens, " "); got != wrong {
			t.Errorf("library on %q now gives %q (was %q)", text, got, wrong)
		}
	}
}

// FuzzWordPiece checks this package's WordPiece split of a word against
// the library's, which follows Hugging Face's WordpieceTokenizer line by
// line and which it replaced for speed: same tokens, same ids, [UNK] for
// the same words.
func FuzzWordPiece(f *testing.F) {
	for _, c := range loadCases(f) {
		for w := range strings.FieldsSeq(c.Text) {
			f.Add(w)
		}
	}
	for _, s := range []string{"", "##", "##ing", "unaffable", "xyzzyq", "é", "\xff", "a\xffb", "[UNK]",
		strings.Repeat("a", 100), strings.Repeat("a", 101), strings.Repeat("é", 100), strings.Repeat("é", 101)} {
		f.Add(s)
	}
	tok := uncased(f)
	f.Fuzz(func(t *testing.T, w string) {
		if w == "" {
			return // the library returns nothing; words are never empty
		}
		want, err := tok.vocab.Tokenize(w)
		if err != nil {
			t.Fatal(err)
		}
		if !utf8.ValidString(w) {
			w = string([]rune(w)) // what tokenize hands WordPiece
		}
		var got []string
		var ids []int
		ps, ok := tok.wp.pieces(nil, w)
		if !ok {
			got, ids = []string{tok.wp.unkText}, []int{int(tok.wp.unk)}
		}
		for _, p := range ps {
			got, ids = append(got, tok.wp.text(w, p)), append(ids, int(p.id))
		}
		var wantText []string
		var wantIDs []int
		for _, p := range want {
			wantText, wantIDs = append(wantText, p.Value), append(wantIDs, p.Id)
		}
		if !slices.Equal(got, wantText) || !slices.Equal(ids, wantIDs) {
			t.Fatalf("%q: %q %v, the library %q %v", w, got, ids, wantText, wantIDs)
		}
	})
}
