package tokenize

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"

	"github.com/sugarme/tokenizer/model"
	"github.com/sugarme/tokenizer/model/wordpiece"
)

// Load reads the tokenizer of a Hugging Face model directory: tokenizer.json
// when there is one, else vocab.txt. tokenizer_config.json, when present,
// sets do_lower_case, strip_accents, tokenize_chinese_chars,
// model_max_length and the special tokens, over what tokenizer.json says;
// without either, BERT's defaults hold (uncased, CJK split). The sequence
// limit is also capped by config.json's max_position_embeddings.
//
// tokenizer.json's padding is ignored: Encode pads to the longest row.
func Load(dir string) (*Tokenizer, error) {
	var cfg tokenizerConfig
	cfgPath := filepath.Join(dir, "tokenizer_config.json")
	if _, err := readJSON(cfgPath, &cfg); err != nil {
		return nil, err
	}
	var mc modelConfig
	if _, err := readJSON(filepath.Join(dir, "config.json"), &mc); err != nil {
		return nil, err
	}

	var tj tokenizerJSON
	tjPath := filepath.Join(dir, "tokenizer.json")
	found, err := readJSON(tjPath, &tj)
	if err != nil {
		return nil, err
	}
	if found {
		t, err := fromTokenizerJSON(tjPath, &tj, &cfg)
		if err != nil {
			return nil, fmt.Errorf("tokenize: %w", err)
		}
		t.maxLen = maxLen(cfg.modelMaxLength(), tj.truncationMax(), mc.MaxPositionEmbeddings)
		return t, nil
	}

	vocabPath := filepath.Join(dir, "vocab.txt")
	if _, err := os.Stat(vocabPath); err != nil {
		return nil, fmt.Errorf("tokenize: model directory %s has neither tokenizer.json nor vocab.txt: %w", dir, err)
	}
	opts := Options{
		Lowercase:    boolOr(cfg.DoLowerCase, true),
		StripAccents: cfg.StripAccents,
		ChineseChars: boolOr(cfg.TokenizeChineseChars, true),
		MaxLen:       maxLen(cfg.modelMaxLength(), 0, mc.MaxPositionEmbeddings),
	}
	return fromVocab(vocabPath, opts, cfg.names(defaultNames), cfg.extra())
}

func (o Options) basic() basicTokenizer {
	return basicTokenizer{
		cleanText:    true,
		chineseChars: o.ChineseChars,
		lowercase:    o.Lowercase,
		stripAccents: boolOr(o.StripAccents, o.Lowercase),
	}
}

func boolOr(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}

// maxLen picks the first limit given, else DefaultMaxLen, and caps it by the
// model's position count.
func maxLen(configured, truncation, positions int) int {
	n := DefaultMaxLen
	switch {
	case configured > 0:
		n = configured
	case truncation > 0:
		n = truncation
	}
	if positions > 0 && positions < n {
		n = positions
	}
	return n
}

// readJSON decodes path into v. A missing file is not an error: it reports
// false and leaves v alone.
func readJSON(path string, v any) (bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("tokenize: %w", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return false, fmt.Errorf("tokenize: %s: %w", path, err)
	}
	return true, nil
}

// modelConfig is the part of config.json the tokenizer needs.
type modelConfig struct {
	MaxPositionEmbeddings int `json:"max_position_embeddings"`
}

// tokenizerConfig is the part of tokenizer_config.json that BertTokenizer
// reads.
type tokenizerConfig struct {
	DoLowerCase          *bool `json:"do_lower_case"`
	StripAccents         *bool `json:"strip_accents"`
	TokenizeChineseChars *bool `json:"tokenize_chinese_chars"`
	// ModelMaxLength is a float: Hugging Face writes 1e30 for "no limit".
	ModelMaxLength          *float64    `json:"model_max_length"`
	UnkToken                tokenName   `json:"unk_token"`
	ClsToken                tokenName   `json:"cls_token"`
	SepToken                tokenName   `json:"sep_token"`
	PadToken                tokenName   `json:"pad_token"`
	MaskToken               tokenName   `json:"mask_token"`
	AdditionalSpecialTokens []tokenName `json:"additional_special_tokens"`
}

func (c *tokenizerConfig) modelMaxLength() int {
	if c.ModelMaxLength == nil || *c.ModelMaxLength < 1 || *c.ModelMaxLength > math.MaxInt32 {
		return 0
	}
	return int(*c.ModelMaxLength)
}

func (c *tokenizerConfig) names(def tokenNames) tokenNames {
	set := func(dst *string, v tokenName) {
		if v != "" {
			*dst = string(v)
		}
	}
	set(&def.cls, c.ClsToken)
	set(&def.sep, c.SepToken)
	set(&def.pad, c.PadToken)
	set(&def.mask, c.MaskToken)
	set(&def.unk, c.UnkToken)
	return def
}

func (c *tokenizerConfig) extra() []string {
	var out []string
	for _, t := range c.AdditionalSpecialTokens {
		if t != "" {
			out = append(out, string(t))
		}
	}
	return out
}

// tokenName is a special token in tokenizer_config.json: a string, or an
// AddedToken object with the string in "content".
type tokenName string

