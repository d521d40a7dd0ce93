package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/bertstream/bertstream/bert/tokenize"
)

func init() {
	register(&command{name: "tokenize", summary: "print the WordPiece tokens and ids of texts", run: runTokenize})
}

// tokenizeStdin is where tokenize reads texts when it is given none; tests
// replace it.
var tokenizeStdin io.Reader = os.Stdin

type tokenizeResult struct {
	Text   string   `json:"text"`
	Tokens []string `json:"tokens"`
	IDs    []int32  `json:"ids"`
}

func runTokenize(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("tokenize", "tokenize --model DIR [TEXT...]\n\n"+
		"Prints one JSON object per text, {\"text\":..., \"tokens\":[...], \"ids\":[...]},\n"+
		"without [CLS] and [SEP]. With no TEXT, reads one text per line from stdin.", stderr)
	model := fs.String("model", "", "model directory (tokenizer.json, or vocab.txt and tokenizer_config.json)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *model == "" {
		fs.Usage()
		return errors.New("--model is required")
	}
	tok, err := tokenize.Load(*model)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(stdout)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	emit := func(text string) error {
		r := tokenizeResult{Text: text, Tokens: []string{}, IDs: []int32{}}
		tokens, ids := tok.Tokenize(text)
		r.Tokens = append(r.Tokens, tokens...)
		r.IDs = append(r.IDs, ids...)
		return enc.Encode(r)
	}
	if texts := fs.Args(); len(texts) > 0 {
		for _, text := range texts {
			if err := emit(text); err != nil {
				return err
			}
		}
		return w.Flush()
	}
	in := bufio.NewReader(tokenizeStdin)
	for line := 1; ; line++ {
		text, err := in.ReadString('\n')
		if text == "" && err != nil {
			if err == io.EOF {
				return w.Flush()
			}
			return fmt.Errorf("reading stdin, line %d: %w", line, err)
		}
		text = strings.TrimSuffix(strings.TrimSuffix(text, "\n"), "\r")
		if err := emit(text); err != nil {
			return err
		}
		// Flush per line so that an interactive user, or a pipe, gets each
		// answer as soon as its line is in.
		if err := w.Flush(); err != nil {
			return err
		}
	}
}
