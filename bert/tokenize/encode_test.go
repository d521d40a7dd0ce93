package tokenize

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// readI64 reads one I64 tensor of a safetensors file: an 8-byte
// little-endian header length, a JSON header, then the data.
func readI64(t *testing.T, path, name string) ([]int64, []int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) < 8 {
		t.Fatalf("%s: %d bytes, no header", path, len(data))
	}
	n := binary.LittleEndian.Uint64(data)
	if n > uint64(len(data)-8) {
		t.Fatalf("%s: header length %d beyond the file", path, n)
	}
	var header map[string]json.RawMessage
	if err := json.Unmarshal(data[8:8+n], &header); err != nil {
		t.Fatalf("%s: header: %v", path, err)
	}
	var info struct {
		Dtype       string   `json:"dtype"`
		Shape       []int    `json:"shape"`
		DataOffsets [2]int64 `json:"data_offsets"`
	}
	if err := json.Unmarshal(header[name], &info); err != nil {
		t.Fatalf("%s: tensor %s: %v", path, name, err)
	}
	body := data[8+n:]
	lo, hi := info.DataOffsets[0], info.DataOffsets[1]
	count := int64(1)
	for _, d := range info.Shape {
		count *= int64(d)
	}
	if info.Dtype != "I64" || lo < 0 || hi > int64(len(body)) || hi-lo != 8*count {
		t.Fatalf("%s: tensor %s: dtype %s shape %v offsets %v in %d data bytes", path, name, info.Dtype, info.Shape, info.DataOffsets, len(body))
	}
	out := make([]int64, count)
	for i := range out {
		out[i] = int64(binary.LittleEndian.Uint64(body[lo+8*int64(i):]))
	}
	return out, info.Shape
}

