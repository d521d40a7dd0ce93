package kernels

import "strings"

// Blocking chosen per CPU microarchitecture. The micro-kernels are the
// same on every CPU of an instruction set; what suits one core's caches
// and ports more than another's is how much of k a call covers (kc), how
// many rows of A a task keeps in L2 (mc) and how many query rows
// attention's score tile holds. Each entry was measured on its CPU with
// the harness's share of the FMA peak per shape; a CPU the table does not
// know gets the entry of the machine the kernels were first tuned on.
// Reading the table costs nothing at run time, so nothing is measured on
// the serving path.

// tuning is one entry of the table.
type tuning struct {
	name string
	// gemm is the blocking of the F32, BF16 and INT8 micro-kernels it
	// names (k in pairs for BF16, quads for INT8); the others keep their
	// own.
	gemm map[string]blocking
	// attnRows is how many query rows of one head a score tile holds:
	// the tile (attnRows x sequence length) stays in L2 between the two
	// products.
	attnRows int
	// bf16AttnMin is the shortest sequence whose attention AttentionBF16
	// runs in BF16. The products' share of attention grows with the
	// length, the conversions' does not: below it, BF16 would cost accuracy
	// for no time.
	bf16AttnMin int
}

type blocking struct{ kc, mc int }

// cpuIdentity is what the table is keyed by: CPUID's vendor string and
// display family and model.
type cpuIdentity struct {
	vendor        string
	family, model int
}

// tunings is the table, the default first. The default is the blocking
// of Intel Sapphire Rapids, where the AVX-512 kernel reached 86-88 % of
// the FMA peak.
var tunings = []struct {
	t     tuning
	match func(cpuIdentity) bool
}{
	{tuning{name: "default", gemm: map[string]blocking{"avx512": {256, 72}}, attnRows: 96, bf16AttnMin: 192}, nil},
	// Sapphire and Emerald Rapids (family 6, models 0x8f and 0xcf),
	// where the default was measured.
	{tuning{name: "intel-sapphire-rapids", gemm: map[string]blocking{"avx512": {256, 72}}, attnRows: 96, bf16AttnMin: 192}, func(id cpuIdentity) bool {
		return id.vendor == "GenuineIntel" && id.family == 6 && (id.model == 0x8f || id.model == 0xcf)
	}},
	// AMD Zen 5 (family 0x1a): 48 KB of L1D and a 1 MB L2 like Sapphire
	// Rapids, but k slices of 384 (fewer passes over C) were 1-3 points
	// of the FMA peak ahead of 256 on every BERT-base linear layer at 128
	// and 1024 rows (one core, thread CPU time, entries interleaved);
	// slices of 512 or 768 and blocks of 48 or 144 rows were no better,
	// and tiles of 24 to 128 query rows timed alike. BF16 takes k slices
	// of 512 pairs, so that k = 768 is one pass: 5-10 % more GFLOP/s than
	// 256 pairs on three of BERT-base's four layers at 1024 rows (two
	// cores, benchstat, 4 rounds interleaved), the fourth (k = 3072) alike;
	// 384 to 768 pairs timed alike, and blocks of 288 rows were slower.
	// BF16 attention took 0.7x F32's time at 384 tokens, 0.83x at 256 and
	// 0.85-0.93x at 192, but at 128 as long or a little longer (3-10 %
	// slower in a BF16 bert-base pass): it starts at 192. The other
	// entries take the same until measured on their CPUs.
	{tuning{name: "amd-zen5", gemm: map[string]blocking{"avx512": {384, 72}, "avx512bf16": {512, 144}}, attnRows: 96, bf16AttnMin: 192}, func(id cpuIdentity) bool {
		return id.vendor == "AuthenticAMD" && id.family == 0x1a
	}},
	// AMD Zen 3 (family 0x19 without Zen 4's models 0x10-0x1f and
	// 0x60-0x7f, 0xa0-0xaf; measured on an EPYC, model 1): AVX2 only, 32
	// KB of L1D and 512 KB of L2. k slices of 768, one pass over C for
	// k = 768, were 3-4 % of GFLOP/s ahead of 256 on BERT-base's four
	// linear layers at 1024 rows (188.1-189.7 against 180.8-182.6, two
	// cores, six rounds interleaved, three sweeps) and 3 % at 128 rows
	// (179 against 174), though a panel's slice of B (48 KB) no longer
	// fits in L1;
	// 384 and 512 were half as far ahead, longer slices no further, and
	// blocks of 48 to 96 rows timed alike (144: 1 % behind, 288: 5 %).
	// Attention's tiles of 96 query rows were the fastest of 32 to 192
	// (B=8 T=128: 4.50 ms against 4.58-4.97; B=1 T=384: 3.58 against
	// 3.75-4.05; seven rounds interleaved).
	{tuning{name: "amd-zen3", gemm: map[string]blocking{"avx2": {768, 72}}, attnRows: 96, bf16AttnMin: 192}, func(id cpuIdentity) bool {
		zen4 := id.model >= 0x10 && id.model <= 0x1f || id.model >= 0x60 && id.model <= 0x7f || id.model >= 0xa0 && id.model <= 0xaf
		return id.vendor == "AuthenticAMD" && id.family == 0x19 && !zen4
	}},
}

// tuningFor returns the table's entry for a CPU.
func tuningFor(id cpuIdentity) tuning {
	for _, e := range tunings[1:] {
		if e.match(id) {
			return e.t
		}
	}
	return tunings[0].t
}

// Tunings names the entries of the blocking table, the one of this CPU
// first.
func Tunings() []string {
	names := []string{thisTuning.name}
	for _, e := range tunings {
		if e.t.name != thisTuning.name {
			names = append(names, e.t.name)
		}
	}
	return names
}

func tuningList() []tuning {
	var list []tuning
	for _, name := range Tunings() {
		for _, e := range tunings {
			if e.t.name == name {
				list = append(list, e.t)
			}
		}
	}
	return list
}

var thisTuning = tuningFor(thisCPU())

// signature decodes CPUID leaf 1's EAX into the display family and model:
// the extended family is added to a base family of 15, and the extended
// model is the high nibble of the model for families 6 and 15 and above.
func signature(eax uint32) (family, model int) {
	family = int(eax>>8) & 0xf
	model = int(eax>>4) & 0xf
	if family == 0xf {
		family += int(eax>>20) & 0xff
	}
	if family == 6 || family >= 0xf {
		model |= int(eax>>16) & 0xf << 4
	}
	return family, model
}

// vendorString is CPUID leaf 0's vendor from EBX, EDX, ECX, in that
// order.
func vendorString(b, d, c uint32) string {
	var s strings.Builder
	for _, r := range []uint32{b, d, c} {
		s.WriteByte(byte(r))
		s.WriteByte(byte(r >> 8))
		s.WriteByte(byte(r >> 16))
		s.WriteByte(byte(r >> 24))
	}
	return s.String()
}
