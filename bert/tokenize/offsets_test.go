package tokenize

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// checkOffsets: TokenizeOffsets gives Tokenize's tokens, and every span is
// a piece of the text, in order, that normalises to what its token spells.
func checkOffsets(t testing.TB, tok *Tokenizer, text string) []Token {
	t.Helper()
	want, wantIDs := tok.Tokenize(text)
	got := tok.TokenizeOffsets(text)
	var texts []string
	var ids []int32
	for _, g := range got {
		texts = append(texts, g.Text)
		ids = append(ids, g.ID)
	}
	if !slices.Equal(texts, want) || !slices.Equal(ids, wantIDs) {
		t.Fatalf("TokenizeOffsets(%q) gives %q, Tokenize %q", text, texts, want)
	}
	last := 0
	for i, g := range got {
		if g.Start < last || g.End <= g.Start || g.End > len(text) || utf8.ValidString(text) && !utf8.ValidString(text[g.Start:g.End]) {
			t.Fatalf("%q: token %d %q has span [%d,%d) after %d", text, i, g.Text, g.Start, g.End, last)
		}
		last = g.Start
		if g.ID == tok.Special().UNK {
			continue
		}
		// The span's own tokens, as a text of its own, hold the token's
		// letters: the span is where they came from.
		piece := strings.TrimPrefix(g.Text, "##")
		if toks, _ := tok.Tokenize(text[g.Start:g.End]); !strings.Contains(strings.Join(toks, ""), strings.ReplaceAll(piece, "##", "")) &&
			!strings.Contains(strings.ReplaceAll(strings.Join(toks, ""), "##", ""), piece) {
			t.Fatalf("%q: token %d %q has span %q, which tokenizes to %q", text, i, g.Text, text[g.Start:g.End], toks)
		}
	}
	return got
}

func TestOffsetsCases(t *testing.T) {
	tok := uncased(t)
	for _, c := range loadCases(t) {
		checkOffsets(t, tok, c.Text)
	}
}

// TestOffsetsByHand: spans written out by hand for the texts where byte,
// character and normalised positions part ways.
func TestOffsetsByHand(t *testing.T) {
	tok := uncased(t)
	type span struct {
		tok  string
		text string // text[Start:End]
	}
	for _, c := range []struct {
		text string
		want []span
	}{
		{"  Zoë   Müller  .", []span{{"zoe", "Zoë"}, {"muller", "Müller"}, {".", "."}}},
		{"東京 😀 x", []span{{"東", "東"}, {"京", "京"}, {"[UNK]", "😀"}, {"x", "x"}}},
		// Decomposed é (e + U+0301) stays with its letter.
		{"cafe\u0301 ok", []span{{"cafe", "cafe\u0301"}, {"ok", "ok"}}},
		{"\u0130stanbul\u00a0and\tx\n\ny", []span{{"istanbul", "\u0130stanbul"}, {"and", "and"}, {"x", "x"}, {"y", "y"}}},
		{"a\u200bb [MASK]!", []span{{"ab", "a\u200bb"}, {"[MASK]", "[MASK]"}, {"!", "!"}}},
		{"playing", []span{{"playing", "playing"}}},
		{"unaffable", []span{{"una", "una"}, {"##ffa", "ffa"}, {"##ble", "ble"}}},
	} {
		got := checkOffsets(t, tok, c.text)
		var spans []span
		for _, g := range got {
			spans = append(spans, span{g.Text, c.text[g.Start:g.End]})
		}
		if !slices.Equal(spans, c.want) {
			t.Errorf("%q:\n got  %q\n want %q", c.text, spans, c.want)
		}
	}
}

// TestOffsetsNER: the spans of the token-classification fixture's texts
// are those of testdata/make_tasks.py's restatement of Hugging Face's fast
// tokenizer, in characters.
func TestOffsetsNER(t *testing.T) {
	tok, err := Load("../../testdata/tasks/ner")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("../../testdata/tasks/ner/reference.json")
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Cases []struct {
			Text    string   `json:"text"`
			Tokens  []string `json:"tokens"`
			Offsets [][2]int `json:"offsets"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(data, &ref); err != nil {
		t.Fatal(err)
	}
	for _, c := range ref.Cases {
		got := checkOffsets(t, tok, c.Text)
		if len(got) != len(c.Tokens) {
			t.Fatalf("%q: %d tokens, reference %d", c.Text, len(got), len(c.Tokens))
		}
		for i, g := range got {
			start := utf8.RuneCountInString(c.Text[:g.Start])
			end := start + utf8.RuneCountInString(c.Text[g.Start:g.End])
			if g.Text != c.Tokens[i] || start != c.Offsets[i][0] || end != c.Offsets[i][1] {
				t.Errorf("%q token %d: %q [%d,%d), reference %q %v", c.Text, i, g.Text, start, end, c.Tokens[i], c.Offsets[i])
			}
		}
	}
}

// FuzzOffsets: on any bytes, TokenizeOffsets agrees with Tokenize and its
// spans are ordered pieces of the text.
func FuzzOffsets(f *testing.F) {
	for _, c := range loadCases(f) {
		f.Add(c.Text)
	}
	for _, s := range []string{"\xff\xfe", "a\xc3", "[MASK", "[mask]", "\u0301\u0301", "İ", "\u3400\U00020000", "\ue000", "x\u2028y", "e\u0301\u0327", "ﬁ", "Ω\u212b"} {
		f.Add(s)
	}
	tok := uncased(f)
	f.Fuzz(func(t *testing.T, s string) {
		checkOffsets(t, tok, s)
	})
}
