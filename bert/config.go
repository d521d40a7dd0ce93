// Package bert is the BERT model: its configuration (Hugging Face's
// config.json), the encoder and the task heads, computed on any
// nn.Backend.
package bert

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"

	"github.com/bertstream/bertstream/nn"
)

// Config is the part of a Hugging Face BERT config.json that the model
// needs. Field names follow the JSON keys.
type Config struct {
	ModelType             string   `json:"model_type"`
	Architectures         []string `json:"architectures"`
	VocabSize             int      `json:"vocab_size"`
	HiddenSize            int      `json:"hidden_size"`
	NumHiddenLayers       int      `json:"num_hidden_layers"`
	NumAttentionHeads     int      `json:"num_attention_heads"`
	IntermediateSize      int      `json:"intermediate_size"`
	HiddenAct             string   `json:"hidden_act"`
	MaxPositionEmbeddings int      `json:"max_position_embeddings"`
	TypeVocabSize         int      `json:"type_vocab_size"`
	LayerNormEps          float64  `json:"layer_norm_eps"`
	PadTokenID            int      `json:"pad_token_id"`
	PositionEmbeddingType string   `json:"position_embedding_type"`
	IsDecoder             bool     `json:"is_decoder"`
	AddCrossAttention     bool     `json:"add_cross_attention"`
	// ID2Label maps class index to name; JSON keys are decimal strings.
	ID2Label  map[string]string `json:"id2label"`
	NumLabels int               `json:"num_labels"`
	// ProblemType is transformers' problem_type: "regression",
	// "single_label_classification", "multi_label_classification" or
	// absent. With the number of labels it decides the function that
	// turns a sequence classifier's logits into scores.
	ProblemType string `json:"problem_type,omitempty"`
}

// The functions that turn a sequence classifier's logits into scores, as
// transformers' text-classification pipeline names them.
const (
	FuncSoftmax = "softmax"
	FuncSigmoid = "sigmoid"
	FuncNone    = "none"
)

// ClassifyFunction is the function transformers' text-classification
// pipeline applies to the logits of a model with this config and n
// labels: none for regression, a sigmoid per label for multi-label models
// and for one label (a cross-encoder's relevance), else softmax.
func (c *Config) ClassifyFunction(n int) string {
	switch {
	case c.ProblemType == "regression":
		return FuncNone
	case c.ProblemType == "multi_label_classification" || n == 1:
		return FuncSigmoid
	}
	return FuncSoftmax
}

// Limits on sizes read from config files, far above any real BERT but low
// enough that a hostile config cannot make the engine allocate petabytes.
const (
	maxHidden = 1 << 16
	maxVocab  = 1 << 22
	maxLayers = 1 << 10
	maxPos    = 1 << 17
)

