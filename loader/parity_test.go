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
// 0.031 on hidden states and 0.089 on logits (the MLM head's, from the F16
// checkpoint).
var BF16 = loadertest.Tolerances{Hidden: 5e-2, Logits: 1e-1}

func TestParityCPUBF16(t *testing.T) {
	loadertest.Parity(t, "../testdata/bert-tiny", nn.CPU{BF16Weights: true}, BF16)
}

// INT8 is the linear layers' products on weights quantized per output
// channel and activations per token to 8 bits (a rounding error up to
// 1/254 of each row's largest magnitude), summed exactly; LayerNorm,
// attention and the residual stream stay F32. On bert-tiny the errors
// measured (go test -v) are at most 0.125 on hidden states and 0.29 on
// logits (the MLM head's, over 30522 words; 0.039 on NSP's, 0.028 on a
// classifier's): about three times BF16's.
var INT8 = loadertest.Tolerances{Hidden: 2e-1, Logits: 4e-1}

func TestParityCPUInt8(t *testing.T) {
	loadertest.Parity(t, "../testdata/bert-tiny", nn.CPU{Int8Weights: true}, INT8)
}
