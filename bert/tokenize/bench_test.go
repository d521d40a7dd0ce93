package tokenize

import (
	"strings"
	"testing"
)

// benchSentences are English of the kind a classifier serves: mixed case,
// punctuation, numbers, a few words that WordPiece cuts into pieces.
var benchSentences = []string{
	"The quick brown fox jumps over the lazy dog, doesn't it?",
	"Kubernetes operators reconcile desired state with observed state every 30 seconds.",
	"I absolutely loved the new update: battery life is up 20% and the UI feels snappier!",
	"Shipping was delayed twice; customer support never answered my e-mails (order #48213).",
	"Transformers tokenize text into subword units before the embeddings are looked up.",
	"Café owners in Zürich reported a naïve but effective approach to pricing.",
}

// BenchmarkPretokenize is the tokenization a worker does for each request
// as it arrives: the ids of one text of 10-15 words.
func BenchmarkPretokenize(b *testing.B) {
	tok := uncased(b)
	var words int
	for _, s := range benchSentences {
		words += len(strings.Fields(s))
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, s := range benchSentences {
			tok.Pretokenize(Input{Text: s})
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*words), "ns/word")
}
