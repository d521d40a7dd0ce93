package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/loader"
	"github.com/bertstream/bertstream/nn"
)

func init() {
	register(&command{name: "inspect", summary: "describe a model directory: config, checkpoint format, heads, tensors", run: runInspect})
}

type inspectTensor struct {
	Name  string `json:"name"`
	DType string `json:"dtype"`
	Shape []int  `json:"shape"`
}

type inspectReport struct {
	Dir        string          `json:"dir"`
	Checkpoint string          `json:"checkpoint"`
	Format     loader.Format   `json:"format"`
	Arch       string          `json:"architecture"`
	Config     bert.Config     `json:"config"`
	Heads      []string        `json:"heads"`
	Labels     []string        `json:"labels,omitempty"`
	Params     int64           `json:"parameters"`
	Tensors    []inspectTensor `json:"tensors"`
	Ignored    []string        `json:"ignored,omitempty"`
	// Sentence is what a sentence-transformers directory sets for embed.
	Sentence *bert.SentenceConfig `json:"sentence_transformers,omitempty"`
}

func runInspect(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("inspect", "inspect --model DIR [--json] [--weights FILE]", stderr)
	model := fs.String("model", "", "model directory")
	weights := fs.String("weights", "", "checkpoint file, overriding the search in --model")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *model == "" {
		fs.Usage()
		return errors.New("--model is required")
	}
	sd, err := loader.ReadSentenceDir(*model)
	if err != nil {
		return err
	}
	modelDir := *model
	if sd != nil {
		modelDir = sd.ModelDir
	}
	path := *weights
	if path == "" {
		if path, _, err = loader.FindWeights(modelDir); err != nil {
			return err
		}
	}
	ck, err := loader.ReadCheckpoint(path)
	if err != nil {
		return err
	}
	defer ck.Close()
	r := inspectReport{Dir: *model, Checkpoint: path, Format: ck.Format}
	if sd != nil {
		r.Sentence = &sd.Config
	}
	for _, t := range ck.Tensors {
		r.Tensors = append(r.Tensors, inspectTensor{t.Name, t.DType, t.Shape})
		if n, err := nn.CheckedElements(t.Shape, 1<<50); err == nil && (t.DType == "F32" || t.DType == "F16" || t.DType == "BF16" || t.DType == "F64") {
			r.Params += n
		}
	}
	// Building the model checks every tensor against the config; inspect
	// reports what the loader would say, without reading the weights.
	m, err := loader.Inspect(modelDir, loader.Options{Weights: path})
	if err != nil {
		return err
	}
	r.Arch, r.Config, r.Labels, r.Ignored, r.Heads = m.Arch, m.Config, m.Labels, m.Ignored, m.Heads
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	c := r.Config
	fmt.Fprintf(stdout, "model:        %s\n", filepath.Clean(r.Dir))
	fmt.Fprintf(stdout, "checkpoint:   %s (%s)\n", r.Checkpoint, r.Format)
	fmt.Fprintf(stdout, "architecture: %s\n", r.Arch)
	fmt.Fprintf(stdout, "shape:        %d layers, hidden %d, %d heads, intermediate %d, vocabulary %d, %d positions, %s\n",
		c.NumHiddenLayers, c.HiddenSize, c.NumAttentionHeads, c.IntermediateSize, c.VocabSize, c.MaxPositionEmbeddings, c.HiddenAct)
	fmt.Fprintf(stdout, "heads:        %v\n", r.Heads)
	if len(r.Labels) > 0 {
		fmt.Fprintf(stdout, "labels:       %v\n", r.Labels)
	}
	if c.ProblemType != "" {
		fmt.Fprintf(stdout, "problem type: %s\n", c.ProblemType)
	}
	if st := r.Sentence; st != nil {
		fmt.Fprintf(stdout, "sentence-transformers: pooling %s, normalize %v, max_seq_length %d, do_lower_case %v (modules %s)\n",
			st.Pooling, st.Normalize, st.MaxSeqLength, st.Lowercase, strings.Join(st.Modules, ", "))
	}
	fmt.Fprintf(stdout, "parameters:   %d (%.1f M)\n", r.Params, float64(r.Params)/1e6)
	fmt.Fprintf(stdout, "tensors:      %d\n", len(r.Tensors))
	for _, t := range r.Tensors {
		fmt.Fprintf(stdout, "  %-60s %-5s %v\n", t.Name, t.DType, t.Shape)
	}
	for _, n := range r.Ignored {
		fmt.Fprintf(stdout, "ignored:      %s\n", n)
	}
	return nil
}
