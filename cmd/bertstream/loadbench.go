package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/bert/task"
	"github.com/bertstream/bertstream/bert/tokenize"
	"github.com/bertstream/bertstream/loader"
	"github.com/bertstream/bertstream/nn"
)

// loadResult is one `bench --load` measurement. Every process figure is
// taken from outside the process, as /usr/bin/time takes it: wall time
// from the start of the process, peak RSS from the kernel's accounting of
// the child (getrusage).
type loadResult struct {
	Model           string  `json:"model"`
	Checkpoint      string  `json:"checkpoint"`
	CheckpointBytes int64   `json:"checkpoint_bytes"`
	Threads         int     `json:"threads"`
	Run             int     `json:"run"`
	PredictMs       float64 `json:"predict_ms"`        // `predict` one sentence: start to exit
	PredictCPUMs    float64 `json:"predict_cpu_ms"`    // its user + system time
	PredictRSS      int64   `json:"predict_peak_rss"`  // its peak RSS, bytes
	PredictRatio    float64 `json:"predict_rss_ratio"` // peak RSS / checkpoint bytes
	InspectMs       float64 `json:"inspect_ms"`
	InspectRSS      int64   `json:"inspect_peak_rss"`
	LoadMs          float64 `json:"load_ms"`         // in the serving child: loader.LoadPredictor
	FirstAnswerMs   float64 `json:"first_answer_ms"` // process start to the first answer
	ServeBatch      int     `json:"serve_batch"`
	ServeSeq        int     `json:"serve_seq"`
	ServeRSS        int64   `json:"serve_rss"` // RSS after the serving batches
	ServePeakRSS    int64   `json:"serve_peak_rss"`
	// With --ort-model: ONNX Runtime's process (ort_start.mjs), run just
	// before predict's, on the same number of tokens.
	OrtVersion   string  `json:"ort_version,omitempty"`
	OrtSeq       int     `json:"ort_seq,omitempty"`
	OrtMs        float64 `json:"ort_ms,omitempty"`         // start to exit, from outside
	OrtSessionMs float64 `json:"ort_session_ms,omitempty"` // start to session created, its own clock
	OrtFirstMs   float64 `json:"ort_first_answer_ms,omitempty"`
	OrtRSS       int64   `json:"ort_peak_rss,omitempty"`
	PredictVsOrt float64 `json:"predict_vs_ort,omitempty"` // predict_ms / ort_ms
}

// ortPeer is ONNX Runtime's side of --load: an ONNX export of the model's
// shape and the node script that starts a session on it.
type ortPeer struct{ model, script string }

// ortReport is what ort_start.mjs prints.
type ortReport struct {
	Version       string  `json:"ort_version"`
	SessionMs     float64 `json:"session_ms"`
	FirstAnswerMs float64 `json:"first_answer_ms"`
}

// predictText is the sentence `predict` answers in every run.
const predictText = "one sentence"

// predictTokens is how many tokens predictText makes with dir's
// tokenizer, [CLS] and [SEP] included: the length ONNX Runtime is given.
func predictTokens(dir string) (int, error) {
	tok, err := tokenize.Load(dir)
	if err != nil {
		return 0, err
	}
	toks, _ := tok.Tokenize(predictText)
	return len(toks) + 2, nil
}

