package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoPlotting keeps the comparison with the peers, whose plots bring in
// gonum's plot with its fonts, PDF and SVG writers (a quarter of the
// binary), out of the serving binary: it belongs in bench/peers, not bench.
func TestNoPlotting(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to list the dependencies with:", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v: %s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "gonum.org/v1/plot") {
			t.Errorf("bertstream links %s", pkg)
		}
	}
}
