package torchbin

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// OpenIndex reads a sharded checkpoint from its pytorch_model.bin.index.json
// ({"weight_map": {tensor: shard file}}): each shard is opened once, all
// their tensors are returned (shards in name order), and a tensor the map
// names but its shard lacks, or a tensor found in two shards, is an error.
func OpenIndex(indexPath string) ([]Tensor, error) {
	raw, err := os.ReadFile(indexPath)
	if err != nil {
		return nil, fmt.Errorf("torchbin: %w", err)
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(raw, &idx); err != nil {
		return nil, fmt.Errorf("torchbin: %s: %w", indexPath, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, fmt.Errorf("torchbin: %s: empty or missing weight_map", indexPath)
	}
	byShard := map[string][]string{}
	for tensor, shard := range idx.WeightMap {
		// Shards live next to the index; a name that climbs out of that
		// directory is a malformed (or hostile) index.
		if shard == "" || filepath.IsAbs(shard) || !filepath.IsLocal(shard) {
			return nil, fmt.Errorf("torchbin: %s: tensor %q: shard %q is not a file beside the index", indexPath, tensor, shard)
		}
		byShard[shard] = append(byShard[shard], tensor)
	}
	shards := make([]string, 0, len(byShard))
	for s := range byShard {
		shards = append(shards, s)
	}
	slices.Sort(shards)

	dir := filepath.Dir(indexPath)
	var out []Tensor
	from := map[string]string{} // tensor name -> shard that held it
	for _, shard := range shards {
		ts, err := Open(filepath.Join(dir, shard))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", indexPath, err)
		}
		for _, t := range ts {
			if prev, dup := from[t.Name]; dup {
				return nil, fmt.Errorf("torchbin: %s: tensor %q is in both %s and %s", indexPath, t.Name, prev, shard)
			}
			from[t.Name] = shard
		}
		var missing []string
		for _, name := range byShard[shard] {
			if from[name] != shard {
				missing = append(missing, name)
			}
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			return nil, fmt.Errorf("torchbin: %s: shard %s lacks tensor %q named in the weight map (%d missing)",
				indexPath, shard, missing[0], len(missing))
		}
		out = append(out, ts...)
	}
	return out, nil
}
