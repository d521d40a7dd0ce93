package kernels

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

// oddMeasured is a measured tuning far from every entry of the table: k
// slices and row blocks that split BERT's k and rows unevenly, and a
// score tile of a few rows.
func oddMeasured() *Measured {
	return &Measured{CPU: ThisCPU(), Base: Tunings()[0], Threads: 2, Date: "2026-12-03T00:00:00Z",
		GEMM: map[string]Blocking{Versions()[0]: {KC: 40, MC: 19}, BF16Versions()[0]: {KC: 9, MC: 13},
			Int8Versions()[0]: {KC: 7, MC: 10}},
		AttnRows: 5}
}

// TestMeasuredEngine checks that an Engine of a measured tuning runs its
// blocking, and that the kernels stay right under it: the F32, BF16 and
// INT8 linear layers against their references on odd shapes, attention
// against AttentionRef. Weights packed by the table's engine serve it as
// they are (bench.Tune times them so).
func TestMeasuredEngine(t *testing.T) {
	m := oddMeasured()
	e := engine(t, Config{Measured: m, Threads: 2})
	if e.Config().Tuning != MeasuredName {
		t.Errorf("Config().Tuning = %q, want %q", e.Config().Tuning, MeasuredName)
	}
	gemm, rows := e.Blocking()
	for name, b := range m.GEMM {
		if gemm[name] != b {
			t.Errorf("kernel %s blocked %+v, want %+v", name, gemm[name], b)
		}
	}
	if rows != m.AttnRows {
		t.Errorf("attention tile of %d rows, want %d", rows, m.AttnRows)
	}
	rng := rand.New(rand.NewSource(31))
	for _, m := range []int{1, 7, 64, 101} {
		for _, nk := range [][2]int{{33, 129}, {100, 1031}} {
			n, k := nk[0], nk[1]
			x, wd, bias := randSlice(rng, m*k), randSlice(rng, n*k), randSlice(rng, n)
			got, want := make([]float32, m*n), make([]float32, m*n)
			e.Linear(got, x, m, e.PrepareWeight(wd, n, k), bias, ActGELU)
			LinearRef(want, x, m, wd, n, k, bias, ActGELU)
			if err := closeTo(got, want, 1e-4, 1e-4); err != nil {
				t.Errorf("F32 m=%d n=%d k=%d: %v", m, n, k, err)
			}
			e.Linear(got, x, m, e.PrepareWeightInt8(wd, n, k), bias, ActNone)
			LinearInt8Ref(want, x, m, wd, n, k, bias, ActNone)
			if err := closeTo(got, want, 0, 0); err != nil {
				t.Errorf("INT8 m=%d n=%d k=%d: %v", m, n, k, err)
			}
		}
	}
	testLinearBF16(t, e)
	wd := randSlice(rng, 40*70)
	for _, w := range []*Weight{Default().PrepareWeight(wd, 40, 70), Default().PrepareWeightInt8(wd, 40, 70)} {
		packed, i8 := w.packed, w.i8
		e.Linear(make([]float32, 9*40), randSlice(rng, 9*70), 9, w, nil, ActNone)
		if len(packed) > 0 && &w.packed[0] != &packed[0] || w.i8 != i8 {
			t.Errorf("a weight of the table's engine (int8 %v) was packed again", w.Int8())
		}
	}
	name, seqs, qkv, scale, want, got := attentionCase(rng, 64, 4, []int{1, 13, 40})
	AttentionRef(want, qkv, seqs, 64, 4, scale)
	e.Attention(got, qkv, seqs, 64, 4, scale)
	if err := closeTo(got, want, 1e-5, 1e-5); err != nil {
		t.Errorf("attention %s: %v", name, err)
	}
	if _, err := New(Config{Measured: m, Tuning: Tunings()[0]}); err == nil {
		t.Error("New took both a table entry and a measured tuning")
	}
}

