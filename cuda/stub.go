//go:build !cuda

// Package cuda is bertstream's NVIDIA GPU backend. This build leaves it
// out: it needs cgo and the CUDA toolkit's headers, so it is built only
// with the cuda build tag:
//
//	make build-cuda                            # bin/bertstream-cuda
//	CGO_ENABLED=1 go build -tags cuda ./cmd/bertstream
//
// (see cuda/README.md for the toolkit and for running on a GPU machine).
// Here the package registers a "cuda" backend whose Open says just that.
package cuda

import (
	"errors"

	"github.com/bertstream/bertstream/nn"
)

// ErrNotBuilt is Open's error in a build without the cuda tag.
var ErrNotBuilt = errors.New("this binary was built without the CUDA backend: build it with `make build-cuda` " +
	"(CGO_ENABLED=1 go build -tags cuda, with the CUDA 11.8 toolkit; see cuda/README.md)")

func init() {
	nn.Register("cuda", func(nn.Options) (nn.Backend, error) { return nil, ErrNotBuilt })
}
