package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bertstream/bertstream/kernels"
)

// TestTuneCommand runs `bertstream tune` as a user would, then the other
// commands with what it wrote: they read this CPU's file unless
// BERTSTREAM_TUNING or --tuning says otherwise, run it with the answers
// the table gives, and refuse a broken file naming it and where it was
// named.
func TestTuneCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("times BERT-base's layers at every setting")
	}
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	t.Setenv("BERTSTREAM_TUNING", "")
	out, _ := run(t, "tune", "--threads", "2", "--rounds", "3")
	path, err := kernels.TuningFile()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "written to "+path) || !strings.Contains(out, "attention: ") {
		t.Fatalf("tune printed:\n%s", out)
	}
	for _, c := range []struct{ flag, env, from string }{
		{"", "", path},
		{"", "table", "table"},
		{"table", path, "table"},
		{path, "table", path},
	} {
		t.Setenv("BERTSTREAM_TUNING", c.env)
		m, from, err := measuredTuning(c.flag, io.Discard)
		if err != nil || from != c.from || (m == nil) != (c.from == "table") {
			t.Errorf("--tuning %q, BERTSTREAM_TUNING %q: %v from %q (%v), want from %q", c.flag, c.env, m, from, err, c.from)
		}
	}

	model := filepath.Join(fixtures, "bert-pretraining")
	predict := func(tuning string) string {
		o, _ := run(t, "predict", "--model", model, "--task", "fill-mask", "--tuning", tuning, "the [MASK] is here")
		return o
	}
	type answer struct {
		Masks []struct {
			Top []struct {
				Token string
				Score float64
			}
		}
	}
	var measured, table answer
	if err := json.Unmarshal([]byte(predict(path)), &measured); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(predict("table")), &table); err != nil {
		t.Fatal(err)
	}
	if len(measured.Masks) != 1 || len(table.Masks) != 1 || len(measured.Masks[0].Top) != len(table.Masks[0].Top) {
		t.Fatalf("answers %+v and %+v", measured, table)
	}
	for i, m := range measured.Masks[0].Top {
		w := table.Masks[0].Top[i]
		if m.Token != w.Token || m.Score-w.Score > 1e-6 || w.Score-m.Score > 1e-6 {
			t.Errorf("top %d: %+v with the measured tuning, %+v with the table", i, m, w)
		}
	}

	// The default file, stale: left aside with a warning.
	t.Setenv("BERTSTREAM_TUNING", "")
	if err := os.WriteFile(path, []byte(`{"cpu":"amd64 NoSuchVendor family 0x0 model 0x0","base":"default"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	var warn strings.Builder
	if m, from, err := measuredTuning("", &warn); m != nil || from != "table" || err != nil || !strings.Contains(warn.String(), path) {
		t.Errorf("a stale default file: %v from %q (%v), warning %q", m, from, err, warn.String())
	}
	// Named, it is an error.
	bad := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(bad, []byte(`{"cpu":"amd64 NoSuchVendor family 0x0 model 0x0","base":"default"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BERTSTREAM_TUNING", bad)
	var o, e bytes.Buffer
	if code := runMain([]string{"predict", "--model", model, "--task", "fill-mask", "x [MASK]"}, &o, &e); code != 1 ||
		!strings.Contains(e.String(), "BERTSTREAM_TUNING") || !strings.Contains(e.String(), bad) || !strings.Contains(e.String(), "this CPU is") {
		t.Errorf("a tuning of another CPU: exit %d, stderr %s", code, e.String())
	}
}
