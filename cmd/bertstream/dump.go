package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/loader"
	"github.com/bertstream/bertstream/loader/safetensors"
	"github.com/bertstream/bertstream/nn"
)

func init() {
	register(&command{name: "dump", summary: "run a model on token ids from a safetensors file and write every output", run: runDump})
}

func runDump(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("dump", "dump --model DIR --inputs IN.safetensors --out OUT.safetensors [--device cpu|cuda]\n\n"+
		"OUT holds F32 tensors, each only where the model has the part that computes it:\n"+
		"  embeddings [B,T,H]    output of the embedding LayerNorm\n"+
		"  hidden.N [B,T,H]      output of encoder layer N\n"+
		"  pooled [B,H]          tanh pooler on the first token\n"+
		"  mlm_logits [B,T,V]    masked-LM head\n"+
		"  nsp_logits [B,2]      next-sentence head\n"+
		"  logits [B,labels]     sequence classifier\n"+
		"  token_logits [B,T,labels]  token classifier\n"+
		"Values at padded positions (attention_mask 0) are the engine's own.", stderr)
	model := fs.String("model", "", "model directory (config.json + checkpoint)")
	inputs := fs.String("inputs", "", "safetensors file with I64 input_ids, token_type_ids, attention_mask [B,T]")
	out := fs.String("out", "", "safetensors file to write")
	weights := fs.String("weights", "", "checkpoint file, overriding the search in --model")
	var bf backendFlags
	bf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *model == "" || *inputs == "" || *out == "" {
		fs.Usage()
		return errors.New("--model, --inputs and --out are required")
	}
	be, err := bf.open()
	if err != nil {
		return err
	}
	m, err := loader.Load(*model, loader.Options{Backend: be, Weights: *weights})
	if err != nil {
		return err
	}
	defer m.Close()
	in, err := readInputs(*inputs)
	if err != nil {
		return err
	}
	s := nn.NewScope("dump")
	defer s.Close()
	o, err := m.Forward(s, in, m.WantAll())
	if err != nil {
		return err
	}
	var ts []safetensors.Tensor
	add := func(name string, t *nn.Tensor) error {
		if t == nil {
			return nil
		}
		h, err := be.Download(s, t, nn.F32)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		ts = append(ts, safetensors.Tensor{Name: name, DType: "F32", Shape: h.Shape(), Data: h.HostBytes()})
		return nil
	}
	type named struct {
		name string
		t    *nn.Tensor
	}
	outs := []named{{"embeddings", o.Embeddings}}
	for i, h := range o.Hidden {
		outs = append(outs, named{fmt.Sprintf("hidden.%d", i), h})
	}
	outs = append(outs, named{"pooled", o.Pooled}, named{"mlm_logits", o.MLMLogits}, named{"nsp_logits", o.NSPLogits},
		named{"logits", o.Logits}, named{"token_logits", o.TokenLogits})
	for _, x := range outs {
		if err := add(x.name, x.t); err != nil {
			return err
		}
	}
	meta := map[string]string{"model": *model, "arch": m.Arch, "device": be.Device(), "compute": be.Compute().String()}
	if err := safetensors.WriteFile(*out, ts, meta); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %d tensors for %d x %d tokens to %s\n", len(ts), in.B, in.T, *out)
	return nil
}

// readInputs reads the I64 [B,T] input_ids, token_type_ids (optional) and
// attention_mask (optional: all ones) of a safetensors file.
func readInputs(path string) (bert.Inputs, error) {
	f, err := safetensors.Open(path)
	if err != nil {
		return bert.Inputs{}, err
	}
	defer f.Close()
	var in bert.Inputs
	read := func(name string, required bool) ([]int32, error) {
		t, ok := f.Get(name)
		if !ok {
			if required {
				return nil, fmt.Errorf("%s: no tensor %s", path, name)
			}
			return nil, nil
		}
		if len(t.Shape) != 2 {
			return nil, fmt.Errorf("%s: tensor %s has shape %v, want [B, T]", path, name, t.Shape)
		}
		if in.B == 0 {
			in.B, in.T = t.Shape[0], t.Shape[1]
		} else if t.Shape[0] != in.B || t.Shape[1] != in.T {
			return nil, fmt.Errorf("%s: tensor %s has shape %v, input_ids [%d %d]", path, name, t.Shape, in.B, in.T)
		}
		v := make([]int32, in.B*in.T)
		switch t.DType {
		case "I64":
			for i := range v {
				var u uint64
				for j := 7; j >= 0; j-- {
					u = u<<8 | uint64(t.Data[8*i+j])
				}
				if int64(u) != int64(int32(int64(u))) {
					return nil, fmt.Errorf("%s: tensor %s: value %d at %d does not fit 32 bits", path, name, int64(u), i)
				}
				v[i] = int32(int64(u))
			}
		case "I32":
			for i := range v {
				v[i] = int32(uint32(t.Data[4*i]) | uint32(t.Data[4*i+1])<<8 | uint32(t.Data[4*i+2])<<16 | uint32(t.Data[4*i+3])<<24)
			}
		default:
			return nil, fmt.Errorf("%s: tensor %s is %s, want I64 or I32", path, name, t.DType)
		}
		return v, nil
	}
	if in.IDs, err = read("input_ids", true); err != nil {
		return in, err
	}
	if in.TypeIDs, err = read("token_type_ids", false); err != nil {
		return in, err
	}
	if in.Mask, err = read("attention_mask", false); err != nil {
		return in, err
	}
	if in.Mask == nil {
		in.Mask = make([]int32, in.B*in.T)
		for i := range in.Mask {
			in.Mask[i] = 1
		}
	}
	return in, nil
}
