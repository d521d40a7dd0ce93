package tokenize

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const fixtureDir = "../../testdata/bert-tiny"

type tokenizerCase struct {
	Text   string   `json:"text"`
	Tokens []string `json:"tokens"`
	IDs    []int32  `json:"ids"`
}

func loadCases(t testing.TB) []tokenizerCase {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(fixtureDir, "tokenizer_cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		DoLowerCase bool            `json:"do_lower_case"`
		Cases       []tokenizerCase `json:"cases"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	if !f.DoLowerCase || len(f.Cases) == 0 {
		t.Fatalf("tokenizer_cases.json: do_lower_case %v, %d cases", f.DoLowerCase, len(f.Cases))
	}
	return f.Cases
}

func uncased(t testing.TB) *Tokenizer {
	t.Helper()
	tok, err := FromVocab(filepath.Join(fixtureDir, "vocab.txt"), Options{Lowercase: true, ChineseChars: true})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func checkCases(t *testing.T, tok *Tokenizer, cases []tokenizerCase) {
	t.Helper()
	for _, c := range cases {
		tokens, ids := tok.Tokenize(c.Text)
		if !slices.Equal(tokens, c.Tokens) || !slices.Equal(ids, c.IDs) {
			t.Errorf("Tokenize(%q)\n got  %q %v\n want %q %v", c.Text, tokens, ids, c.Tokens, c.IDs)
		}
	}
}

func TestCases(t *testing.T) {
	cases := loadCases(t)
	t.Run("FromVocab", func(t *testing.T) { checkCases(t, uncased(t), cases) })
	t.Run("Load", func(t *testing.T) {
		tok, err := Load(filepath.Join(fixtureDir, "vocab-only"))
		if err != nil {
			t.Fatal(err)
		}
		checkCases(t, tok, cases)
	})
}

// TestTokenizeMore covers Hugging Face behaviour that the fixture cases do
// not reach. The expectations follow transformers' BasicTokenizer and
// WordpieceTokenizer on bert-base-uncased's vocabulary.
func TestTokenizeMore(t *testing.T) {
	tok := uncased(t)
	for _, c := range []struct {
		text string
		want string
	}{
		{"a\u00a0b\u3000c\u2028d\u2029e", "a b c d e"},  // Zs, Zl, Zp split words
		{"a\u000bb\u000cc\u0085d", "abc ##d"},           // VT, FF, NEL are Cc: dropped, not blanks
		{"pri\ue000vate\U000f0000use", "private ##use"}, // private use (Co) is dropped
		{"un\U000e0001tag", "un ##tag"},                 // Cf dropped
		{"bad\xffutf\xc3", "bad ##ut ##f"},              // invalid UTF-8 dropped like U+FFFD
		{"nul\x00\ufffd!", "nu ##l !"},
		{"İstanbul", "istanbul"}, // U+0130 lowercases to i + U+0307, the mark goes
		{"Cafe\u0301 RE\u0301SUME\u0301", "cafe resume"},
		{"x \u0301 y", "x y"},     // a word that is only a mark vanishes
		{"ΟΔΟΣ", "ο ##δ ##ο ##σ"}, // no final sigma: one character at a time
		{"foo[MASK]bar[SEP]", "foo [MASK] bar [SEP]"},
		{"[mask] [Mask]", "[ mask ] [ mask ]"},
		{"[MA\x07SK]", "[ mask ]"}, // lowercased before the cleaned word is checked
		{"[PAD][UNK][CLS]", "[PAD] [UNK] [CLS]"},
		{"x[[MASK]]", "x [ [MASK] ]"},
		{"ＡＢＣ１２３ ﬁ", "[UNK] ﬁ"},                                       // no NFKC: full-width forms and ligatures stay
		{"\u4e00\u4e01x\u3400y\U00020000", "一 [UNK] x [UNK] y [UNK]"}, // ideographs split, Extension A and B too
		{"¿Qué? ¡Sí!", "¿ que ? ¡ si !"},
		{"€5 ©2 2024", "€ ##5 © ##2 202 ##4"}, // currency and symbols are not punctuation
		{"a^b`c~d|e", "a ^ b ` c ~ d | e"},
		{strings.Repeat("a", 101), "[UNK]"},
		{strings.Repeat("a", 100), "aaa" + strings.Repeat(" ##aa", 48) + " ##a"},
		{strings.Repeat("é", 101), "[UNK]"}, // the limit counts characters after folding
		{"  \t\n ", ""},
	} {
		tokens, ids := tok.Tokenize(c.text)
		got := strings.Join(tokens, " ")
		if got != c.want {
			t.Errorf("Tokenize(%q) = %q, want %q", c.text, got, c.want)
		}
		if len(ids) != len(tokens) {
			t.Fatalf("Tokenize(%q): %d ids for %d tokens", c.text, len(ids), len(tokens))
		}
		for i, id := range ids {
			if back := tok.IDToToken(id); back != tokens[i] {
				t.Errorf("Tokenize(%q): id %d is %q, token %q", c.text, id, back, tokens[i])
			}
		}
	}
}

// TestWords pins the basic tokenizer's options one by one, independent of
// any vocabulary.
func TestWords(t *testing.T) {
	yes, no := true, false
	special := map[string]bool{"[MASK]": true}
	for _, c := range []struct {
		name string
		b    basicTokenizer
		text string
		want string
	}{
		{"cased keeps case and accents", Options{ChineseChars: true}.basic(), "Café NAÏVE", "Café NAÏVE"},
		{"cased composes NFC", Options{}.basic(), "Cafe\u0301", "Café"},
		{"cased strips when asked", Options{StripAccents: &yes}.basic(), "Café", "Cafe"},
		{"lowercase without stripping", Options{Lowercase: true, StripAccents: &no}.basic(), "Café", "café"},
		{"lowercase strips by default", Options{Lowercase: true}.basic(), "Café", "cafe"},
		{"CJK split", Options{ChineseChars: true}.basic(), "北京x", "北 京 x"},
		{"CJK kept", Options{}.basic(), "北京x", "北京x"},
		{"no clean", basicTokenizer{}, "a\x07b c", "a\x07b c"},
		{"special after stripping", basicTokenizer{cleanText: true, stripAccents: true, neverSplit: special}, "[MÁSK]", "[MASK]"},
		{"special after cleaning", basicTokenizer{cleanText: true, neverSplit: special}, "[MA\x07SK]", "[MASK]"},
	} {
		got := strings.Join(c.b.words(nil, c.text), " ")
		if got != c.want {
			t.Errorf("%s: words(%q) = %q, want %q", c.name, c.text, got, c.want)
		}
	}
}

func TestVocab(t *testing.T) {
	tok := uncased(t)
	if n := tok.VocabSize(); n != 30522 {
		t.Errorf("VocabSize = %d, want 30522", n)
	}
	want := Specials{CLS: 101, SEP: 102, PAD: 0, MASK: 103, UNK: 100}
	if got := tok.Special(); got != want {
		t.Errorf("Special = %+v, want %+v", got, want)
	}
	if id, ok := tok.TokenToID("hello"); !ok || id != 7592 {
		t.Errorf("TokenToID(hello) = %d, %v", id, ok)
	}
	if _, ok := tok.TokenToID("no-such-token"); ok {
		t.Error("TokenToID found a token that is not in the vocabulary")
	}
	if s := tok.IDToToken(30521); s != "##～" {
		t.Errorf("IDToToken(30521) = %q", s)
	}
	if s := tok.IDToToken(30522); s != "" {
		t.Errorf("IDToToken(30522) = %q, want \"\"", s)
	}
	if tok.MaxLen() != DefaultMaxLen {
		t.Errorf("MaxLen = %d", tok.MaxLen())
	}
}
