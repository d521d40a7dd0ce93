package loader

import (
	"path/filepath"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/bert/tokenize"
)

// LoadPredictor loads a model directory and its tokenizer files into a
// task predictor named after the directory. A sentence-transformers
// directory (modules.json) sets embed's defaults, unless popts.Sentence is
// set already.
func LoadPredictor(dir string, opts Options, popts bert.PredictorOptions) (*bert.Predictor, error) {
	sd, err := ReadSentenceDir(dir)
	if err != nil {
		return nil, explainLFS(dir, err)
	}
	modelDir := dir
	if sd != nil {
		modelDir = sd.ModelDir
		if popts.Sentence == nil {
			popts.Sentence = &sd.Config
		}
	}
	tok, err := tokenize.Load(modelDir)
	if err != nil {
		return nil, explainLFS(modelDir, err)
	}
	m, err := Load(modelDir, opts)
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
	p.Dir = dir
	return p, nil
}
