package gpu

import "fmt"

// The launch configuration of every kernel, defined here once for the
// three that launch them: the cuda backend, the CPU emulation's tests
// (internal/emu) and the GPU harness (cuda/bench_test.go). Each function
// takes an op's sizes and returns the entry point that serves them with
// its grid; the kernel arguments are the op's own and are documented in
// its .cu file.

// Type is an element type of the float kernels, each of which has one
// entry point per type, named with its suffix ("layernorm2_f16").
type Type int

const (
	F32 Type = iota
	F16
	BF16
)

// Types lists the element types of the float kernels.
var Types = []Type{F32, F16, BF16}

func (t Type) String() string {
	switch t {
	case F32:
		return "f32"
	case F16:
		return "f16"
	case BF16:
		return "bf16"
	}
	return fmt.Sprintf("Type(%d)", int(t))
}

// Size is the bytes of one element.
func (t Type) Size() int {
	if t == F32 {
		return 4
	}
	return 2
}

// Launch is how a kernel runs: its entry point in the PTX, a grid of
// Grid[0] x Grid[1] x Grid[2] blocks of Block threads (one-dimensional
// blocks), and Shared bytes of dynamic shared memory per block.
type Launch struct {
	Kernel string
	Grid   [3]int
	Block  int
	Shared int
}

// MaxGridYZ is the most blocks a grid has in y or in z.
const MaxGridYZ = 65535

// The versions of the families that have more than one: version 1 is the
// plain one the others are checked against; the backend launches the
// last (attention: the one AttentionVersion picks), the harness times
// them all.
const (
	LayerNormVersions = 2
	EmbedVersions     = 2
	AttentionVersions = 3
)

func blocks(n, per int) int { return (n + per - 1) / per }

// strided is the grid of a grid-stride kernel over n items: enough blocks
// to fill any GPU, few enough that each thread does several items.
func strided(n int64, block int) [3]int {
	return [3]int{int(max(1, min((n+int64(block)-1)/int64(block), 8192))), 1, 1}
}

// rowPerThread is version 1 of the row-wise kernels: a thread per row.
func rowPerThread(name string, rows int) Launch {
	return Launch{Kernel: name, Grid: [3]int{blocks(rows, 128), 1, 1}, Block: 128}
}

// rowPerWarp is their faster version: a warp per row, 8 to a block.
func rowPerWarp(name string, rows int) Launch {
	return Launch{Kernel: name, Grid: [3]int{blocks(rows, 8), 1, 1}, Block: 256}
}

// LayerNorm is version v of residual + LayerNorm over rows of cols values
// (layernorm.cu).
func LayerNorm(v int, t Type, rows int) Launch {
	name := fmt.Sprintf("layernorm%d_%s", v, t)
	if v == 1 {
		return rowPerThread(name, rows)
	}
	return rowPerWarp(name, rows)
}

// Embed is version v of the embedding of n tokens (embed.cu).
func Embed(v int, t Type, n int) Launch {
	name := fmt.Sprintf("embed%d_%s", v, t)
	if v == 1 {
		return rowPerThread(name, n)
	}
	return rowPerWarp(name, n)
}

// Tiles of the attention kernels: attention.cu's V2_ROWS, V2_MAXD and
// V3_ROWS.
const (
	attention2Rows = 16
	attention2Head = 128
	attention3Rows = 64
)

// AttentionVersion picks the fastest attention kernel that handles heads
// heads of dh values: the tensor-core one for F16/BF16 heads of 32 and 64,
// the SIMT one for heads up to 128, the plain one beyond (and beyond the
// grid's MaxGridYZ heads).
func AttentionVersion(t Type, dh, heads int) int {
	switch {
	case heads > MaxGridYZ || dh > attention2Head:
		return 1
	case t != F32 && (dh == 32 || dh == 64):
		return 3
	}
	return 2
}

