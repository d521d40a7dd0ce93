package loader_test

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/bertstream/bertstream/loader"
	"github.com/bertstream/bertstream/loader/torchbin"
)

// binShards is a .bin checkpoint that PyTorch wrote in two shards
// (torchbin/testdata/make_fixtures.py), with the tensors of dtypes.bin.
const binShards = "torchbin/testdata/sharded"

// TestShardedBin checks that the sharded .bin fixture reads as the
// unsharded dtypes.bin, which torchbin's tests compare with PyTorch's own
// view of the tensors.
func TestShardedBin(t *testing.T) {
	ck, err := loader.ReadCheckpoint(filepath.Join(binShards, "pytorch_model.bin.index.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if ck.Format != loader.TorchBinSharded {
		t.Errorf("format %q", ck.Format)
	}
	wf, err := torchbin.Open("torchbin/testdata/dtypes.bin")
	if err != nil {
		t.Fatal(err)
	}
	defer wf.Close()
	want := wf.Tensors
	got := map[string]loader.RawTensor{}
	for _, x := range ck.Tensors {
		got[x.Name] = x
	}
	if len(got) != len(want) {
		t.Errorf("%d tensors, want %d", len(got), len(want))
	}
	for _, w := range want {
		g, ok := got[w.Name]
		switch {
		case !ok:
			t.Errorf("%s: missing", w.Name)
		case g.DType != w.DType || !reflect.DeepEqual(g.Shape, w.Shape):
			t.Errorf("%s: %s %v, want %s %v", w.Name, g.DType, g.Shape, w.DType, w.Shape)
		case !bytes.Equal(g.Data, w.Data):
			t.Errorf("%s: data differs", w.Name)
		}
	}
}

// TestShardIndexRules checks that both formats' indexes are held to the
// same rules, each refusal naming the index, the tensor and the shard.
func TestShardIndexRules(t *testing.T) {
	for _, f := range []struct {
		format, index string
		// dir makes a new directory holding a good sharded checkpoint.
		dir func(t *testing.T) string
	}{
		{"safetensors", "model.safetensors.index.json", func(t *testing.T) string { return shard(t, nil) }},
		{"bin", "pytorch_model.bin.index.json", func(t *testing.T) string {
			dir := t.TempDir()
			for _, s := range []string{"pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json"} {
				copyFile(t, filepath.Join(binShards, s), filepath.Join(dir, s))
			}
			return dir
		}},
	} {
		for _, c := range []struct {
			name string
			// edit breaks the weight map wm (and may add files to dir),
			// given a tensor w that shard s holds and another shard; it
			// returns what the error must name besides the index.
			edit func(t *testing.T, dir string, wm map[string]string, w, s, other string) []string
		}{
			{"good", nil},
			{"tensor in the other shard", func(t *testing.T, dir string, wm map[string]string, w, s, other string) []string {
				wm[w] = other
				return []string{"shard " + other, `lacks tensor "` + w + `"`}
			}},
			{"tensor no shard holds", func(t *testing.T, dir string, wm map[string]string, w, s, other string) []string {
				wm["no.such.tensor"] = s
				return []string{"shard " + s, `lacks tensor "no.such.tensor"`}
			}},
			{"tensor in two shards", func(t *testing.T, dir string, wm map[string]string, w, s, other string) []string {
				copyFile(t, filepath.Join(dir, s), filepath.Join(dir, "0-copy-"+s))
				wm[w] = "0-copy-" + s
				return []string{"is in both 0-copy-" + s + " and " + s}
			}},
			{"shard path with ..", func(t *testing.T, dir string, wm map[string]string, w, s, other string) []string {
				wm[w] = "../" + s
				return []string{`tensor "` + w + `"`, `shard "../` + s + `"`, "beside the index"}
			}},
			{"missing shard", func(t *testing.T, dir string, wm map[string]string, w, s, other string) []string {
				wm[w] = "gone-00003-of-00003"
				return []string{"gone-00003-of-00003", "no such file"}
			}},
			{"empty weight_map", func(t *testing.T, dir string, wm map[string]string, w, s, other string) []string {
				clear(wm)
				return []string{"empty or missing weight_map"}
			}},
		} {
			t.Run(f.format+"/"+c.name, func(t *testing.T) {
				dir := f.dir(t)
				index := filepath.Join(dir, f.index)
				raw, err := os.ReadFile(index)
				if err != nil {
					t.Fatal(err)
				}
				var idx struct {
					WeightMap map[string]string `json:"weight_map"`
				}
				if err := json.Unmarshal(raw, &idx); err != nil {
					t.Fatal(err)
				}
				wm := idx.WeightMap
				w := slices.Min(slices.Collect(maps.Keys(wm)))
				s, other := wm[w], ""
				for _, v := range wm {
					if v != s {
						other = v
					}
				}
				var want []string
				if c.edit != nil {
					want = append(c.edit(t, dir, wm, w, s, other), f.index)
					b, err := json.Marshal(map[string]any{"weight_map": wm})
					if err != nil {
						t.Fatal(err)
					}
					write(t, index, b)
				}
				ck, err := loader.ReadCheckpoint(index)
				if want == nil {
					if err != nil {
						t.Fatal(err)
					}
					ck.Close()
					return
				}
				if err == nil {
					ck.Close()
					t.Fatal("read")
				}
				for _, x := range want {
					if !strings.Contains(err.Error(), x) {
						t.Errorf("error %q does not mention %q", err, x)
					}
				}
			})
		}
	}
}
