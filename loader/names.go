package loader

import (
	"errors"

	"github.com/bertstream/bertstream/bert"
)

// fileNames gives a tensor error of the model the tensor's name as the
// checkpoint spells it (an old "encoder.layer.0.output.LayerNorm.gamma"
// rather than the model's canonical name), so that the user finds it in
// the file.
func (c *Checkpoint) fileNames(err error) error {
	var te *bert.TensorError
	if !errors.As(err, &te) {
		return err
	}
	for _, t := range c.Tensors {
		if canonicalName(t.Name) == te.Name && t.Name != te.Name {
			te.Name = t.Name
			break
		}
	}
	return err
}
