package loader

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bertstream/bertstream/bert"
)

// The module types of a sentence-transformers modules.json that embed
// reproduces.
const (
	stTransformer = "sentence_transformers.models.Transformer"
	stPooling     = "sentence_transformers.models.Pooling"
	stNormalize   = "sentence_transformers.models.Normalize"
)

// SentenceDir is a sentence-transformers directory: its embedding
// settings and where its Transformer module keeps the BERT files.
type SentenceDir struct {
	Config bert.SentenceConfig
	// ModelDir is the directory of config.json and the weights: the
	// directory itself, or the Transformer module's folder (older exports
	// keep it in "0_BERT" or "0_Transformer").
	ModelDir string
}

// ReadSentenceDir reads modules.json, the Transformer module's
// sentence_bert_config.json and the Pooling module's config.json. A
// directory without modules.json gives nil, nil. A module that changes
// the embedding and that embed does not reproduce (Dense, LayerNorm, ...)
// is an error: serving without it would give wrong embeddings.
func ReadSentenceDir(dir string) (*SentenceDir, error) {
	var modules []struct {
		Path string `json:"path"`
		Type string `json:"type"`
	}
	mpath := filepath.Join(dir, "modules.json")
	if ok, err := readJSONFile(mpath, &modules); err != nil || !ok {
		return nil, err
	}
	sd := &SentenceDir{ModelDir: dir}
	c := &sd.Config
	var pooling string
	for i, m := range modules {
		c.Modules = append(c.Modules, m.Type)
		if m.Path != "" && !filepath.IsLocal(m.Path) {
			return nil, fmt.Errorf("%s: module %d has path %q, want a folder inside the directory", mpath, i, m.Path)
		}
		switch m.Type {
		case stTransformer:
			if i != 0 {
				return nil, fmt.Errorf("%s: the Transformer module is module %d, want the first", mpath, i)
			}
			sd.ModelDir = filepath.Join(dir, m.Path)
		case stPooling:
			if pooling != "" {
				return nil, fmt.Errorf("%s: two Pooling modules", mpath)
			}
			p, err := readPooling(filepath.Join(dir, m.Path, "config.json"))
			if err != nil {
				return nil, err
			}
			pooling = p
		case stNormalize:
			c.Normalize = true
		default:
			return nil, fmt.Errorf("%s: module %d is %s, which bertstream does not apply: its embeddings would differ from sentence-transformers'", mpath, i, m.Type)
		}
	}
	if len(modules) == 0 || modules[0].Type != stTransformer {
		return nil, fmt.Errorf("%s: no Transformer module first", mpath)
	}
	if pooling == "" {
		// sentence-transformers adds mean pooling to a bare Transformer.
		pooling = bert.PoolMean
	}
	c.Pooling = pooling
	var sb struct {
		MaxSeqLength *int  `json:"max_seq_length"`
		DoLowerCase  *bool `json:"do_lower_case"`
	}
	spath := filepath.Join(sd.ModelDir, "sentence_bert_config.json")
	if _, err := readJSONFile(spath, &sb); err != nil {
		return nil, err
	}
	if sb.MaxSeqLength != nil {
		if *sb.MaxSeqLength < 2 {
			return nil, fmt.Errorf("%s: max_seq_length %d, want at least 2", spath, *sb.MaxSeqLength)
		}
		c.MaxSeqLength = *sb.MaxSeqLength
	}
	if sb.DoLowerCase != nil {
		c.Lowercase = *sb.DoLowerCase
	}
	return sd, nil
}

// readPooling reads a Pooling module's config.json: exactly one mode on.
func readPooling(path string) (string, error) {
	var pc map[string]any
	ok, err := readJSONFile(path, &pc)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("%s is missing: modules.json has a Pooling module there", path)
	}
	modes := []struct{ key, pool string }{
		{"pooling_mode_cls_token", bert.PoolCLS},
		{"pooling_mode_mean_tokens", bert.PoolMean},
		{"pooling_mode_max_tokens", bert.PoolMax},
		{"pooling_mode_mean_sqrt_len_tokens", bert.PoolMeanSqrtLen},
		{"pooling_mode_weightedmean_tokens", bert.PoolWeighted},
		{"pooling_mode_lasttoken", bert.PoolLastToken},
	}
	var on []string
	for _, m := range modes {
		v, present := pc[m.key]
		if !present {
			continue
		}
		b, isBool := v.(bool)
		if !isBool {
			return "", fmt.Errorf("%s: %s is %v, want true or false", path, m.key, v)
		}
		if b {
			on = append(on, m.pool)
		}
	}
	for k, v := range pc {
		if b, _ := v.(bool); b && strings.HasPrefix(k, "pooling_mode_") && !slices.ContainsFunc(modes, func(m struct{ key, pool string }) bool { return m.key == k }) {
			return "", fmt.Errorf("%s: %s is not a pooling bertstream computes", path, k)
		}
	}
	switch len(on) {
	case 0:
		return "", fmt.Errorf("%s: no pooling_mode_* is true", path)
	case 1:
		return on[0], nil
	}
	return "", fmt.Errorf("%s: poolings %s are all on; their concatenation is not supported", path, strings.Join(on, ", "))
}

// readJSONFile decodes path into v; a missing file reports false.
func readJSONFile(path string, v any) (bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := lfsPointer(path, data); err != nil {
		return false, err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	return true, nil
}
