package loader_test

import (
	"testing"

	"github.com/bertstream/bertstream/loader/loadertest"
	"github.com/bertstream/bertstream/nn"
)

func TestParityCPU(t *testing.T) {
	loadertest.Parity(t, "../testdata/bert-tiny", nn.CPU{}, loadertest.F32)
}

// BF16 is the linear layers' products on weights and activations rounded
// to bfloat16 (8 significant bits, relative rounding error up to 2^-9),
// summed in float32; LayerNorm, softmax and the residual stream stay F32.
// The bound covers the two roundings of every product through the
// encoder: the errors measured on the fixtures (go test -v) are at most
// 0.031 on hidden states and 0.067 on logits.
var BF16 = loadertest.Tolerances{Hidden: 5e-2, Logits: 1e-1}

func TestParityCPUBF16(t *testing.T) {
	loadertest.Parity(t, "../testdata/bert-tiny", nn.CPU{BF16Weights: true}, BF16)
}