// TestMeasuredFile checks that a tuning file reads back as written, and
// that each way a file can be wrong is refused with what is wrong.
func TestMeasuredFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "tuning.json")
	m := oddMeasured()
	if err := WriteMeasured(path, m); err != nil {
		t.Fatal(err)
	}
	got, err := ReadMeasured(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Errorf("read %+v, wrote %+v", got, m)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "sub", ".tuning-*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
	v := Versions()[0]
	for _, c := range []struct{ name, file, want string }{
		{"other CPU", `{"cpu":"amd64 NoSuchVendor family 0x0 model 0x0","base":"default"}`, "this CPU is"},
		{"unknown base", fmt.Sprintf(`{"cpu":%q,"base":"pentium"}`, ThisCPU()), `base "pentium"`},
		{"unknown kernel", fmt.Sprintf(`{"cpu":%q,"base":"default","gemm":{"sse9":{"kc":8,"mc":8}}}`, ThisCPU()), `"sse9"`},
		{"kc 0", fmt.Sprintf(`{"cpu":%q,"base":"default","gemm":{%q:{"kc":0,"mc":8}}}`, ThisCPU(), v), "kc 0"},
		{"mc too large", fmt.Sprintf(`{"cpu":%q,"base":"default","gemm":{%q:{"kc":8,"mc":100000}}}`, ThisCPU(), v), "mc 100000"},
		{"negative tile", fmt.Sprintf(`{"cpu":%q,"base":"default","attention_rows":-1}`, ThisCPU()), "attention_rows -1"},
		{"unknown field", fmt.Sprintf(`{"cpu":%q,"base":"default","prefetch":3}`, ThisCPU()), `"prefetch"`},
		{"not JSON", `{"cpu":`, "unexpected EOF"},
		{"empty", " \n", "empty file"},
		{"two objects", fmt.Sprintf(`{"cpu":%q,"base":"default"} {}`, ThisCPU()), "more after"},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".json")
		if err := os.WriteFile(p, []byte(c.file), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := ReadMeasured(p)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: err %v, want one naming %s and %q", c.name, err, p, c.want)
		}
	}
	if _, err := ReadMeasured(filepath.Join(dir, "none.json")); err == nil {
		t.Error("a missing file read")
	}
	bad := oddMeasured()
	bad.CPU = "elsewhere"
	if err := WriteMeasured(filepath.Join(dir, "bad.json"), bad); err == nil {
		t.Error("WriteMeasured wrote a tuning of another CPU")
	}
}

// TestTuningFile checks that the default file is keyed by this CPU and
// lies under the user's cache directory (XDG_CACHE_HOME: Linux's).
func TestTuningFile(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("os.UserCacheDir follows XDG_CACHE_HOME on Linux only")
	}
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	p, err := TuningFile()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(p, os.Getenv("XDG_CACHE_HOME")) || strings.ContainsAny(filepath.Base(p), " ()") {
		t.Errorf("TuningFile() = %q", p)
	}
	t.Logf("%s: %s", ThisCPU(), p)
}

// FuzzParseMeasured feeds tuning files of any bytes to the parser: it
// answers an error or a tuning, never panics, and a tuning it accepts
// writes and reads back as itself.
func FuzzParseMeasured(f *testing.F) {
	good, err := json.Marshal(oddMeasured())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(fmt.Sprintf(`{"cpu":%q,"base":"default","attention_rows":48}`, ThisCPU())))
	f.Add([]byte(`{"cpu":"x"} trailing`))
	f.Add([]byte(""))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseMeasured(b)
		if err != nil {
			if m != nil {
				t.Fatalf("a tuning and an error (%v)", err)
			}
			return
		}
		path := filepath.Join(dir, "tuning.json")
		if err := WriteMeasured(path, m); err != nil {
			t.Fatalf("an accepted tuning does not write: %v", err)
		}
		back, err := ReadMeasured(path)
		if err != nil {
			t.Fatalf("an accepted tuning does not read back: %v", err)
		}
		if !reflect.DeepEqual(back, m) {
			t.Fatalf("read back %+v, wrote %+v", back, m)
		}
	})
}
