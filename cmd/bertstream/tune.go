package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/bertstream/bertstream/bench"
	"github.com/bertstream/bertstream/kernels"
)

func init() {
	register(&command{name: "tune", summary: "measure the CPU kernels' blocking on this CPU and keep it for the other commands", run: runTune})
}

func runTune(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("tune", "tune [--threads N] [--rounds R] [--base ENTRY] [--out FILE] [--dry-run] [--json]", stderr)
	threads := fs.Int("threads", 0, "CPU threads of a kernel call, as serving will run them (0: all)")
	rounds := fs.Int("rounds", 7, "timed runs of every setting, settings interleaved; medians are compared")
	out := fs.String("out", "", "where to write the tuning (default: this CPU's file, which the other commands read unless told --tuning)")
	dry := fs.Bool("dry-run", false, "measure and report, write nothing")
	asJSON := fs.Bool("json", false, "print the tuning and every setting's figures as JSON")
	base := fs.String("base", "", "the table's entry to start from and compare with ("+strings.Join(kernels.Tunings(), ", ")+"; default this CPU's)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *rounds < 3 {
		return fmt.Errorf("--rounds %d: at least 3, for a median that one disturbed run cannot move", *rounds)
	}
	path := *out
	if path == "" && !*dry {
		p, err := kernels.TuningFile()
		if err != nil {
			return fmt.Errorf("%w (name one with --out)", err)
		}
		path = p
	}
	var log io.Writer = stdout
	if *asJSON {
		log = nil
	} else {
		entry := *base
		if entry == "" {
			entry = kernels.Tunings()[0]
		}
		fmt.Fprintf(stdout, "tuning %s against the table's entry %q, %d rounds\n", kernels.ThisCPU(), entry, *rounds)
	}
	res, err := bench.Tune(bench.TuneOptions{Threads: *threads, Rounds: *rounds, Base: *base, Log: log})
	if err != nil {
		if *asJSON && len(res.Candidates) > 0 {
			// What was timed before the failure, the failing setting last.
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			_ = enc.Encode(res) // best effort: Tune's error is the one to report
		}
		return err
	}
	if !*dry {
		if err := kernels.WriteMeasured(path, &res.Measured); err != nil {
			return err
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	for _, p := range res.Parts {
		if p.Chosen == p.Table {
			fmt.Fprintf(stdout, "%s: the table's %s stands\n", p.Part, p.Table)
		} else {
			fmt.Fprintf(stdout, "%s: %s, %.3fx the table's %s\n", p.Part, p.Chosen, p.Speedup, p.Table)
		}
	}
	if !*dry {
		fmt.Fprintf(stdout, "written to %s\n", path)
	}
	return nil
}
