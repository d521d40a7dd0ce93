package loader

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// shardIndex is the index of a sharded checkpoint
// (model.safetensors.index.json or pytorch_model.bin.index.json):
// {"weight_map": {tensor: shard file}}, the same for both formats.
type shardIndex struct {
	path   string              // the index file, which errors name
	shards []string            // the shard file names, in name order, each once
	names  map[string][]string // shard file name -> the tensors the map puts there, sorted
}

// readShardIndex reads and checks the index at path.
func readShardIndex(path string) (*shardIndex, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseShardIndex(path, data)
}

// parseShardIndex checks an index's bytes; path is for errors. The index
// comes with the downloaded model, so it is as untrusted as the weights.
func parseShardIndex(path string, data []byte) (*shardIndex, error) {
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, fmt.Errorf("%s: empty or missing weight_map", path)
	}
	ix := &shardIndex{path: path, names: map[string][]string{}}
	// In name order, so that of several bad entries the error names the
	// same one every time.
	for _, tensor := range slices.Sorted(maps.Keys(idx.WeightMap)) {
		shard := idx.WeightMap[tensor]
		if !isShardName(shard) {
			return nil, fmt.Errorf("%s: tensor %q names shard %q, want a file beside the index", path, tensor, shard)
		}
		if ix.names[shard] == nil {
			ix.shards = append(ix.shards, shard)
		}
		ix.names[shard] = append(ix.names[shard], tensor)
	}
	slices.Sort(ix.shards)
	return ix, nil
}

// isShardName reports whether s names a file beside the index, where
// save_pretrained writes shards. Anything else (a path that climbs out of
// the model directory, an absolute one, one into a subdirectory or the
// directory itself) comes from a malformed or hostile index.
func isShardName(s string) bool {
	return s != "." && filepath.IsLocal(s) && !strings.ContainsAny(s, `/\`)
}

// addShards reads, with add, each shard that the index at indexPath names,
// once, in name order, and checks what they hold against the index: every
// tensor the weight map names must be in the shard it names, and no tensor
// may be in two shards. Tensors the map does not name are kept, as
// transformers keeps them.
func (c *Checkpoint) addShards(indexPath string, add func(path string) error) error {
	ix, err := readShardIndex(indexPath)
	if err != nil {
		return err
	}
	dir := filepath.Dir(indexPath)
	from := map[string]string{} // tensor -> the shard it was found in
	for _, shard := range ix.shards {
		first := len(c.Tensors)
		if err := add(filepath.Join(dir, shard)); err != nil {
			return fmt.Errorf("%s: %w", indexPath, err)
		}
		for _, t := range c.Tensors[first:] {
			if prev, dup := from[t.Name]; dup && prev != shard {
				return fmt.Errorf("%s: tensor %q is in both %s and %s", indexPath, t.Name, prev, shard)
			}
			from[t.Name] = shard
		}
		var missing []string
		for _, name := range ix.names[shard] {
			if from[name] != shard {
				missing = append(missing, name)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%s: shard %s lacks tensor %q named in the weight map (%d missing)",
				indexPath, shard, missing[0], len(missing))
		}
	}
	return nil
}
