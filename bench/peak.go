package bench

import (
	"errors"
	"sync"
	"time"
)

// Peak is the float32 FMA throughput measured on this machine (or the
// INT8 dot-product throughput, MeasurePeakInt8: operations, a multiply-add
// counting two, per second).
type Peak struct {
	ISA     string  `json:"isa"`
	Threads int     `json:"threads"`
	GFLOPS  float64 `json:"gflops"`
}

// MeasurePeak runs the FMA loop on threads goroutines for about d and
// reports the best rate of five rounds, so that a burst of other load on
// a shared machine lowers it less.
func MeasurePeak(threads int, d time.Duration) (Peak, error) {
	isa, loop, perIter := fmaProbe()
	if loop == nil {
		return Peak{}, errors.New("no FMA probe for this CPU (needs AVX2+FMA or AVX-512 and a build without noasm)")
	}
	return measure(isa, loop, perIter, threads, d), nil
}

// MeasurePeakInt8 is MeasurePeak for the INT8 dot products of the INT8
// linear layers (VPDPBUSD, or VPMADDWD on AVX2 without VNNI): the ceiling
// of their GOP/s.
func MeasurePeakInt8(threads int, d time.Duration) (Peak, error) {
	isa, loop, perIter := vnniProbe()
	if loop == nil {
		return Peak{}, errors.New("no INT8 dot-product probe for this CPU (needs AVX2 and a build without noasm)")
	}
	return measure(isa, loop, perIter, threads, d), nil
}

// MeasurePeakBF16 is MeasurePeak for the BF16 dot products of the BF16
// linear layers (VDPBF16PS): the ceiling of their GFLOP/s, twice the FMA
// peak where the instruction runs at the FMA's rate.
func MeasurePeakBF16(threads int, d time.Duration) (Peak, error) {
	isa, loop, perIter := bf16Probe()
	if loop == nil {
		return Peak{}, errors.New("no BF16 dot-product probe for this CPU (needs AVX512_BF16 and a build without noasm)")
	}
	return measure(isa, loop, perIter, threads, d), nil
}

func measure(isa string, loop func(n int), perIter float64, threads int, d time.Duration) Peak {
	const iters = 1 << 20
	best := 0.0
	for round := 0; round < 5; round++ {
		var wg sync.WaitGroup
		var mu sync.Mutex
		total := 0.0
		start := time.Now()
		for t := 0; t < threads; t++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n := 0
				for time.Since(start) < d/5 {
					loop(iters)
					n++
				}
				mu.Lock()
				total += float64(n) * iters * perIter
				mu.Unlock()
			}()
		}
		wg.Wait()
		if r := total / time.Since(start).Seconds() / 1e9; r > best {
			best = r
		}
	}
	return Peak{ISA: isa, Threads: threads, GFLOPS: best}
}
