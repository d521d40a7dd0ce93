package bert_test

import (
	"strings"
	"testing"

	"github.com/bertstream/bertstream/bert"
)

func TestParseConfigDefaults(t *testing.T) {
	c, err := bert.ParseConfig([]byte(`{"hidden_size": 32, "num_attention_heads": 4, "id2label": {"0": "neg", "1": "pos"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.NumHiddenLayers != 12 || c.IntermediateSize != 3072 || c.VocabSize != 30522 || c.LayerNormEps != 1e-12 || c.HiddenAct != "gelu" {
		t.Errorf("Hugging Face defaults not applied: %+v", c)
	}
	if c.HeadDim() != 8 {
		t.Errorf("head dim %d, want 8", c.HeadDim())
	}
	labels, err := c.Labels()
	if err != nil || strings.Join(labels, ",") != "neg,pos" {
		t.Errorf("labels %v, %v", labels, err)
	}
}

func TestParseConfigRejects(t *testing.T) {
	for _, tc := range []struct {
		name, json, want string
	}{
		{"not json", `{"hidden_size": `, "config"},
		{"wrong type", `{"hidden_size": "768"}`, "hidden_size"},
		{"zero heads", `{"num_attention_heads": 0}`, "num_attention_heads"},
		{"negative layers", `{"num_hidden_layers": -1}`, "num_hidden_layers"},
		{"huge vocab", `{"vocab_size": 1000000000000}`, "vocab_size"},
		{"huge hidden", `{"hidden_size": 4294967296, "num_attention_heads": 1}`, "hidden_size"},
		{"zero intermediate", `{"intermediate_size": 0}`, "intermediate_size"},
		{"no positions", `{"max_position_embeddings": 0}`, "max_position_embeddings"},
		{"indivisible heads", `{"hidden_size": 100, "num_attention_heads": 12}`, "not divisible"},
		{"relative positions", `{"position_embedding_type": "relative_key"}`, "position_embedding_type"},
		{"decoder", `{"is_decoder": true}`, "is_decoder"},
		{"cross attention", `{"add_cross_attention": true}`, "add_cross_attention"},
		{"unknown activation", `{"hidden_act": "swish"}`, "hidden_act"},
		{"zero eps", `{"layer_norm_eps": 0}`, "layer_norm_eps"},
		{"other model", `{"model_type": "roberta"}`, "model_type"},
		{"label key", `{"id2label": {"x": "a"}}`, "id2label"},
		{"label index", `{"num_labels": 2, "id2label": {"0": "a", "5": "b"}}`, "id2label"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := bert.ParseConfig([]byte(tc.json))
			if err == nil {
				t.Fatalf("accepted %s", tc.json)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %q", err, tc.want)
			}
		})
	}
}

func TestActivations(t *testing.T) {
	for _, act := range []string{"gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "tanh"} {
		if _, err := bert.ParseConfig([]byte(`{"hidden_act": "` + act + `"}`)); err != nil {
			t.Errorf("%s: %v", act, err)
		}
	}
}

func TestPresets(t *testing.T) {
	want := map[string][4]int{
		"nano": {4, 256, 4, 1024}, "mini": {6, 384, 12, 1536}, "micro": {12, 512, 8, 2048},
		"base": {12, 768, 12, 3072}, "large": {24, 1024, 16, 4096},
	}
	for _, name := range bert.PresetNames {
		c, err := bert.Preset(name)
		if err != nil {
			t.Fatal(err)
		}
		got := [4]int{c.NumHiddenLayers, c.HiddenSize, c.NumAttentionHeads, c.IntermediateSize}
		if got != want[name] || c.VocabSize != 30522 || c.MaxPositionEmbeddings != 512 {
			t.Errorf("%s: %v vocab %d positions %d", name, got, c.VocabSize, c.MaxPositionEmbeddings)
		}
	}
	if _, err := bert.Preset("huge"); err == nil {
		t.Error("unknown preset accepted")
	}
}

// TestClassifyFunction: transformers' text-classification pipeline's
// choice of function by problem_type and number of labels.
func TestClassifyFunction(t *testing.T) {
	for _, c := range []struct {
		problem string
		labels  int
		want    string
	}{
		{"", 1, bert.FuncSigmoid},
		{"", 3, bert.FuncSoftmax},
		{"regression", 1, bert.FuncNone},
		{"multi_label_classification", 3, bert.FuncSigmoid},
		{"single_label_classification", 2, bert.FuncSoftmax},
	} {
		cfg := bert.Config{ProblemType: c.problem}
		if got := cfg.ClassifyFunction(c.labels); got != c.want {
			t.Errorf("problem_type %q, %d labels: %s, want %s", c.problem, c.labels, got, c.want)
		}
	}
	if _, err := bert.ParseConfig([]byte(`{"problem_type":"ranking"}`)); err == nil || !strings.Contains(err.Error(), "problem_type") {
		t.Errorf("unknown problem_type: %v", err)
	}
}