func (n *tokenName) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*n = tokenName(s)
		return nil
	}
	var obj struct {
		Content *string `json:"content"`
	}
	if err := json.Unmarshal(b, &obj); err != nil || obj.Content == nil {
		return fmt.Errorf("special token %s: want a string or an object with \"content\"", b)
	}
	*n = tokenName(*obj.Content)
	return nil
}

// tokenizerJSON is the part of a Hugging Face tokenizer.json that a BERT
// tokenizer uses. It is decoded here, with types checked, rather than by
// sugarme's pretrained.FromFile, which panics on a field of an unexpected
// type, reads strip_accents null as false and drops
// continuing_subword_prefix.
type tokenizerJSON struct {
	AddedTokens []struct {
		ID      int64  `json:"id"`
		Content string `json:"content"`
		Special bool   `json:"special"`
	} `json:"added_tokens"`
	Normalizer *struct {
		Type               string `json:"type"`
		CleanText          *bool  `json:"clean_text"`
		HandleChineseChars *bool  `json:"handle_chinese_chars"`
		StripAccents       *bool  `json:"strip_accents"`
		Lowercase          *bool  `json:"lowercase"`
	} `json:"normalizer"`
	PreTokenizer *struct {
		Type string `json:"type"`
	} `json:"pre_tokenizer"`
	Model struct {
		Type                    string         `json:"type"`
		UnkToken                *string        `json:"unk_token"`
		ContinuingSubwordPrefix *string        `json:"continuing_subword_prefix"`
		MaxInputCharsPerWord    *int           `json:"max_input_chars_per_word"`
		Vocab                   map[string]int `json:"vocab"`
	} `json:"model"`
	Truncation *struct {
		MaxLength int `json:"max_length"`
	} `json:"truncation"`
	Padding *struct {
		PadToken string `json:"pad_token"`
	} `json:"padding"`
}

func (tj *tokenizerJSON) truncationMax() int {
	if tj.Truncation == nil {
		return 0
	}
	return tj.Truncation.MaxLength
}

func fromTokenizerJSON(path string, tj *tokenizerJSON, cfg *tokenizerConfig) (*Tokenizer, error) {
	m := &tj.Model
	if m.Type != "WordPiece" {
		return nil, fmt.Errorf("%s: model.type is %q, want WordPiece", path, m.Type)
	}
	if len(m.Vocab) == 0 {
		return nil, fmt.Errorf("%s: model.vocab is empty", path)
	}
	vocab := make(model.Vocab, len(m.Vocab))
	for tok, id := range m.Vocab {
		if id < 0 || id > math.MaxInt32 {
			return nil, fmt.Errorf("%s: model.vocab[%q] = %d is out of range", path, tok, id)
		}
		vocab[tok] = id
	}
	unk, prefix, maxChars := "[UNK]", defaultPrefix, defaultMaxChars
	if m.UnkToken != nil {
		unk = *m.UnkToken
	}
	if m.ContinuingSubwordPrefix != nil {
		prefix = *m.ContinuingSubwordPrefix
	}
	if m.MaxInputCharsPerWord != nil {
		if *m.MaxInputCharsPerWord <= 0 {
			return nil, fmt.Errorf("%s: model.max_input_chars_per_word = %d, want > 0", path, *m.MaxInputCharsPerWord)
		}
		maxChars = *m.MaxInputCharsPerWord
	}
	wp := wordpiece.NewWordPieceBuilder().Vocab(&vocab).UnkToken(unk).Build()

	if tj.PreTokenizer == nil || tj.PreTokenizer.Type != "BertPreTokenizer" {
		typ := "null"
		if tj.PreTokenizer != nil {
			typ = fmt.Sprintf("%q", tj.PreTokenizer.Type)
		}
		return nil, fmt.Errorf("%s: pre_tokenizer is %s, want BertPreTokenizer", path, typ)
	}

	// A null normalizer leaves the text as it is.
	var b basicTokenizer
	var strip *bool
	if n := tj.Normalizer; n != nil {
		if n.Type != "BertNormalizer" {
			return nil, fmt.Errorf("%s: normalizer.type is %q, want BertNormalizer", path, n.Type)
		}
		b.cleanText = boolOr(n.CleanText, true)
		b.chineseChars = boolOr(n.HandleChineseChars, true)
		b.lowercase = boolOr(n.Lowercase, true)
		strip = n.StripAccents
	}
	if cfg.DoLowerCase != nil {
		b.lowercase = *cfg.DoLowerCase
	}
	if cfg.TokenizeChineseChars != nil {
		b.chineseChars = *cfg.TokenizeChineseChars
	}
	if cfg.StripAccents != nil {
		strip = cfg.StripAccents
	}
	b.stripAccents = boolOr(strip, b.lowercase)

	added := make(map[string]int32, len(tj.AddedTokens))
	for i, a := range tj.AddedTokens {
		if a.ID < 0 || a.ID > math.MaxInt32 {
			return nil, fmt.Errorf("%s: added_tokens[%d] (%q) id %d is out of range", path, i, a.Content, a.ID)
		}
		added[a.Content] = int32(a.ID)
	}
	names := defaultNames
	names.unk = unk
	if tj.Padding != nil && tj.Padding.PadToken != "" {
		names.pad = tj.Padding.PadToken
	}
	t := &Tokenizer{vocab: wp, basic: b}
	if err := t.build(path, cfg.names(names), added, cfg.extra(), prefix, maxChars); err != nil {
		return nil, err
	}
	return t, nil
}
