package task

// Token is one token of a text as a tokenizer splits it, for a server
// that shows clients how their text is read.
type Token struct {
	ID int32
	// Text is the token as the vocabulary spells it ("##ing").
	Text string
	// Special marks the tokens the tokenizer adds or keeps whole ([CLS],
	// [SEP], [MASK]).
	Special bool
	// Start and Stop are the byte offsets of the text the token came
	// from; an added special token ([CLS], [SEP]) has none: -1.
	Start, Stop int
}
