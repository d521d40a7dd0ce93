package text

import (
	"math/rand"
	"testing"
	"unicode/utf8"
)

func TestIndexInvalidUTF8(t *testing.T) {
	for _, c := range []struct {
		name string
		in   string
		want int
	}{
		{"empty", "", -1},
		{"ASCII", "hello", -1},
		{"multibyte", "héllo 日本 😀", -1},
		{"encoded U+FFFD", "a\uFFFDb", -1},
		{"largest code point", "\U0010FFFF", -1},
		{"lone 0xff", "\xff", 0},
		{"lone continuation byte", "a\x80b", 1},
		{"two-byte sequence cut at the end", "ab\xc3", 2},
		{"three-byte sequence cut at the end", "ab\xe2\x82", 2},
		{"four-byte sequence cut at the end", "\xf0\x9f\x98", 0},
		{"three-byte sequence cut by ASCII", "\xe2\x82A", 0},
		{"lead byte followed by a lead byte", "\xc3\xc3\xa9", 0},
		{"overlong slash, two bytes", "\xc0\xaf", 0},
		{"overlong 0x7f, two bytes", "\xc1\xbf", 0},
		{"overlong slash, three bytes", "\xe0\x80\xaf", 0},
		{"overlong slash, four bytes", "\xf0\x80\x80\xaf", 0},
		{"overlong NUL", "x\xc0\x80", 1},
		{"high surrogate", "\xed\xa0\x80", 0},
		{"low surrogate", "\xed\xbf\xbf", 0},
		{"surrogate pair, CESU-8", "\xed\xa0\xbd\xed\xb8\x80", 0},
		{"past U+10FFFF", "\xf4\x90\x80\x80", 0},
		{"lead byte 0xf5", "\xf5\x80\x80\x80", 0},
		{"valid two-byte then invalid", "héllo\xff", 6},
		{"valid three-byte then continuation", "日本\x80", 6},
		{"valid four-byte then cut sequence", "😀\xc3(", 4},
		{"encoded U+FFFD then invalid", "\uFFFD\xff", 3},
		{"valid after the first invalid byte", "a\xffé", 1},
	} {
		if got := IndexInvalidUTF8([]byte(c.in)); got != c.want {
			t.Errorf("%s: IndexInvalidUTF8(%q) = %d, want %d", c.name, c.in, got, c.want)
		}
	}
}

// checkIndex asserts what the offset means: b is valid exactly when it is
// -1, everything before it is valid, and no valid rune starts there.
func checkIndex(t *testing.T, b []byte) {
	t.Helper()
	i := IndexInvalidUTF8(b)
	if (i < 0) != utf8.Valid(b) {
		t.Fatalf("IndexInvalidUTF8(%q) = %d, utf8.Valid says %t", b, i, utf8.Valid(b))
	}
	if i < 0 {
		return
	}
	if !utf8.Valid(b[:i]) {
		t.Fatalf("IndexInvalidUTF8(%q) = %d, but bytes before it are invalid", b, i)
	}
	if r, n := utf8.DecodeRune(b[i:]); r != utf8.RuneError || n != 1 {
		t.Fatalf("IndexInvalidUTF8(%q) = %d, but %q starts there", b, i, r)
	}
}

func TestIndexInvalidUTF8Random(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	// Bytes drawn mostly from lead and continuation bytes, so that
	// sequences are often nearly valid.
	alphabet := []byte("a\x7f\x80\xbf\xc2\xc3\xdf\xe0\xe2\xed\xef\xf0\xf4\xf5\xff")
	for range 20000 {
		b := make([]byte, rng.Intn(12))
		for j := range b {
			b[j] = alphabet[rng.Intn(len(alphabet))]
		}
		checkIndex(t, b)
	}
}

func FuzzIndexInvalidUTF8(f *testing.F) {
	for _, s := range []string{"", "héllo", "\xed\xa0\x80", "\xf0\x9f\x98", "\xc0\xaf", "😀\xc3("} {
		f.Add([]byte(s))
	}
	f.Fuzz(checkIndex)
}
