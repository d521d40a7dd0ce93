package loader

import (
	"path/filepath"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/bert/tokenize"
)

// LoadPredictor loads a model directory and its tokenizer files into a
// task predictor named after the directory.
func LoadPredictor(dir string, opts Options, popts bert.PredictorOptions) (*bert.Predictor, error) {
	tok, err := tokenize.Load(dir)
	if err != nil {
		return nil, err
	}
	m, err := Load(dir, opts)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	p, err := bert.NewPredictor(m.Model, tok, filepath.Base(abs), popts)
	if err != nil {
		m.Close()
		return nil, err
	}
	return p, nil
}
