package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/kernels"
	"github.com/bertstream/bertstream/loader/safetensors"
	"github.com/bertstream/bertstream/nn"
)

// writeRandomModel writes a model directory of a preset's shape with
// random weights: a BertForSequenceClassification (two labels) whose
// model.safetensors holds the weights in dtype (F32, F16 or BF16) under
// the names transformers saves, its config.json and a vocab.txt of the
// preset's size. It is what `bench --load --preset` measures loading, in
// place of a downloaded checkpoint of the same size.
func writeRandomModel(dir, preset string, dtype nn.DType, seed int64) error {
	cfg, err := bert.Preset(preset)
	if err != nil {
		return err
	}
	cfg.Architectures = []string{"BertForSequenceClassification"}
	cfg.ID2Label = map[string]string{"0": "NEGATIVE", "1": "POSITIVE"}
	cfg.NumLabels = 2
	host := nn.NewScope("random-model")
	defer host.Close()
	ts, err := bert.RandomTensors(host, cfg, seed)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(ts))
	for n := range ts {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]safetensors.Tensor, 0, len(names))
	for _, n := range names {
		t := ts[n]
		st := safetensors.Tensor{Name: n, DType: dtype.String(), Shape: t.Shape()}
		switch dtype {
		case nn.F32:
			st.Data = t.HostBytes()
		case nn.F16, nn.BF16:
			u := make([]uint16, t.Len())
			if dtype == nn.F16 {
				kernels.F32ToF16(u, t.F32())
			} else {
				kernels.F32ToBF16(u, t.F32())
			}
			b := make([]byte, 2*len(u))
			for i, v := range u {
				b[2*i], b[2*i+1] = byte(v), byte(v>>8)
			}
			st.Data = b
		default:
			return fmt.Errorf("random model: checkpoint dtype %s (want F32, F16 or BF16)", dtype)
		}
		out = append(out, st)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := safetensors.WriteFile(filepath.Join(dir, "model.safetensors"), out, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	cj, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cj, 0o644); err != nil {
		return err
	}
	return writeVocab(filepath.Join(dir, "vocab.txt"), cfg.VocabSize)
}

// writeVocab writes a WordPiece vocabulary of n entries that tokenizes
// any lower-case ASCII text: bert-base-uncased's special tokens at their
// ids, single characters with and without "##", then filler words.
func writeVocab(path string, n int) error {
	var v []string
	v = append(v, "[PAD]")
	for i := 0; i < 99; i++ {
		v = append(v, fmt.Sprintf("[unused%d]", i))
	}
	v = append(v, "[UNK]", "[CLS]", "[SEP]", "[MASK]")
	for c := byte('!'); c <= '~'; c++ {
		if c >= 'A' && c <= 'Z' {
			continue
		}
		v = append(v, string(c))
	}
	for c := byte('a'); c <= 'z'; c++ {
		v = append(v, "##"+string(c))
	}
	for i := 0; len(v) < n; i++ {
		v = append(v, fmt.Sprintf("word%d", i))
	}
	if len(v) > n {
		return fmt.Errorf("random model: a vocabulary of %d entries cannot hold the %d characters", n, len(v))
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	w.WriteString(strings.Join(v, "\n") + "\n")
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