// runLoadBench measures start-up: for a model directory (or one of a
// preset's shape with random weights written to a temporary directory),
// each run starts fresh processes of this binary: `predict` of one
// sentence, `inspect`, and a serving child that loads, answers one request
// and then serves batches of batch x seq tokens.
func runLoadBench(dir, preset, ckDType, save string, runs, threads, batch, seq int, tuning string, ort ortPeer, asJSON bool, stdout, stderr io.Writer) error {
	if dir == "" {
		dt, err := nn.ParseDType(ckDType)
		if err != nil {
			return fmt.Errorf("--checkpoint-dtype: %w", err)
		}
		dir = save
		if dir == "" {
			tmp, err := os.MkdirTemp("", "bertstream-load-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			dir = tmp
		}
		fmt.Fprintf(stderr, "writing a random %s model (%s) to %s\n", preset, dt, dir)
		if err := writeRandomModel(dir, preset, dt, 1); err != nil {
			return fmt.Errorf("random model: %w", err)
		}
	}
	ck, _, err := loader.FindWeights(dir)
	if err != nil {
		return err
	}
	st, err := os.Stat(ck)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	th := strconv.Itoa(threads)
	// The first read of the checkpoint fills the page cache; the runs
	// measure a warm cache, as a replica on a node that already ran one.
	if err := warmCache(ck); err != nil {
		return err
	}
	ortSeq := 0
	if ort.model != "" {
		if ortSeq, err = predictTokens(dir); err != nil {
			return fmt.Errorf("--ort-model: tokens of %q: %w", predictText, err)
		}
		if err := warmCache(ort.model); err != nil {
			return err
		}
	}
	enc := json.NewEncoder(stdout)
	if !asJSON {
		fmt.Fprintf(stdout, "%s: %s, %.1f MB, %s threads\n", dir, filepath.Base(ck), float64(st.Size())/1e6, th)
		fmt.Fprintln(stdout, "run  predict s (CPU s)  peak RSS MB (x file)  inspect s  RSS MB  load s  first answer s  serve RSS MB (peak)")
	}
	// The children run the blocking this command was told; without
	// --tuning they find the same one it would.
	var tuningArgs []string
	if tuning != "" {
		tuningArgs = []string{"--tuning", tuning}
	}
	for run := 1; run <= runs; run++ {
		r := loadResult{Model: dir, Checkpoint: ck, CheckpointBytes: st.Size(), Threads: threads, Run: run, ServeBatch: batch, ServeSeq: seq}
		var out bytes.Buffer
		if ort.model != "" {
			ps, err := timeProcess(exec.Command("node", ort.script, "--model", ort.model, "--seq", strconv.Itoa(ortSeq), "--threads", th), &out, nil)
			if err != nil {
				return fmt.Errorf("ONNX Runtime (%s): %w", ort.script, err)
			}
			var o ortReport
			if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &o); err != nil {
				return fmt.Errorf("ONNX Runtime (%s): %q: %w", ort.script, out.String(), err)
			}
			r.OrtVersion, r.OrtSeq, r.OrtMs, r.OrtRSS = o.Version, ortSeq, ms(ps.wall), ps.rss
			r.OrtSessionMs, r.OrtFirstMs = o.SessionMs, o.FirstAnswerMs
			out.Reset()
		}
		ps, err := timeProcess(exec.Command(self, append(append([]string{"predict", "--model", dir, "--task", "classify", "--threads", th}, tuningArgs...), predictText)...), &out, nil)
		if err != nil {
			return fmt.Errorf("predict: %w", err)
		}
		r.PredictMs, r.PredictCPUMs, r.PredictRSS = ms(ps.wall), ms(ps.cpu), ps.rss
		r.PredictRatio = float64(ps.rss) / float64(st.Size())
		if r.OrtMs > 0 {
			r.PredictVsOrt = r.PredictMs / r.OrtMs
		}
		out.Reset()
		if ps, err = timeProcess(exec.Command(self, "inspect", "--model", dir), &out, nil); err != nil {
			return fmt.Errorf("inspect: %w", err)
		}
		r.InspectMs, r.InspectRSS = ms(ps.wall), ps.rss
		out.Reset()
		var first time.Duration
		_, err = timeProcess(exec.Command(self, append([]string{"bench", "--load-child", dir, "--threads", th,
			"--batch", strconv.Itoa(batch), "--seq", strconv.Itoa(seq)}, tuningArgs...)...), &out, func(line string, at time.Duration) {
			if strings.Contains(line, `"first_answer"`) {
				first = at
			}
		})
		if err != nil {
			return fmt.Errorf("serving child: %w", err)
		}
		var c childReport
		for _, l := range strings.Split(out.String(), "\n") {
			if strings.HasPrefix(l, "{") {
				if err := json.Unmarshal([]byte(l), &c); err != nil {
					return fmt.Errorf("serving child: %q: %w", l, err)
				}
			}
		}
		r.LoadMs, r.FirstAnswerMs = c.LoadMs, ms(first)
		r.ServeRSS, r.ServePeakRSS = c.RSS, c.PeakRSS
		if asJSON {
			if err := enc.Encode(r); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintf(stdout, "%3d  %9.2f (%5.2f)  %11.0f (%.2fx)  %9.2f  %6.0f  %6.2f  %14.2f  %5.0f (%.0f)\n", run, r.PredictMs/1e3, r.PredictCPUMs/1e3,
			mb(r.PredictRSS), r.PredictRatio, r.InspectMs/1e3, mb(r.InspectRSS), r.LoadMs/1e3, r.FirstAnswerMs/1e3, mb(r.ServeRSS), mb(r.ServePeakRSS))
		if r.OrtMs > 0 {
			fmt.Fprintf(stdout, "     ONNX Runtime %s, %d tokens: %.2f s (session %.2f s, answer %.2f s), peak RSS %.0f MB; predict/ORT %.2fx\n",
				r.OrtVersion, r.OrtSeq, r.OrtMs/1e3, r.OrtSessionMs/1e3, r.OrtFirstMs/1e3, mb(r.OrtRSS), r.PredictVsOrt)
		}
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }
func mb(b int64) float64         { return float64(b) / 1e6 }

// warmCache reads path once so that its pages are in the page cache.
func warmCache(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}

// timeProcess runs cmd with its stdout and stderr into out, calling line
// (when not nil) with each stdout line and the time since the start, and
// returns the wall time and the peak RSS the kernel accounted to it.
func timeProcess(cmd *exec.Cmd, out *bytes.Buffer, line func(string, time.Duration)) (procStats, error) {
	pr, pw := io.Pipe()
	var errOut bytes.Buffer
	cmd.Stdout = pw
	cmd.Stderr = &errOut
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return procStats{}, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if line != nil {
				line(sc.Text(), time.Since(start))
			}
			out.WriteString(sc.Text() + "\n")
		}
	}()
	err := cmd.Wait()
	wall := time.Since(start)
	pw.Close()
	<-done
	if err != nil {
		return procStats{}, fmt.Errorf("%w: %s", err, errOut.Bytes())
	}
	ps := procStats{wall: wall, cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		ps.rss = ru.Maxrss * 1024 // Linux reports KiB
	}
	return ps, nil
}

