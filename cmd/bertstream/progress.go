package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/term"
)

// meter shows progress on stderr once a step has run for quietFor — a
// spinner with the elapsed time, and a bar when the amount of work is
// known — only when stderr is a terminal, so that pipes and logs stay
// clean.
type meter struct {
	f     *os.File
	what  string
	total int64 // 0: unknown
	done  atomic.Int64
	start time.Time
	stop  chan struct{}
	wg    sync.WaitGroup
}

// quietFor is how long a step runs before its meter shows.
const quietFor = time.Second

// startMeter begins a meter on w for what, out of total units (0 when
// unknown). It does nothing unless w is a terminal.
func startMeter(w io.Writer, what string, total int) *meter {
	m := &meter{what: what, total: int64(total), start: time.Now()}
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return m
	}
	m.f, m.stop = f, make(chan struct{})
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		shown := false
		for i := 0; ; i++ {
			select {
			case <-m.stop:
				if shown {
					fmt.Fprintf(f, "\r\033[K%s: %sdone in %.1fs\n", what, m.count(), time.Since(m.start).Seconds())
				}
				return
			case <-t.C:
				// A step that ends within quietFor (a mapped model
				// loads in about that) leaves the terminal alone.
				if time.Since(m.start) < quietFor {
					continue
				}
				shown = true
				fmt.Fprintf(f, "\r\033[K%s", m.line(i))
			}
		}
	}()
	return m
}

func (m *meter) count() string {
	if n := m.done.Load(); n > 0 {
		return fmt.Sprintf("%d ", n)
	}
	return ""
}

func (m *meter) line(frame int) string {
	el := time.Since(m.start).Seconds()
	n := m.done.Load()
	if m.total > 0 {
		const width = 30
		fill := int(float64(width) * float64(n) / float64(m.total))
		return fmt.Sprintf("%s [%s%s] %d/%d %.1fs", m.what, strings.Repeat("=", fill), strings.Repeat(" ", width-fill), n, m.total, el)
	}
	spin := `|/-\`[frame%4]
	if n > 0 {
		return fmt.Sprintf("%c %s %d (%.0f/s) %.1fs", spin, m.what, n, float64(n)/el, el)
	}
	return fmt.Sprintf("%c %s %.1fs", spin, m.what, el)
}

// add counts n more units done.
func (m *meter) add(n int) { m.done.Add(int64(n)) }

// end stops the meter and prints its summary line.
func (m *meter) end() {
	if m.stop == nil {
		return
	}
	close(m.stop)
	m.wg.Wait()
	m.stop = nil
}
