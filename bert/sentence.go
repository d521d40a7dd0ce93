package bert

import (
	"math"
	"strings"

	"github.com/bertstream/bertstream/nn"
)

// The sentence poolings embed offers, named as the Pooling module of
// sentence-transformers names its modes (without "pooling_mode_" and
// "_tokens").
const (
	PoolCLS         = "cls"
	PoolMean        = "mean"
	PoolMax         = "max"
	PoolMeanSqrtLen = "mean_sqrt_len"
	PoolWeighted    = "weightedmean"
	PoolLastToken   = "lasttoken"
)

// Poolings lists the pooling names embed accepts.
var Poolings = []string{PoolCLS, PoolMean, PoolMax, PoolMeanSqrtLen, PoolWeighted, PoolLastToken}

// SentenceConfig is what a sentence-transformers directory says about
// embeddings (modules.json, sentence_bert_config.json, 1_Pooling): the
// defaults of embed for that model.
type SentenceConfig struct {
	// Pooling is one of Poolings.
	Pooling string `json:"pooling"`
	// Normalize is true when modules.json has a Normalize module.
	Normalize bool `json:"normalize"`
	// MaxSeqLength caps the tokens of an embedded text (0: no cap beyond
	// the model's); sentence-transformers truncates to it.
	MaxSeqLength int `json:"max_seq_length,omitempty"`
	// Lowercase lowercases texts before the tokenizer
	// (sentence_bert_config.json's do_lower_case).
	Lowercase bool `json:"do_lower_case,omitempty"`
	// Modules are modules.json's module types, in order.
	Modules []string `json:"modules"`
}

func validPooling(s string) bool {
	for _, p := range Poolings {
		if p == s {
			return true
		}
	}
	return false
}

func badPooling(s string) error {
	return badRequest("pooling %q is not one of %s", s, strings.Join(Poolings, ", "))
}

// backendPooling is the backend kernel a pooling is computed from; the
// ones the backend lacks are computed on the host from the last hidden
// state (ok false).
func backendPooling(s string) (p nn.Pooling, ok bool) {
	switch s {
	case PoolCLS:
		return nn.PoolCLS, true
	case PoolMean, PoolMeanSqrtLen:
		return nn.PoolMean, true
	case PoolMax:
		return nn.PoolMax, true
	}
	return 0, false
}

// hostPool pools sequence row b of hidden states seq [B, T, H] whose first
// n tokens are real, for the poolings the backend lacks: sentence-
// transformers' weighted mean (token t weighs t+1) and last token.
func hostPool(pool string, seq []float32, b, T, H, n int) []float32 {
	out := make([]float32, H)
	row := func(t int) []float32 { return seq[(b*T+t)*H : (b*T+t+1)*H] }
	switch pool {
	case PoolLastToken:
		copy(out, row(n-1))
	case PoolWeighted:
		acc := make([]float64, H)
		var wsum float64
		for t := 0; t < n; t++ {
			w := float64(t + 1)
			wsum += w
			for k, v := range row(t) {
				acc[k] += w * float64(v)
			}
		}
		for k := range out {
			out[k] = float32(acc[k] / wsum)
		}
	}
	return out
}

// normalize scales v to unit L2 length (a zero vector stays zero).
func normalize(v []float32) {
	var ss float64
	for _, x := range v {
		ss += float64(x) * float64(x)
	}
	if ss > 0 {
		inv := float32(1 / math.Sqrt(ss))
		for k := range v {
			v[k] *= inv
		}
	}
}
