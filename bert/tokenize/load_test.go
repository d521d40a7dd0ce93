package tokenize

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const tokenizerJSONDir = "testdata/tokenizer-json"

var smallTexts = []string{
	"Hello, World!",
	"naïve café",
	"The capital of France is [MASK].",
	"東京x",
	"unaffable",
	"xxxe zzz",
	"[CLS] hello [SEP]",
	"",
}

// readTokenizerJSON returns testdata's tokenizer.json as a generic tree that
// tests can alter.
func readTokenizerJSON(t *testing.T) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(tokenizerJSONDir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// writeDir writes a model directory with the given files, JSON values
// marshalled, strings written as they are.
func writeDir(t *testing.T, files map[string]any) string {
	t.Helper()
	dir := t.TempDir()
	for name, v := range files {
		var data []byte
		if s, ok := v.(string); ok {
			data = []byte(s)
		} else {
			var err error
			if data, err = json.Marshal(v); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// vocabTxt renders tokenizer.json's vocabulary as a vocab.txt.
func vocabTxt(t *testing.T, m map[string]any) string {
	t.Helper()
	vocab := m["model"].(map[string]any)["vocab"].(map[string]any)
	toks := make([]string, len(vocab))
	for tok, id := range vocab {
		toks[int(id.(float64))] = tok
	}
	return strings.Join(toks, "\n") + "\n"
}

func TestTokenizerJSON(t *testing.T) {
	fromJSON, err := Load(tokenizerJSONDir)
	if err != nil {
		t.Fatal(err)
	}
	m := readTokenizerJSON(t)
	fromTxt, err := Load(writeDir(t, map[string]any{"vocab.txt": vocabTxt(t, m)}))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range smallTexts {
		tj, ij := fromJSON.Tokenize(s)
		tt, it := fromTxt.Tokenize(s)
		if !slices.Equal(tj, tt) || !slices.Equal(ij, it) {
			t.Errorf("Tokenize(%q): tokenizer.json %q %v, vocab.txt %q %v", s, tj, ij, tt, it)
		}
	}
	// strip_accents null follows lowercase: accents go.
	if got, _ := fromJSON.Tokenize("naïve café"); !slices.Equal(got, []string{"na", "##ive", "cafe"}) {
		t.Errorf("naïve café: %q", got)
	}
	if got := fromJSON.Special(); got != (Specials{CLS: 2, SEP: 3, PAD: 0, MASK: 4, UNK: 1}) {
		t.Errorf("Special = %+v", got)
	}
	if fromJSON.VocabSize() != 30 || fromJSON.MaxLen() != 16 {
		t.Errorf("VocabSize %d, MaxLen %d; want 30, 16 (truncation.max_length)", fromJSON.VocabSize(), fromJSON.MaxLen())
	}
	// padding asks for a fixed 32: Encode pads to the longest row instead.
	b, err := fromJSON.Encode([]Input{{Text: "hello"}, {Text: "hello world"}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if b.T != 4 || !slices.Equal(b.IDs, []int32{2, 5, 3, 0, 2, 5, 6, 3}) {
		t.Errorf("Encode: T=%d ids %v", b.T, b.IDs)
	}
}

// TestTokenizerJSONVariants alters testdata's tokenizer.json and checks how
// each change is honoured or refused.
func TestTokenizerJSONVariants(t *testing.T) {
	set := func(path string, v any) func(m map[string]any) {
		return func(m map[string]any) {
			keys := strings.Split(path, ".")
			node := m
			for _, k := range keys[:len(keys)-1] {
				node = node[k].(map[string]any)
			}
			node[keys[len(keys)-1]] = v
		}
	}
	for _, c := range []struct {
		name    string
		change  func(map[string]any)
		config  map[string]any // tokenizer_config.json
		text    string
		want    string // tokens joined by spaces
		wantErr string
	}{
		{name: "cased", change: set("normalizer.lowercase", false), text: "Hello hello", want: "[UNK] hello"},
		{name: "lowercase without stripping", change: set("normalizer.strip_accents", false), text: "café cafe", want: "[UNK] cafe"},
		{name: "config overrides lowercase", config: map[string]any{"do_lower_case": false}, text: "Hello hello", want: "[UNK] hello"},
		{name: "config overrides stripping", config: map[string]any{"strip_accents": false}, text: "café", want: "[UNK]"},
		{name: "no CJK split", change: set("normalizer.handle_chinese_chars", false), text: "東京", want: "[UNK]"},
		{name: "no cleaning", change: set("normalizer.clean_text", false), text: "hel\u0007lo", want: "[UNK]"},
		{name: "custom prefix", change: func(m map[string]any) {
			set("model.continuing_subword_prefix", "@@")(m)
			v := m["model"].(map[string]any)["vocab"].(map[string]any)
			v["@@ive"] = v["##ive"]
			delete(v, "##ive")
		}, text: "naive", want: "na @@ive"},
		{name: "short words", change: set("model.max_input_chars_per_word", 4), text: "hello the", want: "[UNK] the"},
		{name: "added token beyond the vocabulary", change: func(m map[string]any) {
			m["added_tokens"] = append(m["added_tokens"].([]any), map[string]any{"id": 30, "content": "<new>", "special": false})
		}, text: "x<new>x", want: "x <new> x"},
		{name: "config special tokens", config: map[string]any{"mask_token": map[string]any{"content": "hello", "__type": "AddedToken"}}, text: "xhellox", want: "x hello x"},
		{name: "null normalizer", change: set("normalizer", nil), text: "Hello hello", want: "[UNK] hello"},
		{name: "BPE model", change: set("model.type", "BPE"), wantErr: `model.type is "BPE", want WordPiece`},
		{name: "other normalizer", change: set("normalizer.type", "NFKC"), wantErr: `normalizer.type is "NFKC"`},
		{name: "other pre-tokenizer", change: set("pre_tokenizer.type", "Whitespace"), wantErr: `pre_tokenizer is "Whitespace"`},
		{name: "no pre-tokenizer", change: set("pre_tokenizer", nil), wantErr: "pre_tokenizer is null"},
		{name: "wrong type", change: set("normalizer.lowercase", "yes"), wantErr: "normalizer.lowercase"},
		{name: "string id", change: set("model.vocab.hello", "5"), wantErr: "model.vocab"},
		{name: "negative id", change: set("model.vocab.hello", -5), wantErr: `model.vocab["hello"] = -5`},
		{name: "empty vocabulary", change: set("model.vocab", map[string]any{}), wantErr: "model.vocab is empty"},
		{name: "unknown missing", change: set("model.unk_token", "<unk>"), wantErr: `unk_token "<unk>" is not in the vocabulary`},
		{name: "zero word length", change: set("model.max_input_chars_per_word", 0), wantErr: "max_input_chars_per_word = 0"},
		{name: "bad config token", config: map[string]any{"cls_token": 5}, wantErr: "special token 5"},
		{name: "bad config", config: map[string]any{"do_lower_case": "no"}, wantErr: "tokenizer_config.json"},
	} {
		m := readTokenizerJSON(t)
		if c.change != nil {
			c.change(m)
		}
		files := map[string]any{"tokenizer.json": m}
		if c.config != nil {
			files["tokenizer_config.json"] = c.config
		}
		tok, err := Load(writeDir(t, files))
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%s: err = %v, want one containing %q", c.name, err, c.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got, _ := tok.Tokenize(c.text); strings.Join(got, " ") != c.want {
			t.Errorf("%s: Tokenize(%q) = %q, want %q", c.name, c.text, got, c.want)
		}
	}
}

func TestLoadVocabDir(t *testing.T) {
	m := readTokenizerJSON(t)
	vocab := vocabTxt(t, m)
	for _, c := range []struct {
		name    string
		files   map[string]any
		text    string
		want    string
		maxLen  int
		wantErr string
	}{
		{name: "defaults", files: map[string]any{}, text: "Hello café 東京", want: "hello cafe 東 京", maxLen: 512},
		{name: "cased", files: map[string]any{"tokenizer_config.json": map[string]any{"do_lower_case": false}}, text: "Hello hello", want: "[UNK] hello", maxLen: 512},
		{name: "model_max_length", files: map[string]any{"tokenizer_config.json": map[string]any{"model_max_length": 128}}, text: "x", want: "x", maxLen: 128},
		{name: "no limit", files: map[string]any{"tokenizer_config.json": map[string]any{"model_max_length": 1e30}}, text: "x", want: "x", maxLen: 512},
		{name: "positions cap", files: map[string]any{"config.json": map[string]any{"max_position_embeddings": 64}}, text: "x", want: "x", maxLen: 64},
		{name: "additional specials", files: map[string]any{"tokenizer_config.json": map[string]any{"additional_special_tokens": []string{"hello"}}}, text: "xhellox", want: "x hello x", maxLen: 512},
		{name: "missing special", files: map[string]any{"tokenizer_config.json": map[string]any{"sep_token": "</s>"}}, wantErr: `sep_token "</s>" is not in the vocabulary`},
		{name: "bad config.json", files: map[string]any{"config.json": "{"}, wantErr: "config.json"},
		{name: "empty vocabulary", files: map[string]any{"vocab.txt": ""}, wantErr: "empty vocabulary"},
	} {
		files := map[string]any{"vocab.txt": vocab}
		for k, v := range c.files {
			files[k] = v
		}
		tok, err := Load(writeDir(t, files))
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%s: err = %v, want one containing %q", c.name, err, c.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got, _ := tok.Tokenize(c.text); strings.Join(got, " ") != c.want {
			t.Errorf("%s: Tokenize(%q) = %q, want %q", c.name, c.text, got, c.want)
		}
		if tok.MaxLen() != c.maxLen {
			t.Errorf("%s: MaxLen = %d, want %d", c.name, tok.MaxLen(), c.maxLen)
		}
	}
	if _, err := Load(t.TempDir()); err == nil || !strings.Contains(err.Error(), "neither tokenizer.json nor vocab.txt") {
		t.Errorf("empty directory: %v", err)
	}
}

func TestAddedTokenIDs(t *testing.T) {
	m := readTokenizerJSON(t)
	m["added_tokens"] = append(m["added_tokens"].([]any), map[string]any{"id": 31, "content": "<b>", "special": true})
	tok, err := Load(writeDir(t, map[string]any{"tokenizer.json": m}))
	if err != nil {
		t.Fatal(err)
	}
	if tok.VocabSize() != 32 {
		t.Errorf("VocabSize = %d, want 32", tok.VocabSize())
	}
	if id, ok := tok.TokenToID("<b>"); !ok || id != 31 || tok.IDToToken(31) != "<b>" {
		t.Errorf("<b>: id %d %v, IDToToken(31) = %q", id, ok, tok.IDToToken(31))
	}
	// Longest match first where specials overlap.
	m["added_tokens"] = append(m["added_tokens"].([]any), map[string]any{"id": 32, "content": "<b>x", "special": true})
	tok, err = Load(writeDir(t, map[string]any{"tokenizer.json": m}))
	if err != nil {
		t.Fatal(err)
	}
	got, ids := tok.Tokenize("a<b>xx<b>")
	if strings.Join(got, " ") != "a <b>x x <b>" || !slices.Equal(ids, []int32{20, 32, 27, 31}) {
		t.Errorf("overlapping specials: %q %v", got, ids)
	}
}
