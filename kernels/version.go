package kernels

import (
	"fmt"
	"runtime"
)

// Version selection: which micro-kernels and vector primitives, how many
// goroutines and which SGEMM one user of the package runs. Every choice is
// a field of an Engine, so that two backends in one process may differ;
// the kernels receive what they need from the Engine and read no state of
// their own.

// version is one implementation level of the kernels: an SGEMM
// micro-kernel and the vector primitives for one instruction set.
type version struct {
	name string
	gemm *microKernel
	vec  *vecOps
}

// versionList is every version this build has that this CPU can run,
// fastest first; the portable Go version is always last.
func versionList() []version {
	return append(asmVersions(), version{"go", goKernel, goVec})
}

// Versions names the kernel versions this CPU can run, fastest first
// ("avx512", "avx2", "go").
func Versions() []string {
	var names []string
	for _, v := range versionList() {
		names = append(names, v.name)
	}
	return names
}

func bf16Kernels() []*bf16Kernel {
	return append(asmBF16Kernels(), goBF16Kernel)
}

// BF16Versions names the BF16 micro-kernels this CPU runs, fastest first
// ("avx512bf16", "go-bf16").
func BF16Versions() []string {
	var names []string
	for _, k := range bf16Kernels() {
		names = append(names, k.name)
	}
	return names
}

// BLAS choices for the linear layers of F32 weights.
const (
	BLASNative = "native" // the package's own SGEMM, bias and activation fused
	BLASGonum  = "gonum"  // gonum's pure-Go SGEMM, for comparison
)

// Config chooses the kernels. The zero value is the fastest versions this
// CPU runs, on every core, with the native SGEMM.
type Config struct {
	// Version names the kernel version (see Versions); empty: the fastest.
	Version string
	// BF16Version names the micro-kernel of BF16 weights (see
	// BF16Versions); empty: the fastest.
	BF16Version string
	// Int8Version names the micro-kernel of INT8 weights (see
	// Int8Versions); empty: the fastest.
	Int8Version string
	// Threads caps the goroutines one kernel call uses; 0 or less:
	// GOMAXPROCS at the time of the call.
	Threads int
	// BLAS is BLASNative (or empty) or BLASGonum.
	BLAS string
	// Tuning names the entry of the blocking table (see Tunings); empty:
	// the one of this CPU, or MeasuredName with Measured.
	Tuning string
	// Measured, when not nil, is a tuning measured on this CPU (see
	// ReadMeasured), run instead of the table's entry.
	Measured *Measured
}

// Engine runs the kernels of one Config. It holds no mutable state: one
// Engine may be used from any number of goroutines, and engines of
// different configurations side by side.
type Engine struct {
	cfg  Config // names resolved
	gemm *microKernel
	vec  *vecOps
	bf16 *bf16Kernel
	// bf16Words packs BF16 attention's keys (see attention).
	bf16Words *microKernel
	int8      *int8Kernel
	gonum     bool
	tune      tuning
}

// New resolves c into an Engine, or reports the name this CPU has no
// kernel for.
func New(c Config) (*Engine, error) {
	e := &Engine{cfg: c}
	v, err := pick(versionList(), func(v version) string { return v.name }, &e.cfg.Version, "kernel", Versions)
	if err != nil {
		return nil, err
	}
	e.gemm, e.vec = v.gemm, v.vec
	if c.Measured != nil {
		if c.Tuning != "" && c.Tuning != MeasuredName {
			return nil, fmt.Errorf("tuning %q and a measured tuning: name one", c.Tuning)
		}
		if e.tune, err = c.Measured.tuning(); err != nil {
			return nil, fmt.Errorf("measured tuning: %w", err)
		}
		e.cfg.Tuning = MeasuredName
	} else if e.tune, err = pick(tuningList(), func(t tuning) string { return t.name }, &e.cfg.Tuning, "tuning", Tunings); err != nil {
		return nil, err
	}
	if b, ok := e.tune.gemm[e.gemm.name]; ok {
		k := *e.gemm
		k.kc, k.mc = b.kc, b.mc
		e.gemm = &k
	}
	if e.bf16, err = pick(bf16Kernels(), func(k *bf16Kernel) string { return k.name }, &e.cfg.BF16Version, "BF16 kernel", BF16Versions); err != nil {
		return nil, err
	}
	if b, ok := e.tune.gemm[e.bf16.name]; ok {
		k, mk := *e.bf16, *e.bf16.microKernel
		mk.kc, mk.mc = b.kc, b.mc
		k.microKernel = &mk
		e.bf16 = &k
	}
	// BF16 words are moved like floats: the F32 kernel's transposing
	// packer serves BF16 attention's keys where its panels are as wide.
	e.bf16Words = &microKernel{name: e.bf16.name + "-words", nr: e.bf16.nr}
	if e.gemm.nr == e.bf16.nr {
		e.bf16Words.packTrans = e.gemm.packTrans
	}
	if e.int8, err = pick(int8Kernels(), func(k *int8Kernel) string { return k.name }, &e.cfg.Int8Version, "INT8 kernel", Int8Versions); err != nil {
		return nil, err
	}
	if b, ok := e.tune.gemm[e.int8.name]; ok {
		k := *e.int8
		k.kc, k.mc = b.kc, b.mc
		e.int8 = &k
	}
	switch c.BLAS {
	case "", BLASNative:
		e.cfg.BLAS = BLASNative
	case BLASGonum:
		e.gonum = true
	default:
		return nil, fmt.Errorf("no BLAS %q (have %s, %s)", c.BLAS, BLASNative, BLASGonum)
	}
	return e, nil
}

var defaultEngine = mustNew(Config{})

func mustNew(c Config) *Engine {
	e, err := New(c)
	if err != nil {
		panic(err) // only for configurations that always resolve
	}
	return e
}

// Default is the Engine of the zero Config.
func Default() *Engine { return defaultEngine }

// Config is e's configuration with the names of the versions and BLAS it
// resolved to.
func (e *Engine) Config() Config { return e.cfg }

// Threads is the number of goroutines a kernel call of e may use.
func (e *Engine) Threads() int {
	if e.cfg.Threads > 0 {
		return e.cfg.Threads
	}
	return runtime.GOMAXPROCS(0)
}

// pick returns the item of list (fastest first) that *want names, or the
// first when *want is empty, which it then names.
func pick[T any](list []T, name func(T) string, want *string, kind string, have func() []string) (T, error) {
	if *want == "" {
		*want = name(list[0])
	}
	for _, it := range list {
		if name(it) == *want {
			return it, nil
		}
	}
	var zero T
	return zero, fmt.Errorf("no %s version %q on this CPU (have %v)", kind, *want, have())
}
