package cuda

import (
	"os"
	"path/filepath"
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
