package nn

import "testing"

// TestWordClass checks the pool's size classes: a class holds what is
// asked for, wastes at most a quarter of it, and is the class of every
// length it is chosen for, so that a buffer freed at one length serves
// the next lengths of its step.
func TestWordClass(t *testing.T) {
	prev := 0
	for n := 1; n <= 1<<20; n++ {
		c := wordClass(n)
		if c < n || 4*(c-n) > n {
			t.Fatalf("wordClass(%d) = %d: want within [n, 1.25n]", n, c)
		}
		if c < prev {
			t.Fatalf("wordClass(%d) = %d, below wordClass(%d) = %d", n, c, n-1, prev)
		}
		if wordClass(c) != c {
			t.Fatalf("wordClass(%d) = %d, but wordClass(%d) = %d", n, c, c, wordClass(c))
		}
		prev = c
	}
}

// TestHostPoolReusesAcrossLengths checks that a host buffer freed at one
// length is taken again for another length of its class: batches padded
// to a length a few tokens longer or shorter reuse the memory of the last.
func TestHostPoolReusesAcrossLengths(t *testing.T) {
	const n = 100_000
	h := newHostStorage(8 * n)
	first := &h.words[:1][0]
	h.Free()
	g := NewHostStorage(8 * (n + n/20)) // 5% longer, same class
	defer g.Free()
	if &g.words[:1][0] != first {
		t.Fatalf("a buffer of %d words was allocated afresh while one of class %d was idle", n+n/20, wordClass(n))
	}
	if len(g.Raw()) != 8*(n+n/20) {
		t.Fatalf("the storage holds %d bytes, want %d", len(g.Raw()), 8*(n+n/20))
	}
	for i, b := range g.Raw() {
		if b != 0 {
			t.Fatalf("byte %d of a new zeroed storage is %d", i, b)
		}
	}
}
