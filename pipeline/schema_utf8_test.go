package pipeline_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/bertstream/bertstream/pipeline"
)

// TestParseRequestInvalidUTF8 checks that a message with bad bytes is
// refused with the invalid_utf8 reason and the offset of its first bad
// byte, counted in the whole message value.
func TestParseRequestInvalidUTF8(t *testing.T) {
	const head = `{"id":"a","task":"classify","text":"` // 36 bytes
	for _, c := range []struct {
		name, text string
		at         int
	}{
		{"lone 0xe9 (Latin-1 é)", "caf\xe9", len(head) + 3},
		{"cut sequence", "\xc3(", len(head)},
		{"surrogate", "ab\xed\xa0\x80", len(head) + 2},
		{"overlong slash", "\xc0\xaf", len(head)},
		{"valid multibyte then invalid", "日本\x80", len(head) + 6},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := pipeline.ParseRequest([]byte(head+c.text+`"}`), map[string]bool{"classify": true}, 0)
			var ie *pipeline.InputError
			if !errors.As(err, &ie) || ie.Reason != pipeline.ReasonInvalidUTF8 {
				t.Fatalf("error %v, want reason %s", err, pipeline.ReasonInvalidUTF8)
			}
			if want := fmt.Sprintf("(first bad byte at offset %d)", c.at); !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		})
	}
}