// Attention is version v of fused attention over n tokens of hidden
// values in heads heads. Version 1 covers every sequence in one launch;
// versions 2 and 3 launch a block per tile of queries, head and sequence,
// over nseq sequences of at most longest tokens, nseq at most MaxGridYZ
// (longer batches go in slices, each with its own view of the offsets).
// Version 3 exists for F16 and BF16 heads of 32 and 64 values.
func Attention(v int, t Type, n, hidden, heads, longest, nseq int) Launch {
	dh := hidden / heads
	switch v {
	case 1:
		return Launch{Kernel: "attention1_" + t.String(), Grid: [3]int{blocks(n*hidden, 128), 1, 1}, Block: 128}
	case 2:
		// Keys (a row stride of dh|1), values and the tile's queries, as
		// float.
		return Launch{Kernel: "attention2_" + t.String(), Grid: [3]int{blocks(longest, attention2Rows), heads, nseq},
			Block: attention2Rows * 32, Shared: (32*(dh|1) + 32*dh + attention2Rows*dh) * 4}
	}
	return Launch{Kernel: fmt.Sprintf("attention3_d%d_%s", dh, t), Grid: [3]int{blocks(longest, attention3Rows), heads, nseq},
		Block: 128}
}

// GELU applies the activation in place to n values (gelu.cu), 16 bytes
// per thread and grid step.
func GELU(t Type, n int64) Launch {
	vec := int64(16 / t.Size())
	return Launch{Kernel: "gelu_" + t.String(), Grid: strided((n+vec-1)/vec, 256), Block: 256}
}

// BiasGELU adds a bias to rows x cols values and applies the activation
// (gelu.cu), one value per thread and grid step.
func BiasGELU(t Type, rows, cols int) Launch {
	return Launch{Kernel: "bias_gelu_" + t.String(), Grid: strided(int64(rows)*int64(cols), 256), Block: 256}
}

// rowWords is the widest word (16, 4 or 2 bytes) that divides a row of
// rowBytes, and its suffix.
func rowWords(rowBytes int) (int, string) {
	switch {
	case rowBytes%16 == 0:
		return 16, "w16"
	case rowBytes%4 == 0:
		return 4, "w4"
	}
	return 2, "w2"
}

// Gather copies rows rows of rowBytes each (gather.cu); words is the
// row's length in the words the kernel moves, its last argument.
func Gather(rows, rowBytes int) (l Launch, words int) {
	return moveRows("gather", rows, rowBytes)
}

// Scatter is Gather's inverse (scatter.cu).
func Scatter(rows, rowBytes int) (l Launch, words int) {
	return moveRows("scatter", rows, rowBytes)
}

func moveRows(op string, rows, rowBytes int) (Launch, int) {
	word, sfx := rowWords(rowBytes)
	words := rowBytes / word
	return Launch{Kernel: op + "_" + sfx, Grid: strided(int64(rows)*int64(words), 256), Block: 256}, words
}

// Pool pools nseq sequences of hidden values (pool.cu): a thread per
// column, a block row per sequence (the kernel strides over sequences
// past MaxGridYZ).
func Pool(t Type, hidden, nseq int) Launch {
	return Launch{Kernel: "pool_" + t.String(), Grid: [3]int{blocks(hidden, 128), min(nseq, MaxGridYZ), 1}, Block: 128}
}

// Convert converts n values between F32 and F16 or BF16 (convert.cu).
func Convert(from, to Type, n int64) Launch {
	return Launch{Kernel: fmt.Sprintf("convert_%s_to_%s", from, to), Grid: strided(n, 256), Block: 256}
}

// kernels lists the entry points of each module (.cu file) by its name,
// as the launch functions above name them.
func kernels() map[string][]string {
	k := map[string][]string{}
	add := func(module string, l Launch) { k[module] = append(k[module], l.Kernel) }
	for _, t := range Types {
		for v := 1; v <= LayerNormVersions; v++ {
			add("layernorm", LayerNorm(v, t, 1))
		}
		for v := 1; v <= EmbedVersions; v++ {
			add("embed", Embed(v, t, 1))
		}
		add("attention", Attention(1, t, 1, 1, 1, 1, 1))
		add("attention", Attention(2, t, 1, 1, 1, 1, 1))
		if t != F32 {
			for _, dh := range []int{32, 64} {
				add("attention", Attention(3, t, 1, dh, 1, 1, 1))
			}
			add("convert", Convert(F32, t, 1))
			add("convert", Convert(t, F32, 1))
		}
		add("gelu", GELU(t, 1))
		add("gelu", BiasGELU(t, 1, 1))
		add("pool", Pool(t, 1, 1))
	}
	for _, rowBytes := range []int{16, 4, 2} {
		l, _ := Gather(1, rowBytes)
		add("gather", l)
		l, _ = Scatter(1, rowBytes)
		add("scatter", l)
	}
	return k
}