// TestEncodeReference reproduces the inputs of reference.safetensors, which
// Hugging Face's tokenizer made from the texts and pairs of cases.json.
func TestEncodeReference(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(fixtureDir, "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases struct {
		Texts []string    `json:"texts"`
		Pairs [][2]string `json:"pairs"`
	}
	if err := json.Unmarshal(data, &cases); err != nil {
		t.Fatal(err)
	}
	var in []Input
	for _, s := range cases.Texts {
		in = append(in, Input{Text: s})
	}
	for _, p := range cases.Pairs {
		in = append(in, Input{Text: p[0], Pair: p[1], HasPair: true})
	}
	tok, err := Load(filepath.Join(fixtureDir, "vocab-only"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := tok.Encode(in, 0)
	if err != nil {
		t.Fatal(err)
	}
	ref := filepath.Join(fixtureDir, "reference.safetensors")
	for _, x := range []struct {
		name string
		got  []int32
	}{
		{"input_ids", b.IDs},
		{"token_type_ids", b.TypeIDs},
		{"attention_mask", b.Mask},
	} {
		want, shape := readI64(t, ref, x.name)
		if !slices.Equal(shape, []int{b.B, b.T}) {
			t.Fatalf("%s: reference shape %v, Encode gave [%d %d]", x.name, shape, b.B, b.T)
		}
		for i, w := range want {
			if int64(x.got[i]) != w {
				t.Errorf("%s[%d,%d] = %d, want %d", x.name, i/b.T, i%b.T, x.got[i], w)
			}
		}
	}
	for i, n := range b.Lengths {
		if b.Truncated[i] {
			t.Errorf("row %d truncated", i)
		}
		if n == 0 || b.Mask[i*b.T+n-1] != 1 || (n < b.T && b.Mask[i*b.T+n] != 0) {
			t.Errorf("row %d: length %d disagrees with the mask", i, n)
		}
	}
}

func TestEncodeTruncation(t *testing.T) {
	tok := uncased(t)
	const cls, sep = 101, 102
	// "a b c d e" and "v w x y z" are one token per letter.
	_, abcde := tok.Tokenize("a b c d e")
	_, vwxyz := tok.Tokenize("v w x y z")
	if len(abcde) != 5 || len(vwxyz) != 5 {
		t.Fatalf("setup: %v %v", abcde, vwxyz)
	}
	seq := func(parts ...any) []int32 {
		var out []int32
		for _, p := range parts {
			switch p := p.(type) {
			case int:
				out = append(out, int32(p))
			case []int32:
				out = append(out, p...)
			}
		}
		return out
	}
	for _, c := range []struct {
		name      string
		in        Input
		maxLen    int
		want      []int32
		types     []int32
		truncated bool
	}{
		{"single fits", Input{Text: "a b c d e"}, 7, seq(cls, abcde, sep), nil, false},
		{"single cut", Input{Text: "a b c d e"}, 5, seq(cls, abcde[:3], sep), nil, true},
		{"single to nothing", Input{Text: "a b c d e"}, 2, seq(cls, sep), nil, true},
		{"pair fits", Input{Text: "a b c d e", Pair: "v w x y z", HasPair: true}, 13,
			seq(cls, abcde, sep, vwxyz, sep), []int32{0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1}, false},
		// A tie takes from the second text first: 5+5 -> 5+4 -> 4+4 -> 4+3.
		{"pair tie", Input{Text: "a b c d e", Pair: "v w x y z", HasPair: true}, 10,
			seq(cls, abcde[:4], sep, vwxyz[:3], sep), []int32{0, 0, 0, 0, 0, 0, 1, 1, 1, 1}, true},
		{"pair longer first", Input{Text: "a b c d e", Pair: "v w", HasPair: true}, 7,
			seq(cls, abcde[:2], sep, vwxyz[:2], sep), []int32{0, 0, 0, 0, 1, 1, 1}, true},
		{"pair longer second", Input{Text: "a", Pair: "v w x y z", HasPair: true}, 6,
			seq(cls, abcde[:1], sep, vwxyz[:2], sep), []int32{0, 0, 0, 1, 1, 1}, true},
		{"empty pair", Input{Text: "a", HasPair: true}, 0, seq(cls, abcde[:1], sep, sep), []int32{0, 0, 0, 1}, false},
		{"pair to nothing", Input{Text: "a b", Pair: "v w", HasPair: true}, 3, seq(cls, sep, sep), []int32{0, 0, 1}, true},
	} {
		for _, form := range []string{"text", "pretokenized"} {
			in := c.in
			if form == "pretokenized" {
				in = tok.Pretokenize(in)
			}
			encodeCase(t, tok, c.name+" ("+form+")", in, c.maxLen, c.want, c.types, c.truncated)
		}
	}
}

// encodeCase encodes in alone and checks the row against want, its type
// ids against types (nil: all 0) and its truncation flag.
func encodeCase(t *testing.T, tok *Tokenizer, name string, in Input, maxLen int, want, types []int32, truncated bool) {
	t.Helper()
	b, err := tok.Encode([]Input{in}, maxLen)
	if err != nil {
		t.Errorf("%s: %v", name, err)
		return
	}
	if b.B != 1 || b.T != len(want) || !slices.Equal(b.IDs, want) || b.Truncated[0] != truncated || b.Lengths[0] != len(want) {
		t.Errorf("%s: got %v (B=%d T=%d len %v truncated %v), want %v truncated %v", name, b.IDs, b.B, b.T, b.Lengths, b.Truncated, want, truncated)
	}
	if types == nil {
		types = make([]int32, len(want))
	}
	if !slices.Equal(b.TypeIDs, types) {
		t.Errorf("%s: type ids %v, want %v", name, b.TypeIDs, types)
	}
}

// TestPretokenized: Encode takes the tokens Pretokenize made instead of
// tokenizing the text again, but not those another tokenizer made.
func TestPretokenized(t *testing.T) {
	tok, other := uncased(t), uncased(t)
	own := tok.Pretokenize(Input{Text: "a b c"})
	own.IDs = []int32{7}
	encodeCase(t, tok, "own tokens", own, 0, []int32{101, 7, 102}, nil, false)

	in := other.Pretokenize(Input{Text: "a b c"})
	in.IDs = []int32{7, 7, 7, 7}
	want, err := tok.Encode([]Input{{Text: "a b c"}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tok.Encode([]Input{in}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.IDs, want.IDs) {
		t.Errorf("encoded %v, want %v", got.IDs, want.IDs)
	}
}

func TestEncodePadding(t *testing.T) {
	tok := uncased(t)
	b, err := tok.Encode([]Input{{Text: "hello"}, {Text: "hello world, again", Pair: "x", HasPair: true}, {Text: ""}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []int32{
		101, 7592, 102, 0, 0, 0, 0, 0,
		101, 7592, 2088, 1010, 2153, 102, 1060, 102,
		101, 102, 0, 0, 0, 0, 0, 0,
	}
	mask := []int32{
		1, 1, 1, 0, 0, 0, 0, 0,
		1, 1, 1, 1, 1, 1, 1, 1,
		1, 1, 0, 0, 0, 0, 0, 0,
	}
	types := []int32{
		0, 0, 0, 0, 0, 0, 0, 0,
		0, 0, 0, 0, 0, 0, 1, 1,
		0, 0, 0, 0, 0, 0, 0, 0,
	}
	if b.B != 3 || b.T != 8 || !slices.Equal(b.IDs, want) || !slices.Equal(b.Mask, mask) || !slices.Equal(b.TypeIDs, types) {
		t.Errorf("got B=%d T=%d\n ids   %v\n mask  %v\n types %v", b.B, b.T, b.IDs, b.Mask, b.TypeIDs)
	}
	if !slices.Equal(b.Lengths, []int{3, 8, 2}) {
		t.Errorf("lengths %v", b.Lengths)
	}

	empty, err := tok.Encode(nil, 0)
	if err != nil || empty.B != 0 || empty.T != 0 || len(empty.IDs) != 0 {
		t.Errorf("empty batch: %+v, %v", empty, err)
	}
}

func TestEncodeLimits(t *testing.T) {
	tok, err := FromVocab(filepath.Join(fixtureDir, "vocab.txt"), Options{Lowercase: true, MaxLen: 6})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tok.Encode([]Input{{Text: "a"}}, 1); !errors.Is(err, ErrMaxLen) {
		t.Errorf("single, limit 1: err = %v, want ErrMaxLen", err)
	}
	if _, err := tok.Encode([]Input{{Text: "a"}, {Text: "a", HasPair: true}}, 2); !errors.Is(err, ErrMaxLen) {
		t.Errorf("pair, limit 2: err = %v, want ErrMaxLen", err)
	}
	// Beyond the model's limit, and 0, both mean the model's limit.
	for _, limit := range []int{0, 100} {
		b, err := tok.Encode([]Input{{Text: "a b c d e f g h"}}, limit)
		if err != nil {
			t.Fatal(err)
		}
		if b.T != 6 || !b.Truncated[0] {
			t.Errorf("limit %d: T = %d, truncated %v; want 6, true", limit, b.T, b.Truncated[0])
		}
	}
}

func ExampleTokenizer_Encode() {
	tok, err := Load("../../testdata/bert-tiny/vocab-only")
	if err != nil {
		fmt.Println(err)
		return
	}
	tokens, ids := tok.Tokenize("The café is [MASK].")
	fmt.Println(tokens, ids)

	b, err := tok.Encode([]Input{{Text: "Hello!"}, {Text: "Is it?", Pair: "Yes.", HasPair: true}}, 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	for i := range b.B {
		row := b.IDs[i*b.T : (i+1)*b.T]
		fmt.Println(row, b.TypeIDs[i*b.T:(i+1)*b.T], b.Mask[i*b.T:(i+1)*b.T])
	}
	// Output:
	// [the cafe is [MASK] .] [1996 7668 2003 103 1012]
	// [101 7592 999 102 0 0 0 0] [0 0 0 0 0 0 0 0] [1 1 1 1 0 0 0 0]
	// [101 2003 2009 1029 102 2748 1012 102] [0 0 0 0 0 1 1 1] [1 1 1 1 1 1 1 1]
}
