// Package text holds the checks on the bytes of untrusted text that more
// than one reader needs: request messages (pipeline) and checkpoint
// headers (loader/safetensors) must be UTF-8, and when they are not, their
// errors point at the same byte.
//
// It imports nothing but the standard library, so that any package of the
// module may use it without taking on the model or a tokenizer.
package text

import "unicode/utf8"

// IndexInvalidUTF8 is the offset of the first byte of b that does not
// start a valid UTF-8 sequence, or -1 if b is valid UTF-8. Overlong
// encodings, surrogates (U+D800-U+DFFF) and code points past U+10FFFF are
// invalid, as in utf8.Valid; a sequence cut short is invalid at its first
// byte. A correctly encoded U+FFFD is valid.
func IndexInvalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return -1
}