// procStats is how a finished process was seen from outside.
type procStats struct {
	wall, cpu time.Duration
	rss       int64 // peak resident set, bytes
}

// childReport is what the serving child prints, one JSON object per line.
type childReport struct {
	Event   string  `json:"event"`
	LoadMs  float64 `json:"load_ms,omitempty"`
	RSS     int64   `json:"rss,omitempty"`
	PeakRSS int64   `json:"peak_rss,omitempty"`
}

// runLoadChild is the serving child of runLoadBench: it loads dir, starts
// packing the weights in the background as serve does, answers one
// classify request (printing a line the parent times), then serves
// three batches of batch sequences of seq tokens, as `serve` would hand
// them to the predictor, and prints the process's RSS and peak RSS.
func runLoadChild(dir string, be nn.Backend, batch, seq int, stdout io.Writer) error {
	enc := json.NewEncoder(stdout)
	start := time.Now()
	p, err := loader.LoadPredictor(dir, loader.Options{Backend: be}, bert.PredictorOptions{Truncate: true})
	if err != nil {
		return err
	}
	defer p.Model.Close()
	load := time.Since(start)
	// As serve does: the weights are packed in the background.
	go p.Model.Prepack()
	res := p.Predict(context.Background(), []task.Request{{Task: task.Classify, Text: predictText}})
	if res[0].Err != nil {
		return res[0].Err
	}
	if err := enc.Encode(childReport{Event: "first_answer", LoadMs: ms(load)}); err != nil {
		return err
	}
	// seq-2 one-token words, [CLS] and [SEP]: seq tokens.
	text := strings.TrimSpace(strings.Repeat("a ", max(seq-2, 1)))
	reqs := make([]task.Request, batch)
	for i := range reqs {
		reqs[i] = task.Request{Task: task.Classify, Text: text}
	}
	for i := 0; i < 3; i++ {
		for _, r := range p.Predict(context.Background(), reqs) {
			if r.Err != nil {
				return r.Err
			}
		}
	}
	rss, peak, err := procRSS()
	if err != nil {
		return err
	}
	return enc.Encode(childReport{Event: "steady", LoadMs: ms(load), RSS: rss, PeakRSS: peak})
}

// procRSS reads the process's resident set and its high-water mark.
func procRSS() (rss, peak int64, err error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0, fmt.Errorf("RSS: %w", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v * 1024
		case "VmHWM:":
			peak = v * 1024
		}
	}
	return rss, peak, nil
}
