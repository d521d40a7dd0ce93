package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"
)

// progress shows an activity line with the elapsed time on w while a long
// step runs, only when w is a terminal (pipes and logs stay clean). The
// returned func ends it.
func progress(w io.Writer, what string) func() {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	start := time.Now()
	go func() {
		defer wg.Done()
		frames := `|/-\`
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-done:
				fmt.Fprintf(f, "\r\033[K%s: done in %.1fs\n", what, time.Since(start).Seconds())
				return
			case <-t.C:
				fmt.Fprintf(f, "\r\033[K%c %s %.1fs", frames[i%4], what, time.Since(start).Seconds())
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}