// ReadConfig reads and validates a config.json.
func ReadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	c, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseConfig decodes config.json bytes, fills Hugging Face's defaults for
// absent fields and validates the result.
func ParseConfig(data []byte) (Config, error) {
	c := Config{
		ModelType:             "bert",
		VocabSize:             30522,
		HiddenSize:            768,
		NumHiddenLayers:       12,
		NumAttentionHeads:     12,
		IntermediateSize:      3072,
		HiddenAct:             "gelu",
		MaxPositionEmbeddings: 512,
		TypeVocabSize:         2,
		LayerNormEps:          1e-12,
		PositionEmbeddingType: "absolute",
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate reports the first unsupported or inconsistent field by name.
func (c *Config) Validate() error {
	field := func(name string, v int, lo, hi int) error {
		if v < lo || v > hi {
			return fmt.Errorf("config: %s = %d, want %d..%d", name, v, lo, hi)
		}
		return nil
	}
	if c.ModelType != "" && c.ModelType != "bert" {
		return fmt.Errorf("config: model_type %q is not supported (only \"bert\")", c.ModelType)
	}
	for _, e := range []error{
		field("vocab_size", c.VocabSize, 1, maxVocab),
		field("hidden_size", c.HiddenSize, 1, maxHidden),
		field("num_hidden_layers", c.NumHiddenLayers, 1, maxLayers),
		field("num_attention_heads", c.NumAttentionHeads, 1, maxHidden),
		field("intermediate_size", c.IntermediateSize, 1, 16*maxHidden),
		field("max_position_embeddings", c.MaxPositionEmbeddings, 1, maxPos),
		field("type_vocab_size", c.TypeVocabSize, 1, 1<<10),
	} {
		if e != nil {
			return e
		}
	}
	if c.HiddenSize%c.NumAttentionHeads != 0 {
		return fmt.Errorf("config: hidden_size %d is not divisible by num_attention_heads %d", c.HiddenSize, c.NumAttentionHeads)
	}
	if c.PositionEmbeddingType != "" && c.PositionEmbeddingType != "absolute" {
		return fmt.Errorf("config: position_embedding_type %q is not supported (only \"absolute\")", c.PositionEmbeddingType)
	}
	if c.IsDecoder {
		return fmt.Errorf("config: is_decoder = true is not supported (encoder only)")
	}
	if c.AddCrossAttention {
		return fmt.Errorf("config: add_cross_attention = true is not supported (encoder only)")
	}
	if _, err := c.Act(); err != nil {
		return err
	}
	if !(c.LayerNormEps > 0 && c.LayerNormEps < 1) {
		return fmt.Errorf("config: layer_norm_eps = %g, want a small positive number", c.LayerNormEps)
	}
	if _, err := c.Labels(); err != nil {
		return err
	}
	switch c.ProblemType {
	case "", "regression", "single_label_classification", "multi_label_classification":
	default:
		return fmt.Errorf("config: problem_type %q is not regression, single_label_classification or multi_label_classification", c.ProblemType)
	}
	return nil
}

// Act maps hidden_act to an activation.
func (c *Config) Act() (nn.Act, error) {
	switch c.HiddenAct {
	case "gelu":
		return nn.ActGELU, nil
	case "gelu_new", "gelu_pytorch_tanh", "gelu_fast":
		return nn.ActGELUTanh, nil
	case "relu":
		return nn.ActReLU, nil
	case "tanh":
		return nn.ActTanh, nil
	}
	return 0, fmt.Errorf("config: hidden_act %q is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu, tanh)", c.HiddenAct)
}

// HeadDim is the size of one attention head.
func (c *Config) HeadDim() int { return c.HiddenSize / c.NumAttentionHeads }

// Labels returns class names in index order: id2label when present, else
// LABEL_i for num_labels classes (Hugging Face's default names).
func (c *Config) Labels() ([]string, error) {
	n := c.NumLabels
	if len(c.ID2Label) > n {
		n = len(c.ID2Label)
	}
	if n == 0 {
		return nil, nil
	}
	if n > 1<<16 {
		return nil, fmt.Errorf("config: %d labels is too many", n)
	}
	labels := make([]string, n)
	for i := range labels {
		labels[i] = "LABEL_" + strconv.Itoa(i)
	}
	keys := make([]string, 0, len(c.ID2Label))
	for k := range c.ID2Label {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		i, err := strconv.Atoi(k)
		if err != nil || i < 0 || i >= n {
			return nil, fmt.Errorf("config: id2label key %q is not a class index below %d", k, n)
		}
		labels[i] = c.ID2Label[k]
	}
	return labels, nil
}

// Architecture is the first entry of architectures, or "" when absent.
func (c *Config) Architecture() string {
	if len(c.Architectures) == 0 {
		return ""
	}
	return c.Architectures[0]
}

// Presets are the model shapes of DESIGN.md, for benchmarks with random
// weights.
var presets = map[string]Config{
	"nano":  {NumHiddenLayers: 4, HiddenSize: 256, NumAttentionHeads: 4, IntermediateSize: 1024},
	"mini":  {NumHiddenLayers: 6, HiddenSize: 384, NumAttentionHeads: 12, IntermediateSize: 1536},
	"micro": {NumHiddenLayers: 12, HiddenSize: 512, NumAttentionHeads: 8, IntermediateSize: 2048},
	"base":  {NumHiddenLayers: 12, HiddenSize: 768, NumAttentionHeads: 12, IntermediateSize: 3072},
	"large": {NumHiddenLayers: 24, HiddenSize: 1024, NumAttentionHeads: 16, IntermediateSize: 4096},
}

// PresetNames lists the presets from smallest to largest.
var PresetNames = []string{"nano", "mini", "micro", "base", "large"}

// Preset returns the config of a named preset: a BertModel with the
// vocabulary of bert-base-uncased and 512 positions.
func Preset(name string) (Config, error) {
	p, ok := presets[name]
	if !ok {
		return Config{}, fmt.Errorf("unknown preset %q (have %v)", name, PresetNames)
	}
	p.ModelType = "bert"
	p.Architectures = []string{"BertModel"}
	p.VocabSize = 30522
	p.MaxPositionEmbeddings = 512
	p.TypeVocabSize = 2
	p.HiddenAct = "gelu"
	p.LayerNormEps = 1e-12
	p.PositionEmbeddingType = "absolute"
	return p, p.Validate()
}
