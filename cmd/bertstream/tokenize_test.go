package main

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

const vocabOnlyDir = "../../testdata/bert-tiny/vocab-only"

func decodeLines(t *testing.T, out string) []tokenizeResult {
	t.Helper()
	var rs []tokenizeResult
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var r tokenizeResult
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("output %q: %v", out, err)
		}
		rs = append(rs, r)
	}
	return rs
}

func TestTokenizeCommand(t *testing.T) {
	var out, errb bytes.Buffer
	code := runMain([]string{"tokenize", "--model", vocabOnlyDir, "Hello, World!", "café <b>[MASK]", ""}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	want := []tokenizeResult{
		{Text: "Hello, World!", Tokens: []string{"hello", ",", "world", "!"}, IDs: []int32{7592, 1010, 2088, 999}},
		{Text: "café <b>[MASK]", Tokens: []string{"cafe", "<", "b", ">", "[MASK]"}, IDs: []int32{7668, 1026, 1038, 1028, 103}},
		{Text: "", Tokens: []string{}, IDs: []int32{}},
	}
	got := decodeLines(t, out.String())
	if !slices.EqualFunc(got, want, func(a, b tokenizeResult) bool {
		return a.Text == b.Text && slices.Equal(a.Tokens, b.Tokens) && slices.Equal(a.IDs, b.IDs)
	}) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	// Empty results are [] rather than null, and HTML is not escaped.
	if !strings.Contains(out.String(), `{"text":"","tokens":[],"ids":[]}`) || !strings.Contains(out.String(), "<b>") {
		t.Errorf("output %q", out.String())
	}
}

func TestTokenizeStdin(t *testing.T) {
	old := tokenizeStdin
	defer func() { tokenizeStdin = old }()
	tokenizeStdin = strings.NewReader("first line\r\n\nnaïve\nno newline")
	var out, errb bytes.Buffer
	if code := runMain([]string{"tokenize", "--model", vocabOnlyDir}, &out, &errb); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	got := decodeLines(t, out.String())
	var texts, tokens []string
	for _, r := range got {
		texts = append(texts, r.Text)
		tokens = append(tokens, strings.Join(r.Tokens, " "))
	}
	if !slices.Equal(texts, []string{"first line", "", "naïve", "no newline"}) ||
		!slices.Equal(tokens, []string{"first line", "", "naive", "no new ##line"}) {
		t.Errorf("texts %q, tokens %q", texts, tokens)
	}
}

func TestTokenizeCommandErrors(t *testing.T) {
	for _, c := range []struct {
		args   []string
		code   int
		stderr string
		stdout string
	}{
		{[]string{"tokenize", "--help"}, 0, "usage: bertstream tokenize --model DIR", ""},
		{[]string{"tokenize", "x"}, 1, "--model is required", ""},
		{[]string{"tokenize", "--model", "no/such/dir", "x"}, 1, "neither tokenizer.json nor vocab.txt", ""},
		{[]string{"tokenize", "--bogus"}, 1, "flag provided but not defined", ""},
	} {
		var out, errb bytes.Buffer
		code := runMain(c.args, &out, &errb)
		if code != c.code || !strings.Contains(errb.String(), c.stderr) || out.String() != c.stdout {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", c.args, code, out.String(), errb.String())
		}
	}
}
