//go:build !cuda

package cuda

import (
	"errors"
	"testing"

	"github.com/bertstream/bertstream/nn"
)

func TestStubSaysHowToBuild(t *testing.T) {
	_, err := nn.Open("cuda", nn.Options{})
	if !errors.Is(err, ErrNotBuilt) {
		t.Fatalf("opening cuda without the cuda tag: got %v, want %v", err, ErrNotBuilt)
	}
}
