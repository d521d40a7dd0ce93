package gpu

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestModulesMatchSources checks that every .cu file has its PTX embedded
// and that the PTX targets Arch; whether the PTX is current is checked by
// `make cuda-check`, which has nvcc.
func TestModulesMatchSources(t *testing.T) {
	srcs, err := filepath.Glob("*.cu")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, m := range Modules() {
		have[m.Name] = true
		if !strings.Contains(m.PTX, ".target sm_"+strings.TrimPrefix(Arch, "compute_")) {
			t.Errorf("ptx/%s.ptx does not target %s", m.Name, Arch)
		}
		if _, err := os.Stat(m.Name + ".cu"); err != nil {
			t.Errorf("ptx/%s.ptx has no source %s.cu", m.Name, m.Name)
		}
	}
	for _, s := range srcs {
		if name := strings.TrimSuffix(s, ".cu"); !have[name] {
			t.Errorf("%s has no embedded PTX: run make kernels", s)
		}
	}
}

// TestLaunchesNameEntryPoints checks that the kernels the launch functions
// name are exactly the entry points of the PTX: none missing (a launch
// that would fail on the device) and none left over (a kernel nothing
// launches).
func TestLaunchesNameEntryPoints(t *testing.T) {
	entry := regexp.MustCompile(`\.entry\s+(\w+)\(`)
	listed := kernels()
	for _, m := range Modules() {
		var inPTX []string
		for _, e := range entry.FindAllStringSubmatch(m.PTX, -1) {
			inPTX = append(inPTX, e[1])
		}
		slices.Sort(inPTX)
		launched := slices.Sorted(slices.Values(m.Kernels))
		if !slices.Equal(inPTX, launched) {
			t.Errorf("%s.cu: the PTX has entry points %v; the launch functions name %v", m.Name, inPTX, launched)
		}
		delete(listed, m.Name)
	}
	for name := range listed {
		t.Errorf("the launch functions name kernels of %s.cu, which has no PTX", name)
	}
}
