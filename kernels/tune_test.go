package kernels

import "testing"

func TestSignature(t *testing.T) {
	for _, c := range []struct {
		eax           uint32
		family, model int
	}{
		{0x00b00f21, 0x1a, 0x02}, // AMD EPYC 9005 (Zen 5)
		{0x00a10f11, 0x19, 0x11}, // AMD EPYC 9004 (Zen 4)
		{0x000806f8, 6, 0x8f},    // Intel Xeon Sapphire Rapids
		{0x000c06f2, 6, 0xcf},    // Intel Xeon Emerald Rapids
		{0x00000f41, 0xf, 0x04},  // Pentium 4: family 15, no extension
		{0x00000543, 5, 0x04},    // Pentium: the extended model is not used
	} {
		if f, m := signature(c.eax); f != c.family || m != c.model {
			t.Errorf("signature(%#x) = family %#x model %#x, want %#x %#x", c.eax, f, m, c.family, c.model)
		}
	}
	// "AuthenticAMD" as CPUID leaf 0 returns it.
	if v := vendorString(0x68747541, 0x69746e65, 0x444d4163); v != "AuthenticAMD" {
		t.Errorf("vendorString = %q", v)
	}
}

func TestTuningFor(t *testing.T) {
	for _, c := range []struct {
		id   cpuIdentity
		want string
	}{
		{cpuIdentity{"AuthenticAMD", 0x1a, 0x02}, "amd-zen5"},
		{cpuIdentity{"AuthenticAMD", 0x1a, 0x44}, "amd-zen5"},
		{cpuIdentity{"GenuineIntel", 6, 0x8f}, "intel-sapphire-rapids"},
		{cpuIdentity{"GenuineIntel", 6, 0xcf}, "intel-sapphire-rapids"},
		{cpuIdentity{"AuthenticAMD", 0x19, 0x11}, "default"},  // Zen 4: not measured
		{cpuIdentity{"AuthenticAMD", 0x19, 0x61}, "default"},  // Zen 4 (Raphael)
		{cpuIdentity{"AuthenticAMD", 0x19, 0x01}, "amd-zen3"}, // EPYC Milan
		{cpuIdentity{"AuthenticAMD", 0x19, 0x21}, "amd-zen3"}, // Ryzen 5000
		{cpuIdentity{"GenuineIntel", 6, 0x55}, "default"},
		{cpuIdentity{}, "default"}, // no CPUID (noasm, other architectures)
	} {
		if got := tuningFor(c.id).name; got != c.want {
			t.Errorf("tuningFor(%+v) = %s, want %s", c.id, got, c.want)
		}
	}
	t.Logf("this CPU: %+v, tuning %s", thisCPU(), thisTuning.name)
	if Tunings()[0] != thisTuning.name || Default().Config().Tuning != thisTuning.name {
		t.Errorf("Tunings() = %v, the default Engine's %q; want this CPU's %q first", Tunings(), Default().Config().Tuning, thisTuning.name)
	}
	seen := map[string]bool{}
	for _, e := range tunings {
		if seen[e.t.name] || (e.match == nil) != (e.t.name == "default") || e.t.attnRows < 1 {
			t.Errorf("table entry %+v: names must be unique, only the default has no match, tiles need rows", e.t)
		}
		seen[e.t.name] = true
		for k, b := range e.t.gemm {
			if b.kc < 1 || b.mc < 1 {
				t.Errorf("%s: blocking of %s %+v", e.t.name, k, b)
			}
		}
	}
}

// TestTuningBlocking checks that an Engine runs the blocking of the entry
// it names, and that a weight packed by one entry's Engine serves
// another's without being packed again (the panels are the same).
func TestTuningBlocking(t *testing.T) {
	var first *Weight
	for _, name := range Tunings() {
		e := engine(t, Config{Tuning: name})
		for _, tu := range tunings {
			for _, k := range []*microKernel{e.gemm, e.bf16.microKernel} {
				if b, ok := tu.t.gemm[k.name]; ok && tu.t.name == name && (b.kc != k.kc || b.mc != k.mc) {
					t.Errorf("%s: kernel %s blocked %d x %d, want %+v", name, k.name, k.kc, k.mc, b)
				}
			}
		}
		if first == nil {
			first = e.PrepareWeight(make([]float32, 64*8), 64, 8)
		}
		packed := &first.packed[0]
		e.Linear(make([]float32, 3*64), make([]float32, 3*8), 3, first, nil, ActNone)
		if &first.packed[0] != packed {
			t.Errorf("%s: the weight was packed again", name)
		}
	}
	if _, err := New(Config{Tuning: "pentium"}); err == nil {
		t.Error("New accepted an unknown tuning")
	}
}
