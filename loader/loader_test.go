package loader_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bertstream/bertstream/loader"
	"github.com/bertstream/bertstream/loader/safetensors"
	"github.com/bertstream/bertstream/nn"
)

const tinyDir = "../testdata/bert-tiny/bert-pretraining"

// shard splits the tiny checkpoint into two safetensors files plus an
// index in a new directory, as save_pretrained does for large models; edit
// may change the index before it is written.
func shard(t *testing.T, edit func(weightMap map[string]string)) string {
	t.Helper()
	f, err := safetensors.Open(filepath.Join(tinyDir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	weightMap := map[string]string{}
	var parts [2][]safetensors.Tensor
	for i, tn := range f.Tensors {
		k := i % 2
		parts[k] = append(parts[k], tn)
		weightMap[tn.Name] = []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}[k]
	}
	for k, p := range parts {
		name := []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}[k]
		if err := safetensors.WriteFile(filepath.Join(dir, name), p, nil); err != nil {
			t.Fatal(err)
		}
	}
	if edit != nil {
		edit(weightMap)
	}
	idx, _ := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 0}, "weight_map": weightMap})
	write(t, filepath.Join(dir, "model.safetensors.index.json"), idx)
	copyFile(t, filepath.Join(tinyDir, "config.json"), filepath.Join(dir, "config.json"))
	return dir
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// editConfig writes to path the config.json of dir with field set to value.
func editConfig(t *testing.T, dir, path, field string, value any) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{}
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg[field] = value
	if data, err = json.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	write(t, path, data)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	write(t, to, data)
}

// TestShardedSafetensors checks that a sharded checkpoint gives exactly
// the model its unsharded original gives.
func TestShardedSafetensors(t *testing.T) {
	dir := shard(t, nil)
	m, err := loader.Load(dir, loader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Format != loader.SafeTensorsSharded {
		t.Errorf("format %q", m.Format)
	}
	one, err := loader.Load(tinyDir, loader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	in := fullInputs(m.Config, 2, 7)
	s := nn.NewScope("t")
	defer s.Close()
	a, err := m.Forward(s, in, m.WantAll())
	if err != nil {
		t.Fatal(err)
	}
	b, err := one.Forward(s, in, one.WantAll())
	if err != nil {
		t.Fatal(err)
	}
	if d := nn.MaxAbsDiff(a.MLMLogits.F32(), b.MLMLogits.F32()); d != 0 {
		t.Errorf("sharded and single-file checkpoints differ by %g", d)
	}
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		dir  func(t *testing.T) string
		want []string
	}{
		{"no checkpoint", func(t *testing.T) string {
			dir := t.TempDir()
			copyFile(t, filepath.Join(tinyDir, "config.json"), filepath.Join(dir, "config.json"))
			return dir
		}, []string{"no checkpoint", "model.safetensors", "pytorch_model.bin"}},
		{"no config", func(t *testing.T) string { return t.TempDir() }, []string{"config.json"}},
		{"shard outside the directory", func(t *testing.T) string {
			return shard(t, func(wm map[string]string) { wm["bert.pooler.dense.bias"] = "../model.safetensors" })
		}, []string{"bert.pooler.dense.bias", "../model.safetensors"}},
		{"missing shard", func(t *testing.T) string {
			return shard(t, func(wm map[string]string) { wm["bert.pooler.dense.bias"] = "model-00003-of-00003.safetensors" })
		}, []string{"model-00003-of-00003.safetensors"}},
		{"empty index", func(t *testing.T) string {
			dir := shard(t, nil)
			write(t, filepath.Join(dir, "model.safetensors.index.json"), []byte(`{"weight_map": {}}`))
			return dir
		}, []string{"model.safetensors.index.json", "weight_map"}},
		{"truncated checkpoint", func(t *testing.T) string {
			dir := t.TempDir()
			copyFile(t, filepath.Join(tinyDir, "config.json"), filepath.Join(dir, "config.json"))
			data, err := os.ReadFile(filepath.Join(tinyDir, "model.safetensors"))
			if err != nil {
				t.Fatal(err)
			}
			write(t, filepath.Join(dir, "model.safetensors"), data[:len(data)/2])
			return dir
		}, []string{"model.safetensors"}},
		{"config with more layers", func(t *testing.T) string {
			dir := t.TempDir()
			copyFile(t, filepath.Join(tinyDir, "model.safetensors"), filepath.Join(dir, "model.safetensors"))
			editConfig(t, tinyDir, filepath.Join(dir, "config.json"), "num_hidden_layers", 3)
			return dir
		}, []string{"model.safetensors", "bert.encoder.layer.2.", "missing"}},
		{"config with another hidden size", func(t *testing.T) string {
			dir := t.TempDir()
			copyFile(t, filepath.Join(tinyDir, "model.safetensors"), filepath.Join(dir, "model.safetensors"))
			editConfig(t, tinyDir, filepath.Join(dir, "config.json"), "hidden_size", 64)
			return dir
		}, []string{"bert.embeddings.word_embeddings.weight", "[30522 32]", "[30522 64]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := loader.Load(tc.dir(t), loader.Options{})
			if err == nil {
				m.Close()
				t.Fatal("loaded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestNameLayouts renames the tiny checkpoint's tensors the ways other
// exporters do and checks that the model is the same.
func TestNameLayouts(t *testing.T) {
	base, err := loader.Load(tinyDir, loader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	in := fullInputs(base.Config, 2, 9)
	s := nn.NewScope("t")
	defer s.Close()
	want, err := base.Forward(s, in, base.WantAll())
	if err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Open(filepath.Join(tinyDir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, tc := range []struct {
		name   string
		rename func(string) string
	}{
		{"TF-era gamma and beta", func(n string) string {
			if strings.Contains(n, "LayerNorm") {
				n = strings.Replace(strings.Replace(n, ".weight", ".gamma", 1), ".bias", ".beta", 1)
			}
			return n
		}},
		{"decoder bias name", func(n string) string {
			if n == "cls.predictions.bias" {
				return "cls.predictions.decoder.bias"
			}
			return n
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ts []safetensors.Tensor
			for _, x := range f.Tensors {
				x.Name = tc.rename(x.Name)
				ts = append(ts, x)
			}
			dir := t.TempDir()
			if err := safetensors.WriteFile(filepath.Join(dir, "model.safetensors"), ts, nil); err != nil {
				t.Fatal(err)
			}
			copyFile(t, filepath.Join(tinyDir, "config.json"), filepath.Join(dir, "config.json"))
			m, err := loader.Load(dir, loader.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			got, err := m.Forward(s, in, m.WantAll())
			if err != nil {
				t.Fatal(err)
			}
			if d := nn.MaxAbsDiff(got.MLMLogits.F32(), want.MLMLogits.F32()); d != 0 {
				t.Errorf("MLM logits differ by %g", d)
			}
			if d := nn.MaxAbsDiff(got.NSPLogits.F32(), want.NSPLogits.F32()); d != 0 {
				t.Errorf("NSP logits differ by %g", d)
			}
		})
	}
}

// TestIgnoredTensors checks that buffers and the heads of other
// architectures are reported, not silently dropped or refused.
func TestIgnoredTensors(t *testing.T) {
	m, err := loader.Load(tinyDir, loader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if strings.Join(m.Ignored, ",") != "bert.embeddings.position_ids" {
		t.Errorf("ignored %v, want the position_ids buffer", m.Ignored)
	}
}
