package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/bert/task"
	"github.com/bertstream/bertstream/loader"
)

func init() {
	register(&command{name: "predict", summary: "run a task (classify, rerank, ner, fill-mask, nsp, embed) on texts and print JSON lines", run: runPredict})
}

// predictInput is one JSON line of --input.
type predictInput struct {
	Text     *string  `json:"text"`
	TextPair *string  `json:"text_pair"`
	Query    *string  `json:"query"`
	Passages []string `json:"passages"`
}

// errLinesFailed is predict's answer when some inputs got an error line:
// the output is complete, and the exit status tells a script so.
var errLinesFailed = errors.New("inputs failed")

func runPredict(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("predict", "predict --model DIR --task classify|rerank|ner|fill-mask|nsp|embed [flags] [TEXT...]\n\n"+
		"Prints one JSON line per input; an input that cannot be answered gets a line with \"error\".\n"+
		"Exit status: 0 all answered, 1 some inputs failed (their lines say why) or the model\n"+
		"cannot serve the task at all (one line on stderr), 2 bad flags.", stderr)
	model := fs.String("model", "", "model directory")
	taskName := fs.String("task", "", "classify, rerank, ner (token-classification), fill-mask, nsp or embed")
	topK := fs.Int("top-k", 5, "fill-mask: candidates per [MASK]")
	pooling := fs.String("pooling", "", "embed: "+strings.Join(bert.Poolings, ", ")+" (default: the sentence-transformers 1_Pooling, else mean)")
	normalize := fs.Bool("normalize", false, "embed: scale vectors to unit length (default: true when modules.json has Normalize)")
	aggregation := fs.String("aggregation", "none", "ner: "+strings.Join(bert.Aggregations, ", ")+", as transformers' aggregation_strategy")
	query := fs.String("query", "", "rerank: the query; the TEXT arguments are the passages")
	returnText := fs.Bool("return-text", false, "rerank: print each passage beside its score")
	input := fs.String("input", "", `read JSON lines {"text":..., "text_pair":...} (rerank: {"query":..., "passages":[...]}) from this file ("-": stdin) instead of arguments`)
	sep := fs.String("sep", "|||", "in TEXT arguments, what separates a text from its pair (nsp, or classify of pairs)")
	batch := fs.Int("batch", 32, "inputs per forward pass")
	maxLen := fs.Int("max-len", 0, "tokens per input, specials included (0: the model's limit)")
	truncate := fs.Bool("truncate", true, "cut over-long inputs instead of refusing them")
	var bf backendFlags
	bf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	normalizeSet := false
	fs.Visit(func(f *flag.Flag) { normalizeSet = normalizeSet || f.Name == "normalize" })
	if *model == "" || *taskName == "" {
		fs.Usage()
		return errors.New("--model and --task are required")
	}
	if *batch < 1 {
		return errors.New("--batch must be at least 1")
	}
	be, err := bf.open()
	if err != nil {
		return err
	}
	load := startMeter(stderr, "loading "+*model, 0)
	p, err := loader.LoadPredictor(*model, loader.Options{Backend: be}, bert.PredictorOptions{MaxLen: *maxLen, Truncate: *truncate})
	load.end()
	if err != nil {
		return err
	}
	defer p.Model.Close()
	name := task.Canonical(*taskName)
	if !slices.Contains(p.Tasks(), name) {
		return fmt.Errorf("model directory %s cannot serve task %q: it supports %s", *model, *taskName, strings.Join(p.Tasks(), ", "))
	}
	rerank := name == task.Rerank
	if rerank && *input == "" && *query == "" {
		return errors.New("rerank needs --query (or --input with \"query\" and \"passages\" per line)")
	}

	type item struct {
		req     task.Request
		text    string
		pair    *string
		query   *string
		lineErr error
	}
	mk := func(text string, pair *string) item {
		r := task.Request{Task: name, Text: text, TopK: *topK, Pooling: *pooling, Normalize: *normalize, HasNormalize: normalizeSet,
			Aggregation: *aggregation, ReturnText: *returnText}
		if pair != nil {
			r.TextPair, r.HasPair = *pair, true
		}
		return item{req: r, text: text, pair: pair}
	}
	mkRerank := func(q string, passages []string) item {
		it := mk("", nil)
		it.req.Text, it.req.Query, it.req.Passages = "", q, passages
		it.query = &q
		return it
	}
	var items []item
	var next func() (item, bool, error)
	total := 0 // inputs, when known in advance
	if *input != "" {
		var r io.Reader = os.Stdin
		if *input != "-" {
			f, err := os.Open(*input)
			if err != nil {
				return err
			}
			defer f.Close()
			r = f
		}
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		line := 0
		next = func() (item, bool, error) {
			for sc.Scan() {
				line++
				b := sc.Bytes()
				if len(strings.TrimSpace(string(b))) == 0 {
					continue
				}
				var in predictInput
				if err := json.Unmarshal(b, &in); err != nil {
					return item{text: string(b), lineErr: fmt.Errorf("line %d: %v", line, err)}, true, nil
				}
				if rerank {
					if in.Query == nil {
						return item{text: string(b), lineErr: fmt.Errorf("line %d: no \"query\" field", line)}, true, nil
					}
					return mkRerank(*in.Query, in.Passages), true, nil
				}
				if in.Text == nil {
					return item{text: string(b), lineErr: fmt.Errorf("line %d: no \"text\" field", line)}, true, nil
				}
				return mk(*in.Text, in.TextPair), true, nil
			}
			return item{}, false, sc.Err()
		}
	} else {
		if fs.NArg() == 0 {
			return errors.New("no TEXT arguments and no --input")
		}
		rest := fs.Args()
		total = len(rest)
		if rerank {
			// One request: the arguments are the passages of the query.
			total = 1
			rest = []string{}
			items = append(items, mkRerank(*query, fs.Args()))
		}
		next = func() (item, bool, error) {
			if len(rest) == 0 {
				return item{}, false, nil
			}
			a := rest[0]
			rest = rest[1:]
			if *sep != "" {
				if i := strings.Index(a, *sep); i >= 0 {
					pair := strings.TrimSpace(a[i+len(*sep):])
					return mk(strings.TrimSpace(a[:i]), &pair), true, nil
				}
			}
			return mk(a, nil), true, nil
		}
	}

	failed, seen := 0, 0
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	run := startMeter(stderr, "predicting", total)
	defer run.end()
	flush := func() error {
		reqs := make([]task.Request, 0, len(items))
		at := make([]int, 0, len(items))
		for i, it := range items {
			if it.lineErr == nil {
				reqs = append(reqs, it.req)
				at = append(at, i)
			}
		}
		res := p.Predict(context.Background(), reqs)
		results := make([]task.Result, len(items))
		for j, i := range at {
			results[i] = res[j]
		}
		for i, it := range items {
			obj := map[string]any{"text": it.text}
			if it.pair != nil {
				obj["text_pair"] = *it.pair
			}
			if it.query != nil {
				delete(obj, "text")
				obj["query"] = *it.query
			}
			switch {
			case it.lineErr != nil:
				obj["error"] = it.lineErr.Error()
				failed++
			case results[i].Err != nil:
				obj["error"] = results[i].Err.Error()
				failed++
			default:
				if err := merge(obj, results[i].Value); err != nil {
					return err
				}
			}
			if err := enc.Encode(obj); err != nil {
				return err
			}
		}
		run.add(len(items))
		seen += len(items)
		items = items[:0]
		return nil
	}
	for {
		it, ok, err := next()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		items = append(items, it)
		if len(items) >= *batch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d %w (see their \"error\")", failed, seen, errLinesFailed)
	}
	return nil
}

// merge adds the fields of a result object to obj, so that a line reads
// {"text": ..., "label": ..., "scores": ...}.
func merge(obj map[string]any, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return err
	}
	for k, f := range fields {
		obj[k] = f
	}
	return nil
}
