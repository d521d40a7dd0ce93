package kernels

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// A CPU the table does not know runs the default entry, measured on
// another microarchitecture. A measured tuning is the same entry measured
// on the CPU itself (bench.Tune, `bertstream tune`), once, off the serving
// path: kept in a file, it is read at start-up like the table.

// Blocking is one micro-kernel's blocking in a measured tuning: KC is how
// much of k one call of the kernel covers, in the kernel's own unit (F32
// values, BF16 pairs, INT8 quads), MC the rows of A one task keeps in L2.
type Blocking struct {
	KC int `json:"kc"`
	MC int `json:"mc"`
}

// Measured is a tuning measured on one CPU. Config.Measured runs it; it
// is refused on another CPU.
type Measured struct {
	// CPU is ThisCPU() where it was measured.
	CPU string `json:"cpu"`
	// Base names the table's entry it was measured against; it keeps
	// whatever Measured does not set.
	Base string `json:"base"`
	// GEMM is the blocking of each micro-kernel it measured, by name
	// (Versions, BF16Versions, Int8Versions).
	GEMM map[string]Blocking `json:"gemm"`
	// AttnRows is how many query rows attention's score tile holds; 0
	// keeps Base's.
	AttnRows int `json:"attention_rows,omitempty"`
	// Threads and Date say how and when it was measured.
	Threads int    `json:"threads"`
	Date    string `json:"date"`
}

// MeasuredName is Config.Tuning of an Engine that runs a Measured.
const MeasuredName = "measured"

// Bounds of a measured blocking: far beyond any cache, and small enough
// that a buffer of them cannot overflow.
const (
	maxKC       = 1 << 14
	maxMC       = 1 << 12
	maxAttnRows = 1 << 12
)

// ThisCPU identifies this CPU as measured tunings are keyed: architecture,
// CPUID vendor, family and model. Without CPUID (other architectures, the
// noasm build) it is the architecture alone: a tuning there holds only
// attention's tile (the portable kernels are not tuned), and machines of
// one architecture share it.
func ThisCPU() string { return identityString(thisCPU()) }

func identityString(id cpuIdentity) string {
	if id.vendor == "" {
		return runtime.GOARCH + " (no CPUID)"
	}
	return fmt.Sprintf("%s %s family %#x model %#x", runtime.GOARCH, id.vendor, id.family, id.model)
}

// TuningFile is where `bertstream tune` keeps the tuning of this CPU
// unless told otherwise: one file per CPU identity under the user's
// cache directory, so that a home shared by machines of several kinds
// serves each its own.
func TuningFile() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("tuning file: %w", err)
	}
	id := strings.NewReplacer(" ", "-", "(", "", ")", "").Replace(ThisCPU())
	return filepath.Join(dir, "bertstream", "tuning-"+id+".json"), nil
}

// ReadMeasured reads and checks a tuning file for this CPU.
func ReadMeasured(path string) (*Measured, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tuning file: %w", err) // the error names the file
	}
	m, err := parseMeasured(b)
	if err != nil {
		return nil, fmt.Errorf("tuning %s: %w", path, err)
	}
	return m, nil
}

// parseMeasured reads a tuning file's bytes: one JSON object of
// Measured's fields and nothing else, measured on this CPU.
func parseMeasured(b []byte) (*Measured, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, errors.New("empty file")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Measured
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	if err := dec.Decode(&struct{}{}); err != io.EOF {
		return nil, fmt.Errorf("more after the tuning's JSON object, at byte %d", dec.InputOffset())
	}
	if _, err := m.tuning(); err != nil {
		return nil, err
	}
	return &m, nil
}

// WriteMeasured writes m to path, making its directory, through a
// temporary file synced and renamed into place, so that neither a reader
// nor a crash sees half of it. The file is readable by all, as the
// table it stands for: a service account may run what an operator tuned.
func WriteMeasured(path string, m *Measured) error {
	if _, err := m.tuning(); err != nil {
		return fmt.Errorf("tuning %s: %w", path, err)
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("tuning %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("tuning: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tuning-*")
	if err != nil {
		return fmt.Errorf("tuning: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(append(b, '\n'))
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("tuning: %w", err)
	}
	return nil
}

// tuning is m over its base entry, after checking that it was measured on
// this CPU and names kernels this CPU runs, within bounds.
func (m *Measured) tuning() (tuning, error) {
	if here := ThisCPU(); m.CPU != here {
		return tuning{}, fmt.Errorf("measured on %q, this CPU is %q: run `bertstream tune` on it", m.CPU, here)
	}
	var t tuning
	found := false
	for _, e := range tunings {
		if e.t.name == m.Base {
			t, found = e.t, true
		}
	}
	if !found {
		return tuning{}, fmt.Errorf("base %q is no entry of the table (have %v)", m.Base, Tunings())
	}
	gemm := make(map[string]blocking, len(t.gemm)+len(m.GEMM))
	for k, b := range t.gemm {
		gemm[k] = b
	}
	known := map[string]bool{}
	for _, n := range Versions() {
		known[n] = true
	}
	for _, n := range BF16Versions() {
		known[n] = true
	}
	for _, n := range Int8Versions() {
		known[n] = true
	}
	for name, b := range m.GEMM {
		if !known[name] {
			return tuning{}, fmt.Errorf("gemm %q: no such kernel in this build on this CPU", name)
		}
		if b.KC < 1 || b.KC > maxKC || b.MC < 1 || b.MC > maxMC {
			return tuning{}, fmt.Errorf("gemm %q: kc %d, mc %d out of range (1-%d, 1-%d)", name, b.KC, b.MC, maxKC, maxMC)
		}
		gemm[name] = blocking{b.KC, b.MC}
	}
	t.gemm = gemm
	if m.AttnRows < 0 || m.AttnRows > maxAttnRows {
		return tuning{}, fmt.Errorf("attention_rows %d out of range (0-%d)", m.AttnRows, maxAttnRows)
	}
	if m.AttnRows > 0 {
		t.attnRows = m.AttnRows
	}
	t.name = MeasuredName
	return t, nil
}

// Blocking is the blocking e runs: each of its micro-kernels' (F32, BF16,
// INT8, by name) and the query rows of attention's score tile.
func (e *Engine) Blocking() (gemm map[string]Blocking, attnRows int) {
	gemm = map[string]Blocking{
		e.gemm.name: {e.gemm.kc, e.gemm.mc},
		e.bf16.name: {e.bf16.kc, e.bf16.mc},
		e.int8.name: {e.int8.kc, e.int8.mc},
	}
	return gemm, e.tune.attnRows
}
