package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"unsafe"
)

const (
	fixtureModel     = "../../testdata/bert-tiny/bert-pretraining/model.safetensors"
	fixtureReference = "../../testdata/bert-tiny/reference.safetensors"
)

// allDTypes is every dtype DTypeSize knows.
var allDTypes = []string{"F64", "I64", "U64", "F32", "I32", "U32", "F16", "BF16", "I16", "U16", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2"}

// withLen is a file whose 8-byte header length says n, followed by rest.
func withLen(n uint64, rest string) []byte {
	b := binary.LittleEndian.AppendUint64(nil, n)
	return append(b, rest...)
}

// file is a file with header hdr (its true length) and data bytes of data.
func file(hdr string, data int) []byte {
	b := withLen(uint64(len(hdr)), hdr)
	for i := range data {
		b = append(b, byte(i))
	}
	return b
}

// entry is the JSON of one tensor entry.
func entry(dtype, shape string, begin, end int) string {
	return fmt.Sprintf(`{"dtype":%q,"shape":%s,"data_offsets":[%d,%d]}`, dtype, shape, begin, end)
}

type badInput struct {
	name string
	in   []byte
	want []string // all must appear in the error
}

// badInputs are hostile or broken files, one per way of going wrong, each
// with what its error must name.
func badInputs() []badInput {
	w8 := `"w":` + entry("F32", "[2]", 0, 8)
	tensor := func(fields string) []byte { return file(`{"w":{`+fields+`}}`, 8) }
	return []badInput{
		{"empty file", nil, []string{"0 bytes", "too short"}},
		{"seven bytes", []byte{1, 0, 0, 0, 0, 0, 0}, []string{"7 bytes", "too short"}},
		{"header length past the file", withLen(100, "{}"), []string{"header length 100", "10-byte file"}},
		{"header length over MaxHeader", withLen(MaxHeader+1, "{}"), []string{fmt.Sprint("header length ", MaxHeader+1), "limit"}},
		{"header length 2^64-1", withLen(math.MaxUint64, "{}"), []string{"header length 18446744073709551615"}},
		{"header length 2^63", withLen(1<<63, "{}"), []string{"header length 9223372036854775808"}},
		{"empty header", file("", 0), []string{"header", "found the end of the header"}},
		{"header only white space", file("        ", 0), []string{"header", "found the end of the header"}},
		{"header not JSON", file("hello", 0), []string{"header", `found 'h', not JSON`}},
		{"header truncated JSON", file(`{"w":`, 0), []string{`tensor "w"`, "found the end of the header", "header byte 5"}},
		{"header an array", file(`[1,2]`, 0), []string{"header", "found an array", "want a JSON object"}},
		{"header a string", file(`"{}"`, 0), []string{"header", "found a string"}},
		{"header a number", file(`8`, 0), []string{"header", "found a number"}},
		{"header null", file(`null`, 0), []string{"header", "found null"}},
		{"header not UTF-8", file("{\"w\xff\":1}", 0), []string{"UTF-8", "header byte 3"}},
		{"header with a cut sequence after a valid one", file("{\"é\xe2\x82\":1}", 0), []string{"UTF-8", "(bad byte at header byte 4)"}},
		{"header with a surrogate", file("{\"\xed\xa0\x80\":1}", 0), []string{"UTF-8", "(bad byte at header byte 2)"}},
		{"header with an overlong slash", file("{\"\xc0\xaf\":1}", 0), []string{"UTF-8", "(bad byte at header byte 2)"}},
		{"header invalid after three-byte runes", file("{\"日本\x80\":1}", 0), []string{"UTF-8", "(bad byte at header byte 8)"}},
		{"trailing garbage after the header object", file(`{} x`, 0), []string{"header", `found "x" after the object`, "header byte 3"}},
		{"second object after the header object", file(`{}{}`, 0), []string{"header", `found "{}" after the object`}},
		{"NUL padding after the header object", file("{}\x00\x00", 0), []string{"header", `found "\x00\x00" after the object`}},
		{"deep nesting", file(`{"w":`+strings.Repeat("[", 20000)+strings.Repeat("]", 20000)+`}`, 0), []string{`tensor "w"`, "found an array"}},
		{"deep nesting in metadata", file(`{"__metadata__":{"a":`+strings.Repeat(`{"a":`, 20000)+`}`, 0), []string{"__metadata__", `key "a"`, "found an object"}},
		{"non-string key", file(`{1:2}`, 0), []string{"object key", "found a number", "want a string", "header byte 1"}},

		{"missing colon", file(`{"w" {}}`, 0), []string{`after key "w"`, "found an object", `want one of ":"`}},
		{"missing comma between tensors", file(`{"a":`+entry("U8", "[1]", 0, 1)+` "b":`+entry("U8", "[1]", 1, 2)+`}`, 2), []string{`after the value of "a"`, "found a string", `want one of ",}"`}},
		{"trailing comma in the header", file(`{"a":`+entry("U8", "[1]", 0, 1)+`,}`, 1), []string{"object key", "found '}'", "want a string"}},
		{"unclosed header object", file(`{"a":`+entry("U8", "[1]", 0, 1), 1), []string{`after the value of "a"`, "found the end of the header"}},
		{"unterminated key", file(`{"w`, 0), []string{"object key", "string at header byte 1 runs to the end of the header"}},
		{"unterminated key ending in a backslash", file(`{"w\`, 0), []string{"object key", "runs to the end of the header"}},
		{"control character in a key", file("{\"w\n\":1}", 0), []string{"object key", "control character 0x0a", "header byte 3"}},
		{"bad escape in a key", file(`{"\x":1}`, 0), []string{"object key", "string at header byte 1", "escape"}},
		{"short unicode escape in a key", file(`{"\u12":1}`, 0), []string{"object key", "string at header byte 1"}},
		{"key a literal", file(`{true:1}`, 0), []string{"object key", "found a boolean"}},
		{"single-quoted key", file(`{'w':1}`, 0), []string{"object key", `found '\'', not JSON`}},
		{"entry a number", file(`{"w":5}`, 0), []string{`tensor "w"`, "found a number", "want a JSON object"}},
		{"entry null", file(`{"w":null}`, 0), []string{`tensor "w"`, "found null"}},
		{"entry an array", file(`{"w":["F32",[2],[0,8]]}`, 8), []string{`tensor "w"`, "found an array"}},
		{"dtype a number", tensor(`"dtype":4,"shape":[2],"data_offsets":[0,8]`), []string{`tensor "w"`, `field "dtype"`, "found a number", "want a string"}},
		{"dtype null", tensor(`"dtype":null,"shape":[2],"data_offsets":[0,8]`), []string{`tensor "w"`, `field "dtype"`, "found null"}},
		{"shape a string", tensor(`"dtype":"F32","shape":"[2]","data_offsets":[0,8]`), []string{`tensor "w"`, `field "shape"`, "found a string", "want an array of integers"}},
		{"shape null", tensor(`"dtype":"F32","shape":null,"data_offsets":[0,8]`), []string{`tensor "w"`, `field "shape"`, "found null"}},
		{"shape element null", tensor(`"dtype":"F32","shape":[null,2],"data_offsets":[0,8]`), []string{`tensor "w"`, `field "shape"`, "element 0: found null"}},
		{"shape element a string", tensor(`"dtype":"F32","shape":[1,"2"],"data_offsets":[0,8]`), []string{`tensor "w"`, `field "shape"`, "element 1: found a string"}},
		{"shape element a fraction", tensor(`"dtype":"F32","shape":[2.0],"data_offsets":[0,8]`), []string{`tensor "w"`, `field "shape"`, "element 0 (2.0) is not an integer"}},
		{"shape element an exponent", tensor(`"dtype":"F32","shape":[2e0],"data_offsets":[0,8]`), []string{`tensor "w"`, `field "shape"`, "element 0 (2e0)"}},
		{"shape element past int64", tensor(`"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,8]`), []string{`tensor "w"`, `field "shape"`, "99999999999999999999"}},
		{"shape element 400 digits", tensor(`"dtype":"F32","shape":[` + strings.Repeat("9", 400) + `],"data_offsets":[0,8]`), []string{`tensor "w"`, `field "shape"`, strings.Repeat("9", 40) + "..."}},
		{"dtype a boolean", tensor(`"dtype":true,"shape":[2],"data_offsets":[0,8]`), []string{`tensor "w"`, `field "dtype"`, "found a boolean"}},
		{"shape element with a leading zero", tensor(`"dtype":"F32","shape":[02],"data_offsets":[0,8]`), []string{`tensor "w"`, `field "shape"`, "element 0 (02) is not an integer"}},
		{"shape element a bare minus", tensor(`"dtype":"F32","shape":[-],"data_offsets":[0,8]`), []string{`tensor "w"`, `field "shape"`, "element 0 (-) is not an integer"}},
		{"shape element with a plus", tensor(`"dtype":"F32","shape":[+2],"data_offsets":[0,8]`), []string{`tensor "w"`, `field "shape"`, `element 0: found '+', not JSON`}},
		{"shape element hex", tensor(`"dtype":"F32","shape":[0x2],"data_offsets":[0,8]`), []string{`tensor "w"`, `field "shape"`, "after element 0", `found 'x', not JSON`}},
		{"shape with a trailing comma", tensor(`"dtype":"F32","shape":[2,],"data_offsets":[0,8]`), []string{`tensor "w"`, `field "shape"`, "element 1: found ']'"}},
		{"shape unclosed", file(`{"w":{"dtype":"F32","shape":[2`, 0), []string{`tensor "w"`, `field "shape"`, "after element 0", "found the end of the header"}},
		{"shape nested", tensor(`"dtype":"F32","shape":[[2]],"data_offsets":[0,8]`), []string{`tensor "w"`, `field "shape"`, "element 0: found an array"}},
		{"data_offsets an object", tensor(`"dtype":"F32","shape":[2],"data_offsets":{"0":0,"1":8}`), []string{`tensor "w"`, `field "data_offsets"`, "found an object"}},
		{"data_offsets element null", tensor(`"dtype":"F32","shape":[2],"data_offsets":[null,8]`), []string{`tensor "w"`, `field "data_offsets"`, "element 0: found null"}},
		{"data_offsets element a fraction", tensor(`"dtype":"F32","shape":[2],"data_offsets":[0,8.5]`), []string{`tensor "w"`, `field "data_offsets"`, "element 1 (8.5)"}},
		{"data_offsets past int64", tensor(`"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551616]`), []string{`tensor "w"`, `field "data_offsets"`, "18446744073709551616"}},
		{"unknown field", tensor(`"dtype":"F32","shape":[2],"data_offsets":[0,8],"offsets":[0,8]`), []string{`tensor "w"`, `unknown field "offsets"`}},
		{"field name in another case", tensor(`"DType":"F32","shape":[2],"data_offsets":[0,8]`), []string{`tensor "w"`, `unknown field "DType"`}},
		{"missing dtype", tensor(`"shape":[2],"data_offsets":[0,8]`), []string{`tensor "w"`, `missing field "dtype"`}},
		{"missing shape", tensor(`"dtype":"F32","data_offsets":[0,8]`), []string{`tensor "w"`, `missing field "shape"`}},
		{"missing data_offsets", tensor(`"dtype":"F32","shape":[2]`), []string{`tensor "w"`, `missing field "data_offsets"`}},
		{"field twice", tensor(`"dtype":"F32","shape":[2],"dtype":"I32","data_offsets":[0,8]`), []string{`tensor "w"`, `key "dtype" appears twice`}},
		{"unknown dtype", file(`{"w":`+entry("F128", "[2]", 0, 8)+`}`, 8), []string{`tensor "w"`, `unknown dtype "F128"`}},
		{"lower-case dtype", file(`{"w":`+entry("f32", "[2]", 0, 8)+`}`, 8), []string{`tensor "w"`, `unknown dtype "f32"`}},
		{"empty dtype", file(`{"w":`+entry("", "[2]", 0, 8)+`}`, 8), []string{`tensor "w"`, `unknown dtype ""`}},
		{"negative dimension", file(`{"w":`+entry("F32", "[2,-3]", 0, 8)+`}`, 8), []string{`tensor "w"`, "dimension 1 is negative (-3)"}},
		{"negative dimensions multiplying out", file(`{"w":`+entry("F32", "[-1,-2]", 0, 8)+`}`, 8), []string{`tensor "w"`, "dimension 0 is negative (-1)"}},
		{"shape overflowing int64", file(`{"w":`+entry("F32", "[4611686018427387904,4]", 0, 8)+`}`, 8), []string{`tensor "w"`, "[4611686018427387904 4]", "overflows"}},
		{"shape wrapping to 8 bytes", file(`{"w":`+entry("U8", "[4294967296,4294967296,8]", 0, 8)+`}`, 8), []string{`tensor "w"`, "overflows"}},
		{"zero dimension beside overflowing ones", file(`{"w":`+entry("F32", "[0,4611686018427387904,4611686018427387904]", 0, 0)+`}`, 0), []string{`tensor "w"`, "overflows"}},
		{"petabyte shape", file(`{"w":`+entry("F32", "[33554432,33554432]", 0, 8)+`}`, 8), []string{`tensor "w"`, "needs 4503599627370496 bytes", "data_offsets [0, 8] hold 8"}},
		{"petabyte data_offsets", file(`{"w":`+entry("F32", "[281474976710656]", 0, 1125899906842624)+`}`, 8), []string{`tensor "w"`, "[0, 1125899906842624]", "8-byte data section"}},
		{"data_offsets one entry", tensor(`"dtype":"F32","shape":[2],"data_offsets":[8]`), []string{`tensor "w"`, "data_offsets [8] has 1 entries, want 2"}},
		{"data_offsets a million entries", tensor(`"dtype":"F32","shape":[2],"data_offsets":[` + strings.Repeat("0,", 1<<20) + `8]`), []string{`tensor "w"`, "data_offsets [0 0 0 0 0 0 0 0 ...1048569 more] has 1048577 entries, want 2"}},
		{"shape a million dimensions", tensor(`"dtype":"F32","shape":[` + strings.Repeat("1,", 1<<20) + `-1],"data_offsets":[0,8]`), []string{`tensor "w"`, "shape [1 1 1 1 1 1 1 1 ...1048569 more]: dimension 1048576 is negative (-1)"}},
		{"data_offsets three entries", tensor(`"dtype":"F32","shape":[2],"data_offsets":[0,4,8]`), []string{`tensor "w"`, "has 3 entries"}},
		{"data_offsets empty", tensor(`"dtype":"F32","shape":[2],"data_offsets":[]`), []string{`tensor "w"`, "has 0 entries"}},
		{"negative begin", file(`{"w":`+entry("F32", "[2]", -8, 0)+`}`, 8), []string{`tensor "w"`, "data_offsets [-8, 0] are negative"}},
		{"begin after end", file(`{"w":`+entry("F32", "[2]", 8, 0)+`}`, 8), []string{`tensor "w"`, "data_offsets [8, 0] end before they begin"}},
		{"end past the data", file(`{"w":`+entry("F32", "[4]", 0, 16)+`}`, 8), []string{`tensor "w"`, "data_offsets [0, 16] run past", "8-byte data section"}},
		{"end at MaxInt64", file(`{"w":`+entry("U8", "[8]", 9223372036854775799, 9223372036854775807)+`}`, 8), []string{`tensor "w"`, "9223372036854775807", "run past"}},
		{"size not shape times dtype", file(`{"w":`+entry("F32", "[3]", 0, 8)+`}`, 8), []string{`tensor "w"`, "F32 [3] needs 12 bytes", "data_offsets [0, 8] hold 8"}},
		{"size not shape times dtype, I64", file(`{"w":`+entry("I64", "[2]", 0, 8)+`}`, 8), []string{`tensor "w"`, "I64 [2] needs 16 bytes"}},

		{"overlapping tensors", file(`{"a":`+entry("F32", "[2]", 0, 8)+`,"b":`+entry("F32", "[2]", 4, 12)+`}`, 12), []string{`tensor "a" [0, 8] overlaps tensor "b" [4, 12]`}},
		{"two tensors, one range", file(`{"b":`+entry("F32", "[2]", 0, 8)+`,"a":`+entry("U8", "[8]", 0, 8)+`}`, 8), []string{`tensor "a" [0, 8] overlaps tensor "b" [0, 8]`}},
		{"empty tensor inside another", file(`{"a":`+entry("F32", "[2]", 0, 8)+`,"z":`+entry("F32", "[0]", 4, 4)+`}`, 8), []string{`tensor "a" [0, 8] overlaps tensor "z" [4, 4]`}},
		{"gap between tensors", file(`{"a":`+entry("F32", "[2]", 0, 8)+`,"b":`+entry("F32", "[2]", 12, 20)+`}`, 20), []string{"bytes [8, 12)", `tensor "a" [0, 8]`, `tensor "b" [12, 20]`, "belong to no tensor"}},
		{"gap before the first tensor", file(`{"a":`+entry("F32", "[2]", 4, 12)+`}`, 12), []string{`tensor "a" starts at data byte 4`, "bytes [0, 4)"}},
		{"trailing data after the last tensor", file(`{`+w8+`}`, 12), []string{"end at data byte 8", "12 bytes", "4 trailing bytes"}},
		{"data but no tensors", file(`{}`, 3), []string{"end at data byte 0", "3 trailing bytes"}},
		{"data but only metadata", file(`{"__metadata__":{"format":"pt"}}`, 1), []string{"1 trailing bytes"}},

		{"duplicate tensor names", file(`{`+w8+`,`+w8+`}`, 8), []string{"header", `key "w" appears twice`}},
		{"duplicate tensor names, one escaped", file(`{`+w8+`,"\u0077":`+entry("F32", "[2]", 0, 8)+`}`, 8), []string{"header", `key "w" appears twice`}},
		{"metadata twice", file(`{"__metadata__":{},"__metadata__":{}}`, 0), []string{"header", `key "__metadata__" appears twice`}},
		{"metadata value a number", file(`{"__metadata__":{"format":1}}`, 0), []string{"__metadata__", `key "format"`, "found a number", "want a string"}},
		{"metadata value null", file(`{"__metadata__":{"format":null}}`, 0), []string{"__metadata__", `key "format"`, "found null"}},
		{"metadata value an object", file(`{"__metadata__":{"format":{"a":"b"}}}`, 0), []string{"__metadata__", `key "format"`, "found an object"}},
		{"metadata value a list", file(`{"__metadata__":{"labels":["a","b"]}}`, 0), []string{"__metadata__", `key "labels"`, "found an array"}},
		{"metadata an array", file(`{"__metadata__":[["format","pt"]]}`, 0), []string{"__metadata__", "found an array", "want a JSON object"}},
		{"metadata a string", file(`{"__metadata__":"pt"}`, 0), []string{"__metadata__", "found a string"}},
		{"metadata a misspelt null", file(`{"__metadata__":nul}`, 0), []string{"__metadata__", `found "nul}"`, "not JSON"}},
		{"metadata value unterminated", file(`{"__metadata__":{"format":"pt}}`, 0), []string{"__metadata__", `key "format"`, "runs to the end of the header"}},
		{"metadata key twice", file(`{"__metadata__":{"format":"pt","format":"tf"}}`, 0), []string{"__metadata__", `key "format" appears twice`}},
		{"bad metadata beside good tensors", file(`{`+w8+`,"__metadata__":{"n":2}}`, 8), []string{"__metadata__", `key "n"`}},
	}
}

func TestParseRejects(t *testing.T) {
	for _, c := range badInputs() {
		t.Run(c.name, func(t *testing.T) {
			f, err := Parse(c.in)
			if err == nil {
				t.Fatalf("parsed %d tensors, want an error", len(f.Tensors))
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "safetensors: ") {
				t.Errorf("error %q does not start with the package name", msg)
			}
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
		})
	}
}

// allocated is how many bytes Parse(in) allocates.
func allocated(in []byte) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _ = Parse(in)
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestParseAllocatesByInput checks that what a hostile header claims (a
// huge header, shape or offset) costs nothing: Parse's allocations follow
// the bytes it is given, and stay a small multiple of them when there are
// many (a long shape, many tensors, much metadata).
func TestParseAllocatesByInput(t *testing.T) {
	for _, c := range badInputs() {
		if len(c.in) > 1024 {
			continue
		}
		if n := allocated(c.in); n > 16<<10 {
			t.Errorf("%s: %d bytes allocated to parse %d", c.name, n, len(c.in))
		}
	}

	var many, md strings.Builder
	many.WriteString("{")
	md.WriteString(`{"__metadata__":{`)
	for i := range 20000 {
		if i > 0 {
			many.WriteString(",")
			md.WriteString(",")
		}
		fmt.Fprintf(&many, `"%d":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}`, i)
		fmt.Fprintf(&md, `"%d":""`, i)
	}
	many.WriteString("}")
	md.WriteString("}}")
	zeros := strings.Repeat("0,", 1<<19) + "0"
	for _, c := range []struct {
		name string
		in   []byte
	}{
		{"a long shape", file(`{"w":{"dtype":"U8","shape":[`+zeros+`],"data_offsets":[0,0]}}`, 0)},
		{"long data_offsets", file(`{"w":{"dtype":"U8","shape":[0],"data_offsets":[`+zeros+`]}}`, 0)},
		{"many tensors", file(many.String(), 0)},
		{"much metadata", file(md.String(), 0)},
	} {
		if n := allocated(c.in); n > 16*uint64(len(c.in)) {
			t.Errorf("%s: %d bytes allocated to parse %d", c.name, n, len(c.in))
		}
	}
}

// TestParseAccepts covers valid files at the edges of the format.
func TestParseAccepts(t *testing.T) {
	cases := []struct {
		name  string
		in    []byte
		names []string // in the order Parse returns them
		md    map[string]string
	}{
		{"no tensors", file(`{}`, 0), nil, nil},
		{"no tensors, padded", file(`{}      `, 0), nil, nil},
		{"null metadata", file(`{"__metadata__":null}`, 0), nil, nil},
		{"empty metadata", file(`{"__metadata__":{}}`, 0), nil, map[string]string{}},
		{"metadata with escapes", file(`{"__metadata__":{"a\"b":"\u00e9\n"}}`, 0), nil, map[string]string{`a"b`: "é\n"}},
		{"white space everywhere", file(" \n{ \"w\" : { \"dtype\" : \"F32\" , \"shape\" : [ 2 ] , \"data_offsets\" : [ 0 , 8 ] } }\t\r\n ", 8), []string{"w"}, nil},
		{"header out of data order", file(`{"b":`+entry("U8", "[1]", 8, 9)+`,"a":`+entry("F32", "[2]", 0, 8)+`}`, 9), []string{"a", "b"}, nil},
		{"scalar", file(`{"s":`+entry("F64", "[]", 0, 8)+`}`, 8), []string{"s"}, nil},
		{"minus zero", file(`{"s":`+entry("F64", "[-0]", 0, 0)+`}`, 0), []string{"s"}, nil},
		{"empty tensors at both ends and between", file(`{"e2":`+entry("F32", "[2,0]", 8, 8)+`,"a":`+entry("F32", "[2]", 0, 8)+`,"e1":`+entry("I64", "[0]", 0, 0)+`,"e3":`+entry("BOOL", "[0,5]", 9, 9)+`,"b":`+entry("BOOL", "[1]", 8, 9)+`}`, 9),
			[]string{"e1", "a", "e2", "b", "e3"}, nil},
		{"empty tensors at one offset, by name", file(`{"z":`+entry("F32", "[0]", 0, 0)+`,"y":`+entry("F16", "[0]", 0, 0)+`}`, 0), []string{"y", "z"}, nil},
		{"tensor named __metadata", file(`{"__metadata":`+entry("U8", "[1]", 0, 1)+`}`, 1), []string{"__metadata"}, nil},
		{"empty tensor name", file(`{"":`+entry("U8", "[1]", 0, 1)+`}`, 1), []string{""}, nil},
		{"escapes in names", file(`{"a\/b\u00e9\ud83d\ude00":`+entry("U8", "[1]", 0, 1)+`}`, 1), []string{"a/bé😀"}, nil},
		{"lone surrogate escape", file(`{"\ud800":`+entry("U8", "[1]", 0, 1)+`}`, 1), []string{"\ufffd"}, nil},
		{"raw UTF-8 and DEL in names", file("{\"é\x7f\":"+entry("U8", "[1]", 0, 1)+"}", 1), []string{"é\x7f"}, nil},
		{"unaligned data section", file(`{"w":`+entry("F32", "[1]", 0, 4)+`}`, 4), []string{"w"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := Parse(c.in)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, x := range f.Tensors {
				names = append(names, x.Name)
			}
			if !reflect.DeepEqual(names, c.names) {
				t.Errorf("tensors %q, want %q", names, c.names)
			}
			if (f.Metadata == nil) != (c.md == nil) || !maps.Equal(f.Metadata, c.md) {
				t.Errorf("metadata %#v, want %#v", f.Metadata, c.md)
			}
			checkParsed(t, c.in, f)
		})
	}
}

// TestParseDataViews checks that each tensor's data is its own bytes of
// the data section, and that appending to it copies.
func TestParseDataViews(t *testing.T) {
	in := file(`{"a":`+entry("U8", "[3]", 0, 3)+`,"b":`+entry("U8", "[2]", 3, 5)+`}`, 5)
	f, err := Parse(in)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := f.Get("a")
	b, ok := f.Get("b")
	if !ok || !bytes.Equal(a.Data, []byte{0, 1, 2}) || !bytes.Equal(b.Data, []byte{3, 4}) {
		t.Fatalf("a %v, b %v (found %v)", a.Data, b.Data, ok)
	}
	_ = append(a.Data, 99)
	if b.Data[0] != 3 {
		t.Errorf("appending to a changed b to %v", b.Data)
	}
	if _, ok := f.Get("c"); ok {
		t.Error("Get found a tensor that is not there")
	}
}

// sample is n bytes of a pattern that differs per tensor.
func sample(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// TestRoundTrip writes every dtype (a matrix, a scalar and an empty
// tensor of each) and parses it back.
func TestRoundTrip(t *testing.T) {
	for _, dt := range allDTypes {
		t.Run(dt, func(t *testing.T) {
			size := DTypeSize(dt)
			in := []Tensor{
				{Name: "matrix." + dt, DType: dt, Shape: []int{2, 3}, Data: sample(6*size, 1)},
				{Name: "scalar", DType: dt, Shape: []int{}, Data: sample(size, 2)},
				{Name: "empty", DType: dt, Shape: []int{3, 0}, Data: []byte{}},
				{Name: "vector", DType: dt, Shape: []int{5}, Data: sample(5*size, 3)},
			}
			md := map[string]string{"format": "pt", "dtype": dt}
			var buf bytes.Buffer
			if err := Write(&buf, in, md); err != nil {
				t.Fatal(err)
			}
			raw := buf.Bytes()
			if n := binary.LittleEndian.Uint64(raw); (8+n)%8 != 0 {
				t.Errorf("data section starts at byte %d, not 8-aligned", 8+n)
			}
			f, err := Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			checkParsed(t, raw, f)
			// Write lays the tensors out in order; Parse returns them in
			// file order, which puts the empty one (at the scalar's end,
			// the vector's start) before the vector: "empty" < "vector".
			if len(f.Tensors) != len(in) {
				t.Fatalf("%d tensors, want %d", len(f.Tensors), len(in))
			}
			for _, want := range in {
				got, ok := f.Get(want.Name)
				if !ok {
					t.Fatalf("%s missing", want.Name)
				}
				if got.DType != want.DType || !reflect.DeepEqual(got.Shape, want.Shape) || !bytes.Equal(got.Data, want.Data) {
					t.Errorf("%s: got %s %v %v, want %s %v %v", want.Name, got.DType, got.Shape, got.Data, want.DType, want.Shape, want.Data)
				}
			}
			if !maps.Equal(f.Metadata, md) {
				t.Errorf("metadata %v, want %v", f.Metadata, md)
			}
		})
	}
}

func TestRoundTripNoMetadata(t *testing.T) {
	var buf bytes.Buffer
	if err := Write(&buf, []Tensor{{Name: "w", DType: "U8", Shape: nil, Data: []byte{7}}}, nil); err != nil {
		t.Fatal(err)
	}
	f, err := Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if f.Metadata != nil || len(f.Tensors) != 1 || f.Tensors[0].Shape == nil || len(f.Tensors[0].Shape) != 0 {
		t.Errorf("got %+v", f)
	}
}

func TestWriteRejects(t *testing.T) {
	cases := []struct {
		name    string
		tensors []Tensor
		md      map[string]string
		want    string
	}{
		{"unknown dtype", []Tensor{{Name: "w", DType: "F128", Shape: []int{1}, Data: make([]byte, 16)}}, nil, `tensor "w": unknown dtype "F128"`},
		{"negative dimensions", []Tensor{{Name: "w", DType: "F32", Shape: []int{-1, -1}, Data: make([]byte, 4)}}, nil, "dimension 0 is negative (-1)"},
		{"overflowing shape", []Tensor{{Name: "w", DType: "F32", Shape: []int{1 << 62, 4}}}, nil, "overflows"},
		{"short data", []Tensor{{Name: "w", DType: "F32", Shape: []int{3}, Data: make([]byte, 8)}}, nil, "F32 [3] needs 12 bytes, has 8"},
		{"duplicate name", []Tensor{{Name: "w", DType: "U8", Data: []byte{1}}, {Name: "w", DType: "U8", Data: []byte{1}}}, nil, `tensor "w" written twice`},
		{"metadata name", []Tensor{{Name: "__metadata__", DType: "U8", Data: []byte{1}}}, nil, "reserved"},
		{"metadata name beside metadata", []Tensor{{Name: "__metadata__", DType: "U8", Data: []byte{1}}}, map[string]string{"a": "b"}, "reserved"},
		{"name not UTF-8", []Tensor{{Name: "w\xff", DType: "U8", Data: []byte{1}}}, nil, "not valid UTF-8"},
		{"metadata not UTF-8", nil, map[string]string{"a": "\xff"}, `metadata "a"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Write(io.Discard, c.tensors, c.md)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want one mentioning %q", err, c.want)
			}
		})
	}
}

// sameAsParse checks f, opened from path, against Parse of the file read
// into memory: the same tensors over the same bytes, and everything
// checkParsed asks of a parse.
func sameAsParse(t *testing.T, path string, f *File) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	g, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	checkParsed(t, raw, g)
	if len(f.Tensors) != len(g.Tensors) || !maps.Equal(f.Metadata, g.Metadata) {
		t.Fatalf("Open: %d tensors, metadata %v; Parse: %d, %v", len(f.Tensors), f.Metadata, len(g.Tensors), g.Metadata)
	}
	for i, x := range f.Tensors {
		y := g.Tensors[i]
		if x.Name != y.Name || x.DType != y.DType || !reflect.DeepEqual(x.Shape, y.Shape) || !bytes.Equal(x.Data, y.Data) {
			t.Fatalf("tensor %d: Open reads %q %s %v, Parse %q %s %v", i, x.Name, x.DType, x.Shape, y.Name, y.DType, y.Shape)
		}
	}
}

func TestOpenFixtureModel(t *testing.T) {
	f, err := Open(fixtureModel)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if len(f.Tensors) != 47 {
		t.Errorf("%d tensors, want 47", len(f.Tensors))
	}
	if f.Metadata["format"] != "pt" {
		t.Errorf("metadata %v, want format pt", f.Metadata)
	}
	sameAsParse(t, fixtureModel, f)
	for _, x := range f.Tensors {
		want := "F32"
		if x.Name == "bert.embeddings.position_ids" {
			want = "I64"
		}
		if x.DType != want {
			t.Errorf("%s: dtype %s, want %s", x.Name, x.DType, want)
		}
	}
	we, _ := f.Get("bert.embeddings.word_embeddings.weight")
	if !reflect.DeepEqual(we.Shape, []int{30522, 32}) || len(we.Data) != 30522*32*4 {
		t.Errorf("word embeddings %v, %d bytes", we.Shape, len(we.Data))
	}
	if f.Tensors[0].Name != we.Name {
		t.Errorf("first tensor %s, want the word embeddings (offset 0)", f.Tensors[0].Name)
	}
	pos, ok := f.Get("bert.embeddings.position_ids")
	if !ok || !reflect.DeepEqual(pos.Shape, []int{1, 64}) {
		t.Fatalf("position_ids %v (found %v)", pos.Shape, ok)
	}
	for i := range 64 {
		if v := int64(binary.LittleEndian.Uint64(pos.Data[8*i:])); v != int64(i) {
			t.Fatalf("position_ids[%d] = %d", i, v)
		}
	}
	if err := f.Close(); err != nil {
		t.Error(err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestOpenFixtureReference(t *testing.T) {
	f, err := Open(fixtureReference)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if len(f.Tensors) != 26 {
		t.Errorf("%d tensors, want 26", len(f.Tensors))
	}
	sameAsParse(t, fixtureReference, f)
	if !strings.Contains(f.Metadata["made_by"], "pytorch-pretrained-BERT") {
		t.Errorf("metadata %v", f.Metadata)
	}
	for i, name := range []string{"input_ids", "token_type_ids", "attention_mask"} {
		x := f.Tensors[i]
		if x.Name != name || x.DType != "I64" || !reflect.DeepEqual(x.Shape, []int{8, 15}) {
			t.Errorf("tensor %d: %s %s %v, want %s I64 [8 15]", i, x.Name, x.DType, x.Shape, name)
		}
	}
	emb, ok := f.Get("pretraining.embeddings")
	if !ok || emb.DType != "F32" || len(emb.Shape) != 3 || len(emb.Data) != emb.Shape[0]*emb.Shape[1]*emb.Shape[2]*4 {
		t.Errorf("pretraining.embeddings: %s %v, %d bytes (found %v)", emb.DType, emb.Shape, len(emb.Data), ok)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.safetensors")
	if err := os.WriteFile(bad, file(`{"w":`+entry("F32", "[3]", 0, 8)+`}`, 8), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.safetensors")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		want []string
	}{
		{filepath.Join(dir, "missing.safetensors"), []string{"missing.safetensors"}},
		{dir, []string{dir}},
		{empty, []string{empty, "0 bytes"}},
		{bad, []string{bad, `tensor "w"`, "needs 12 bytes"}},
	} {
		f, err := Open(c.path)
		if err == nil {
			f.Close()
			t.Errorf("%s: opened", c.path)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", c.path, err, w)
			}
		}
	}
	if _, err := Open(filepath.Join(dir, "missing.safetensors")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want os.ErrNotExist", err)
	}
}

// TestWriteFileOpen writes through WriteFile and reads back through Open
// (the memory-mapped path).
func TestWriteFileOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.safetensors")
	in := []Tensor{{Name: "w", DType: "BF16", Shape: []int{2, 2}, Data: sample(8, 5)}}
	if err := WriteFile(path, in, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if len(f.Tensors) != 1 || !bytes.Equal(f.Tensors[0].Data, in[0].Data) || f.Metadata["format"] != "pt" {
		t.Errorf("read back %+v", f)
	}
}

// checkParsed asserts what every successful Parse of in must hold: each
// tensor's data is a view of in, of the size its dtype and shape give, the
// views tile the data section in order, and the file writes back to itself.
func checkParsed(t *testing.T, in []byte, f *File) {
	t.Helper()
	hdrEnd := 8 + int(binary.LittleEndian.Uint64(in))
	base := uintptr(unsafe.Pointer(unsafe.SliceData(in)))
	at := hdrEnd
	seen := map[string]bool{}
	for _, x := range f.Tensors {
		if seen[x.Name] {
			t.Fatalf("tensor %q twice", x.Name)
		}
		seen[x.Name] = true
		size := DTypeSize(x.DType)
		if size == 0 {
			t.Fatalf("%q: unknown dtype %q", x.Name, x.DType)
		}
		// The product in big integers: independent of Parse's overflow checks.
		want := big.NewInt(int64(size))
		for _, d := range x.Shape {
			if d < 0 {
				t.Fatalf("%q: shape %v", x.Name, x.Shape)
			}
			want.Mul(want, big.NewInt(int64(d)))
		}
		if !want.IsInt64() || want.Int64() != int64(len(x.Data)) {
			t.Fatalf("%q: %s %v needs %v bytes, has %d", x.Name, x.DType, x.Shape, want, len(x.Data))
		}
		if cap(x.Data) != len(x.Data) {
			t.Fatalf("%q: cap %d, len %d: appends would write past it", x.Name, cap(x.Data), len(x.Data))
		}
		if len(x.Data) == 0 {
			continue
		}
		off := int(uintptr(unsafe.Pointer(unsafe.SliceData(x.Data))) - base)
		if off != at || off+len(x.Data) > len(in) {
			t.Fatalf("%q: data at input byte %d..%d, want it at %d, inside %d bytes", x.Name, off, off+len(x.Data), at, len(in))
		}
		at += len(x.Data)
	}
	if at != len(in) {
		t.Fatalf("tensors end at input byte %d of %d", at, len(in))
	}

	// What Parse read must be what encoding/json reads: Parse is stricter
	// (repeated keys, nulls), never more lenient or different.
	var ref map[string]json.RawMessage
	if err := json.Unmarshal(in[8:hdrEnd], &ref); err != nil {
		t.Fatalf("encoding/json refuses a header Parse accepted: %v", err)
	}
	keys := len(f.Tensors)
	var md map[string]string
	if raw, ok := ref[metadataKey]; ok {
		keys++
		if err := json.Unmarshal(raw, &md); err != nil {
			t.Fatalf("encoding/json refuses metadata Parse accepted: %v", err)
		}
	}
	if len(ref) != keys {
		t.Fatalf("encoding/json sees %d keys, Parse %d tensors and metadata %v", len(ref), len(f.Tensors), f.Metadata)
	}
	if !maps.Equal(md, f.Metadata) || (md == nil) != (f.Metadata == nil) {
		t.Fatalf("encoding/json reads metadata %#v, Parse %#v", md, f.Metadata)
	}
	for _, x := range f.Tensors {
		var e struct {
			DType   string `json:"dtype"`
			Shape   []int  `json:"shape"`
			Offsets []int  `json:"data_offsets"`
		}
		if err := json.Unmarshal(ref[x.Name], &e); err != nil {
			t.Fatalf("%q: encoding/json: %v", x.Name, err)
		}
		if e.DType != x.DType || !reflect.DeepEqual(e.Shape, x.Shape) || len(e.Offsets) != 2 || e.Offsets[1]-e.Offsets[0] != len(x.Data) {
			t.Fatalf("%q: encoding/json reads %+v, Parse %s %v with %d bytes", x.Name, e, x.DType, x.Shape, len(x.Data))
		}
		if len(x.Data) > 0 && uintptr(unsafe.Pointer(unsafe.SliceData(x.Data)))-base != uintptr(hdrEnd+e.Offsets[0]) {
			t.Fatalf("%q: data not at data_offsets %v", x.Name, e.Offsets)
		}
	}

	var buf bytes.Buffer
	if err := Write(&buf, f.Tensors, f.Metadata); err != nil {
		t.Fatalf("writing back: %v", err)
	}
	g, err := Parse(buf.Bytes())
	if err != nil {
		t.Fatalf("parsing what was written back: %v", err)
	}
	if len(g.Tensors) != len(f.Tensors) || !maps.Equal(g.Metadata, f.Metadata) {
		t.Fatalf("written back: %d tensors, metadata %v; want %d, %v", len(g.Tensors), g.Metadata, len(f.Tensors), f.Metadata)
	}
	for i, x := range f.Tensors {
		y := g.Tensors[i]
		if x.Name != y.Name || x.DType != y.DType || !reflect.DeepEqual(x.Shape, y.Shape) || !bytes.Equal(x.Data, y.Data) {
			t.Fatalf("written back, tensor %d: %q %s %v, want %q %s %v", i, y.Name, y.DType, y.Shape, x.Name, x.DType, x.Shape)
		}
	}
}

// headerOf is the 8-byte length and JSON header of the file at path,
// without its data.
func headerOf(tb testing.TB, path string) []byte {
	fh, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer fh.Close()
	var lenBuf [8]byte
	if _, err := io.ReadFull(fh, lenBuf[:]); err != nil {
		tb.Fatal(err)
	}
	b := make([]byte, 8+binary.LittleEndian.Uint64(lenBuf[:]))
	copy(b, lenBuf[:])
	if _, err := io.ReadFull(fh, b[8:]); err != nil {
		tb.Fatal(err)
	}
	return b
}

// windows are small files made of the file at path: runs of k tensors
// (the first, the last, and around every tensor whose dtype differs from
// the first one's), with every dimension cut to at most 2 and the file's
// metadata. They keep the fixture's names, dtypes, ranks and layout while
// staying a few hundred bytes, which keeps a fuzz run's executions (and
// its minimization, quadratic in the input's size) quick.
func windows(tb testing.TB, path string, k int) [][]byte {
	f, err := Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	starts := []int{0, len(f.Tensors) - k}
	for i, x := range f.Tensors {
		if x.DType != f.Tensors[0].DType {
			starts = append(starts, max(0, i-k/2))
		}
	}
	var out [][]byte
	for _, s := range starts {
		var small []Tensor
		for _, x := range f.Tensors[s:min(s+k, len(f.Tensors))] {
			shape := make([]int, len(x.Shape))
			n := DTypeSize(x.DType)
			for i, d := range x.Shape {
				shape[i] = min(d, 2)
				n *= shape[i]
			}
			small = append(small, Tensor{Name: x.Name, DType: x.DType, Shape: shape, Data: x.Data[:n]})
		}
		var buf bytes.Buffer
		if err := Write(&buf, small, f.Metadata); err != nil {
			tb.Fatal(err)
		}
		out = append(out, buf.Bytes())
	}
	return out
}

// TestFixtureHeaders parses the fixtures' headers without their data
// (what a truncated download looks like) and the fuzz seeds made of them.
func TestFixtureHeaders(t *testing.T) {
	for _, p := range []string{fixtureModel, fixtureReference} {
		_, err := Parse(headerOf(t, p))
		if err == nil || !strings.Contains(err.Error(), "run past the end of the 0-byte data section") {
			t.Errorf("%s header alone: %v, want data_offsets past the end", p, err)
		}
		for _, w := range windows(t, p, 3) {
			f, err := Parse(w)
			if err != nil {
				t.Fatal(err)
			}
			checkParsed(t, w, f)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, p := range []string{fixtureModel, fixtureReference} {
		// The header alone stays out: at 2.5-5 KB, the minimization of
		// each new input found from it would take the whole run.
		for _, w := range windows(f, p, 3) {
			f.Add(w)
		}
	}
	for _, dt := range allDTypes {
		var buf bytes.Buffer
		ts := []Tensor{
			{Name: "a", DType: dt, Shape: []int{2}, Data: sample(2*DTypeSize(dt), 1)},
			{Name: "e", DType: dt, Shape: []int{0, 3}, Data: nil},
			{Name: "s", DType: dt, Shape: []int{}, Data: sample(DTypeSize(dt), 2)},
		}
		if err := Write(&buf, ts, map[string]string{"format": "pt"}); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	for _, c := range badInputs() {
		if len(c.in) <= 1024 {
			f.Add(c.in)
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := Parse(in)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "safetensors: ") {
				t.Fatalf("error without context: %v", err)
			}
			return
		}
		checkParsed(t, in, got)
	})
}
