package loader_test

import (
	"testing"

	"github.com/bertstream/bertstream/loader/loadertest"
	"github.com/bertstream/bertstream/nn"
)

func TestParityCPU(t *testing.T) {
	loadertest.Parity(t, "../testdata/bert-tiny", nn.CPU{}, loadertest.F32)
}
