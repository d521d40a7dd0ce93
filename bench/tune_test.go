package bench

import (
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bertstream/bertstream/kernels"
)

// TestDecide checks the choice on given medians: the fastest by the
// geometric mean over the workloads, and the reference unless another is
// minGain ahead of it.
func TestDecide(t *testing.T) {
	for _, c := range []struct {
		name string
		ms   [][]float64 // per candidate; the reference first
		want int
	}{
		{"faster", [][]float64{{10, 2}, {9, 1.8}, {11, 2}}, 1},
		{"within minGain", [][]float64{{10, 2}, {9.95, 1.99}}, 0},
		{"a tie", [][]float64{{10, 2}, {10, 2}}, 0},
		{"faster on one, slower on the other", [][]float64{{10, 2}, {8, 2.6}}, 0},
		{"geometric, not summed", [][]float64{{100, 2}, {101, 1.6}}, 1},
		{"all slower", [][]float64{{10, 2}, {11, 2.2}, {12, 2.1}}, 0},
	} {
		cands := make([]TuneCandidate, len(c.ms))
		for i, ms := range c.ms {
			cands[i].Ms = ms
		}
		got := decide(cands, 0)
		chosen := 0
		for _, cd := range cands {
			if cd.Chosen {
				chosen++
			}
		}
		if got != c.want || chosen != 1 || !cands[got].Chosen || cands[0].Speedup != 1 {
			t.Errorf("%s: chose %d, want %d (%+v)", c.name, got, c.want, cands)
		}
	}
}

// TestSweep drives sweep with workloads whose time and output the test
// sets per setting (the engine's attention tile tells them apart): the
// setting five times as fast as the others wins (real sleeps, medians of
// five: a loaded machine stretches them, not by 5x), and a setting whose
// outputs differ is an error.
func TestSweep(t *testing.T) {
	engine := func(b kernels.Blocking) (*kernels.Engine, error) {
		m := &kernels.Measured{CPU: kernels.ThisCPU(), Base: kernels.Tunings()[0], AttnRows: b.MC}
		return kernels.New(kernels.Config{Measured: m})
	}
	settings := []kernels.Blocking{{MC: 10}, {MC: 20}, {MC: 30}}
	run := func(sleep map[int]time.Duration, out map[int]float32) []load {
		var last float32
		return []load{{name: "sleep", run: func(e *kernels.Engine) {
			_, rows := e.Blocking()
			time.Sleep(sleep[rows])
			last = out[rows]
		}, out: func() []float32 { return []float32{last} }}}
	}
	opts := TuneOptions{Rounds: 5}
	for _, c := range []struct {
		name  string
		sleep map[int]time.Duration
		want  int
	}{
		{"faster wins", map[int]time.Duration{10: 10 * time.Millisecond, 20: 2 * time.Millisecond, 30: 12 * time.Millisecond}, 20},
		{"the reference wins", map[int]time.Duration{10: 2 * time.Millisecond, 20: 10 * time.Millisecond, 30: 12 * time.Millisecond}, 10},
	} {
		best, cands, err := sweep("attention", settings, settings[0], run(c.sleep, map[int]float32{10: 1, 20: 1, 30: 1}), engine, opts)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if best.MC != c.want {
			t.Errorf("%s: chose %+v, want rows %d (%+v)", c.name, best, c.want, cands)
		}
		chosen := 0
		for _, cd := range cands {
			if cd.Chosen {
				chosen++
			}
			if len(cd.Ms) != 1 || cd.Ms[0] < 1 {
				t.Errorf("%s: %s timed %v", c.name, cd.Setting, cd.Ms)
			}
		}
		if chosen != 1 || !cands[0].Reference {
			t.Errorf("%s: %d chosen, reference %v", c.name, chosen, cands[0].Reference)
		}
	}
	_, _, err := sweep("attention", settings, settings[0], run(map[int]time.Duration{}, map[int]float32{10: 1, 20: 1, 30: 1.01}), engine, opts)
	if err == nil || !strings.Contains(err.Error(), "rows 30") {
		t.Errorf("a setting whose outputs differ: err %v", err)
	}
	if _, _, err := sweep("attention", settings, kernels.Blocking{MC: 40}, nil, engine, opts); err == nil {
		t.Error("sweep ran without the reference among its settings")
	}
}

// TestTune runs the real sweep on this CPU, briefly: what it chose is what
// its tuning file holds, every setting it timed computed what the table's
// did, and each sweep chose once.
func TestTune(t *testing.T) {
	if testing.Short() {
		t.Skip("times BERT-base's layers at every setting")
	}
	var log strings.Builder
	res, err := Tune(TuneOptions{Threads: 2, Rounds: 3, Log: &log})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Logf("\n%s", log.String())
	m := res.Measured
	if m.CPU != kernels.ThisCPU() || m.Base != kernels.Tunings()[0] || m.Threads != 2 {
		t.Errorf("measured %+v", m)
	}
	path := filepath.Join(t.TempDir(), "tuning.json")
	if err := kernels.WriteMeasured(path, &m); err != nil {
		t.Fatal(err)
	}
	back, err := kernels.ReadMeasured(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*back, m) {
		t.Errorf("read back %+v, wrote %+v", *back, m)
	}
	// Each sweep of a part has one reference and one choice; the parts'
	// summaries must say what the engine of the tuning runs.
	refs, chosen := map[string]int{}, map[string]int{}
	for _, c := range res.Candidates {
		if c.Reference {
			refs[c.Part]++
		}
		if c.Chosen {
			chosen[c.Part]++
			if !c.Reference && c.Speedup < minGain {
				t.Errorf("%s %s chosen at %.3fx", c.Part, c.Setting, c.Speedup)
			}
		}
	}
	if len(res.Parts) == 0 || res.Parts[len(res.Parts)-1].Part != "attention" {
		t.Fatalf("parts %+v", res.Parts)
	}
	e, err := kernels.New(kernels.Config{Measured: &m})
	if err != nil {
		t.Fatal(err)
	}
	gemm, rows := e.Blocking()
	for _, p := range res.Parts {
		if refs[p.Part] == 0 || chosen[p.Part] != refs[p.Part] {
			t.Errorf("%s: %d sweeps, %d choices", p.Part, refs[p.Part], chosen[p.Part])
		}
		var want string
		if p.Part == "attention" {
			want = "rows " + strconv.Itoa(rows)
		} else {
			b := gemm[strings.TrimPrefix(p.Part, "gemm ")]
			want = "kc " + strconv.Itoa(b.KC) + " mc " + strconv.Itoa(b.MC)
		}
		if p.Chosen != want {
			t.Errorf("%s: chose %s, the engine of the tuning runs %s", p.Part, p.Chosen, want)
		}
	}
}

// TestRunKernelsMeasured checks that the kernel harness runs a measured
// tuning beside the table's, validated like every version.
func TestRunKernelsMeasured(t *testing.T) {
	if testing.Short() {
		t.Skip("runs attention's reference at BERT-base shapes")
	}
	m := &kernels.Measured{CPU: kernels.ThisCPU(), Base: kernels.Tunings()[0], AttnRows: 40}
	res, err := RunKernels([]string{"attention"}, 2, 0, time.Millisecond, m)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, r := range res {
		if strings.HasSuffix(r.Version, "@measured") {
			seen++
			if !r.Valid || r.Ms <= 0 {
				t.Errorf("%s %s: valid %v (error %g), %g ms", r.Shape, r.Version, r.Valid, r.MaxErr, r.Ms)
			}
		}
	}
	if seen != 2 {
		t.Errorf("%d @measured rows, want one per attention shape: %+v", seen, res)
	}
}
