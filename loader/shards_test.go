package loader

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseShardIndex(t *testing.T) {
	ix, err := parseShardIndex("i.json", []byte(`{"metadata": {"total_size": 8},
		"weight_map": {"c": "b.bin", "a": "a..b.bin", "b": "b.bin", "d": "a..b.bin"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ix.shards, []string{"a..b.bin", "b.bin"}) {
		t.Errorf("shards %q", ix.shards)
	}
	if !slices.Equal(ix.names["a..b.bin"], []string{"a", "d"}) || !slices.Equal(ix.names["b.bin"], []string{"b", "c"}) {
		t.Errorf("names %q", ix.names)
	}

	for _, c := range []struct {
		name, index string
		want        []string
	}{
		{"not JSON", `{"weight_map": `, []string{"i.json", "unexpected end of JSON"}},
		{"no weight_map", `{"metadata": {}}`, []string{"i.json", "empty or missing weight_map"}},
		{"null weight_map", `{"weight_map": null}`, []string{"i.json", "empty or missing weight_map"}},
		{"empty weight_map", `{"weight_map": {}}`, []string{"i.json", "empty or missing weight_map"}},
		{"shard not a string", `{"weight_map": {"w": 1}}`, []string{"i.json", "cannot unmarshal number"}},
		{"parent directory", `{"weight_map": {"w": "../x.bin"}}`, []string{"i.json", `tensor "w"`, `shard "../x.bin"`, "beside the index"}},
		{"dot-dot", `{"weight_map": {"w": ".."}}`, []string{`tensor "w"`, `shard ".."`}},
		{"dot", `{"weight_map": {"w": "."}}`, []string{`tensor "w"`, `shard "."`}},
		{"absolute", `{"weight_map": {"w": "/etc/passwd"}}`, []string{`tensor "w"`, `shard "/etc/passwd"`}},
		{"subdirectory", `{"weight_map": {"w": "sub/x.bin"}}`, []string{`tensor "w"`, `shard "sub/x.bin"`}},
		{"backslash", `{"weight_map": {"w": "..\\x.bin"}}`, []string{`tensor "w"`, `shard "..\\x.bin"`}},
		{"empty name", `{"weight_map": {"w": ""}}`, []string{`tensor "w"`, `shard ""`}},
		{"first bad entry by name", `{"weight_map": {"z": "../z", "a": "ok.bin", "m": "../m"}}`, []string{`tensor "m"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseShardIndex("i.json", []byte(c.index))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// FuzzShardIndex: whatever the bytes, an index either is refused or lists
// each shard once, in order, each a plain file name, with the tensors the
// map puts in it.
func FuzzShardIndex(f *testing.F) {
	// Small seeds only: from a real index (a kilobyte or more), minimizing
	// each new input would take the whole run.
	f.Add([]byte(`{"metadata": {"total_size": 8}, "weight_map": {"a": "x-1.bin", "b": "x-2.bin", "c": "x-1.bin"}}`))
	f.Add([]byte(`{"weight_map": {"a": "x.safetensors", "b": "../y", "c": "/z", "d": "s/t"}}`))
	f.Add([]byte(`{"weight_map": {"a": "a..b", "a": "c"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ix, err := parseShardIndex("fuzz.json", data)
		if err != nil {
			return
		}
		if !slices.IsSorted(ix.shards) || len(slices.Compact(slices.Clone(ix.shards))) != len(ix.shards) {
			t.Fatalf("shards %q not sorted and unique", ix.shards)
		}
		if len(ix.names) != len(ix.shards) {
			t.Fatalf("%d shards but tensors for %d", len(ix.shards), len(ix.names))
		}
		for _, s := range ix.shards {
			// Opened as Join(dir, s): that must be a file directly in dir.
			if p := filepath.Join("model", s); filepath.Dir(p) != "model" || p == "model" || filepath.IsAbs(s) || strings.Contains(s, `\`) {
				t.Fatalf("shard %q accepted", s)
			}
			if len(ix.names[s]) == 0 || !slices.IsSorted(ix.names[s]) {
				t.Fatalf("shard %q: tensors %q", s, ix.names[s])
			}
		}
	})
}
