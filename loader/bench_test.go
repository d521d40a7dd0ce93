package loader_test

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/loader"
	"github.com/bertstream/bertstream/loader/loadertest"
	"github.com/bertstream/bertstream/nn"
)

// BenchmarkForward times a whole forward pass (encoder and the heads the
// model has) on the CPU backend: the bert-tiny fixture on its reference
// batch, and the base preset with random weights at serving shapes.
// Reports sequences per second besides ns/op.
func BenchmarkForward(b *testing.B) {
	b.Run("tiny/B8-T15", func(b *testing.B) {
		ref, err := loadertest.ReadReference("../testdata/bert-tiny")
		if err != nil {
			b.Fatal(err)
		}
		m, err := loader.Load("../testdata/bert-tiny/bert-pretraining", loader.Options{Backend: nn.CPU{}})
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		runForward(b, m.Model, ref.Inputs, m.WantAll())
	})
	cfg, err := bert.Preset("base")
	if err != nil {
		b.Fatal(err)
	}
	m, err := bert.NewRandom(cfg, nn.CPU{}, 1)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	for _, shape := range [][2]int{{1, 128}, {8, 128}} {
		b.Run(fmt.Sprintf("base/B%d-T%d", shape[0], shape[1]), func(b *testing.B) {
			runForward(b, m, fullInputs(cfg, shape[0], shape[1]), bert.Want{Pooled: true})
		})
	}
}

func runForward(b *testing.B, m *bert.Model, in bert.Inputs, want bert.Want) {
	b.ReportAllocs()
	for b.Loop() {
		s := nn.NewScope("bench")
		if _, err := m.Forward(s, in, want); err != nil {
			b.Fatal(err)
		}
		if err := m.Backend().Sync(); err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
	b.ReportMetric(float64(in.B*b.N)/b.Elapsed().Seconds(), "seq/s")
}

// fullInputs is a batch of random ids with no padding.
func fullInputs(cfg bert.Config, B, T int) bert.Inputs {
	r := rand.New(rand.NewSource(int64(B*1000 + T)))
	in := bert.Inputs{B: B, T: T, IDs: make([]int32, B*T), Mask: make([]int32, B*T)}
	for i := range in.IDs {
		in.IDs[i] = int32(r.Intn(cfg.VocabSize))
		in.Mask[i] = 1
	}
	return in
}
