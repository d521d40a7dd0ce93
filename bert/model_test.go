package bert_test

import (
	"math"
	"math/rand"
	"runtime"
	"strings"
	"testing"

	"github.com/bertstream/bertstream/bert"
	"github.com/bertstream/bertstream/nn"
)

// smallConfig is deliberately unlike the bert-tiny fixture (odd head
// count, head dim 6, 3 layers) so that nothing tuned to it passes by luck.
func smallConfig(arch string) bert.Config {
	return bert.Config{
		ModelType: "bert", Architectures: []string{arch},
		VocabSize: 97, HiddenSize: 18, NumHiddenLayers: 3, NumAttentionHeads: 3,
		IntermediateSize: 40, HiddenAct: "gelu", MaxPositionEmbeddings: 24,
		TypeVocabSize: 2, LayerNormEps: 1e-12, PositionEmbeddingType: "absolute",
		NumLabels: 5,
	}
}

func randomInputs(cfg bert.Config, B, T int, seed int64) bert.Inputs {
	r := rand.New(rand.NewSource(seed))
	in := bert.Inputs{B: B, T: T, IDs: make([]int32, B*T), TypeIDs: make([]int32, B*T), Mask: make([]int32, B*T)}
	for b := 0; b < B; b++ {
		n := 1 + r.Intn(T) // every row has at least its first token
		if b == 0 {
			n = T
		}
		for t := 0; t < T; t++ {
			i := b*T + t
			if t < n {
				in.IDs[i] = int32(r.Intn(cfg.VocabSize))
				in.Mask[i] = 1
				if t > n/2 {
					in.TypeIDs[i] = 1
				}
			}
		}
	}
	return in
}

func newModel(t testing.TB, cfg bert.Config) *bert.Model {
	t.Helper()
	m, err := bert.NewRandom(cfg, nn.CPU{}, 11)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func TestNewRejectsBadTensors(t *testing.T) {
	cfg := smallConfig("BertForPreTraining")
	for _, tc := range []struct {
		name   string
		change func(s *nn.Scope, ts map[string]*nn.Tensor)
		want   []string
	}{
		{"missing", func(s *nn.Scope, ts map[string]*nn.Tensor) {
			delete(ts, "bert.encoder.layer.2.attention.self.key.bias")
		}, []string{"bert.encoder.layer.2.attention.self.key.bias", "missing"}},
		{"mis-shaped", func(s *nn.Scope, ts map[string]*nn.Tensor) {
			ts["bert.encoder.layer.1.intermediate.dense.weight"] = nn.NewHost(s, nn.F32, 41, 18)
		}, []string{"bert.encoder.layer.1.intermediate.dense.weight", "[41 18]", "[40 18]"}},
		{"extra layer", func(s *nn.Scope, ts map[string]*nn.Tensor) {
			ts["bert.encoder.layer.3.output.dense.bias"] = nn.NewHost(s, nn.F32, 18)
		}, []string{"bert.encoder.layer.3.output.dense.bias", "3-layer"}},
		{"missing head", func(s *nn.Scope, ts map[string]*nn.Tensor) {
			delete(ts, "cls.seq_relationship.weight")
			delete(ts, "cls.seq_relationship.bias")
		}, []string{"cls.seq_relationship.weight", "missing"}},
		{"nsp without pooler", func(s *nn.Scope, ts map[string]*nn.Tensor) {
			delete(ts, "bert.pooler.dense.weight")
			delete(ts, "bert.pooler.dense.bias")
		}, []string{"bert.pooler.dense.weight"}},
		{"wrong vocabulary", func(s *nn.Scope, ts map[string]*nn.Tensor) {
			ts["bert.embeddings.word_embeddings.weight"] = nn.NewHost(s, nn.F32, 96, 18)
		}, []string{"word_embeddings", "[96 18]", "[97 18]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := nn.NewScope("weights")
			defer s.Close()
			ts, err := bert.RandomTensors(s, cfg, 1)
			if err != nil {
				t.Fatal(err)
			}
			tc.change(s, ts)
			before := cpuLive()
			m, err := bert.New(cfg, nn.CPU{}, ts)
			if err == nil {
				m.Close()
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if after := cpuLive(); after != before {
				t.Errorf("a failed New left %d tensors behind", after-before)
			}
		})
	}
}

func cpuLive() int64 {
	for _, u := range nn.Usage() {
		if u.Device == "cpu" {
			return u.Tensors
		}
	}
	return 0
}

func TestArchitectureFromHeads(t *testing.T) {
	for _, arch := range []string{"BertModel", "BertForPreTraining", "BertForMaskedLM", "BertForNextSentencePrediction", "BertForSequenceClassification", "BertForTokenClassification"} {
		m := newModel(t, smallConfig(arch))
		if m.Arch != arch {
			t.Errorf("built %s, got %s", arch, m.Arch)
		}
	}
	s := nn.NewScope("weights")
	defer s.Close()
	cfg := smallConfig("BertForMaskedLM")
	ts, _ := bert.RandomTensors(s, cfg, 1)
	cfg.Architectures = nil
	m, err := bert.New(cfg, nn.CPU{}, ts)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Arch != "BertForMaskedLM" || !m.HasMLM() || m.HasNSP() {
		t.Errorf("without architectures: inferred %s", m.Arch)
	}
	cfg.Architectures = []string{"BertLMHeadModel"}
	if _, err := bert.New(cfg, nn.CPU{}, ts); err == nil || !strings.Contains(err.Error(), "BertLMHeadModel") {
		t.Errorf("unsupported architecture: %v", err)
	}
}

func TestValidateInputs(t *testing.T) {
	m := newModel(t, smallConfig("BertModel"))
	good := randomInputs(m.Config, 2, 5, 1)
	for _, tc := range []struct {
		name   string
		change func(in *bert.Inputs)
		want   string
	}{
		{"id", func(in *bert.Inputs) { in.IDs[7] = 97 }, "token id 97 at [1,2]"},
		{"negative id", func(in *bert.Inputs) { in.IDs[0] = -1 }, "token id -1"},
		{"type", func(in *bert.Inputs) { in.TypeIDs[3] = 2 }, "token type 2 at [0,3]"},
		{"mask", func(in *bert.Inputs) { in.Mask[1] = 2 }, "mask value 2"},
		{"too long", func(in *bert.Inputs) {
			*in = randomInputs(m.Config, 1, 25, 1)
		}, "exceeds the model's 24 positions"},
		{"short slices", func(in *bert.Inputs) { in.Mask = in.Mask[:3] }, "3 mask values"},
		{"empty", func(in *bert.Inputs) { *in = bert.Inputs{} }, "empty batch"},
		{"left padding", func(in *bert.Inputs) { in.Mask[5] = 0 }, "mask is 0 at [1,0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := good
			in.IDs = append([]int32(nil), good.IDs...)
			in.TypeIDs = append([]int32(nil), good.TypeIDs...)
			in.Mask = append([]int32(nil), good.Mask...)
			tc.change(&in)
			s := nn.NewScope("t")
			defer s.Close()
			_, err := m.Forward(s, in, bert.Want{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want it to say %q", err, tc.want)
			}
		})
	}
}

// TestForwardConsistency checks the outputs that no fixture holds
// (sentence pooling, the token classifier, MLM on chosen rows) against
// what they are defined from, and that a pass frees all it allocated.
func TestForwardConsistency(t *testing.T) {
	cfg := smallConfig("BertForTokenClassification")
	ts := nn.NewScope("weights")
	defer ts.Close()
	src, _ := bert.RandomTensors(ts, cfg, 3)
	// The same weights as a pre-training model with a token classifier
	// head too, so that every output comes from one encoder.
	pre := smallConfig("BertForPreTraining")
	extra, _ := bert.RandomTensors(ts, pre, 4)
	for k, v := range extra {
		if !strings.HasPrefix(k, "bert.encoder") && !strings.HasPrefix(k, "bert.embeddings") {
			src[k] = v
		}
	}
	m, err := bert.New(cfg, nn.CPU{}, src)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if !m.HasTokenClassifier() || !m.HasMLM() || m.HasClassifier() {
		t.Fatalf("heads: token %v mlm %v seq %v", m.HasTokenClassifier(), m.HasMLM(), m.HasClassifier())
	}
	in := randomInputs(cfg, 4, 11, 2)
	B, T, H, V, L := in.B, in.T, cfg.HiddenSize, cfg.VocabSize, len(m.Labels)

	before := cpuLive()
	s := nn.NewScope("forward")
	all, err := m.Forward(s, in, bert.Want{Hidden: true, MLM: true, TokenClassify: true, Pooled: true, NSP: true})
	if err != nil {
		t.Fatal(err)
	}
	seq := all.Sequence.F32()
	if d := nn.MaxAbsDiff(seq, all.Hidden[len(all.Hidden)-1].F32()); d != 0 {
		t.Errorf("Sequence differs from the last hidden state by %g", d)
	}
	// Without Hidden the layers reuse buffers; the result must not change.
	lean, err := m.Forward(s, in, bert.Want{})
	if err != nil {
		t.Fatal(err)
	}
	if d := nn.MaxAbsDiff(seq, lean.Sequence.F32()); d != 0 {
		t.Errorf("buffer reuse changed the last hidden state by %g", d)
	}

	// Token classifier: classifier.weight x h + bias at every token.
	w, bias := src["classifier.weight"].F32(), src["classifier.bias"].F32()
	got := all.TokenLogits.F32()
	worst := 0.0
	for i := 0; i < B*T; i++ {
		for l := 0; l < L; l++ {
			if in.Mask[i] == 0 {
				// Padding is not computed: its outputs are zeros.
				worst = math.Max(worst, math.Abs(float64(got[i*L+l])))
				continue
			}
			want := float64(bias[l])
			for k := 0; k < H; k++ {
				want += float64(w[l*H+k]) * float64(seq[i*H+k])
			}
			worst = math.Max(worst, math.Abs(want-float64(got[i*L+l])))
		}
	}
	if worst > 1e-5 {
		t.Errorf("token logits off by %g", worst)
	}

	// MLM on chosen rows equals the same rows of the full logits.
	var rows []int32
	for _, r := range []int32{0, 5, int32(B*T - 1), 12, 13, 30} {
		if in.Mask[r] == 1 {
			rows = append(rows, r)
		}
	}
	part, err := m.Forward(s, in, bert.Want{MLM: true, MLMRows: rows})
	if err != nil {
		t.Fatal(err)
	}
	full, sub := all.MLMLogits.F32(), part.MLMLogits.F32()
	for j, r := range rows {
		if d := nn.MaxAbsDiff(full[int(r)*V:int(r+1)*V], sub[j*V:(j+1)*V]); d > 1e-6 {
			t.Errorf("MLM row %d differs by %g", r, d)
		}
	}
	if _, err := m.Forward(s, in, bert.Want{MLM: true, MLMRows: []int32{int32(B * T)}}); err == nil {
		t.Error("MLM row outside the batch accepted")
	}
	for r, v := range in.Mask {
		if v == 0 {
			if _, err := m.Forward(s, in, bert.Want{MLM: true, MLMRows: []int32{int32(r)}}); err == nil || !strings.Contains(err.Error(), "padding") {
				t.Errorf("MLM row %d at padding: %v", r, err)
			}
			break
		}
	}

	// Sentence pooling over the mask.
	for _, p := range []struct {
		kind nn.Pooling
		want func(b, k int) float64
	}{
		{nn.PoolCLS, func(b, k int) float64 { return float64(seq[b*T*H+k]) }},
		{nn.PoolMean, func(b, k int) float64 {
			var sum, n float64
			for t := 0; t < T; t++ {
				if in.Mask[b*T+t] == 1 {
					sum += float64(seq[(b*T+t)*H+k])
					n++
				}
			}
			return sum / n
		}},
		{nn.PoolMax, func(b, k int) float64 {
			best := math.Inf(-1)
			for t := 0; t < T; t++ {
				if in.Mask[b*T+t] == 1 {
					best = math.Max(best, float64(seq[(b*T+t)*H+k]))
				}
			}
			return best
		}},
	} {
		out, err := m.Forward(s, in, bert.Want{Sentence: true, SentencePooling: p.kind})
		if err != nil {
			t.Fatal(err)
		}
		v := out.Sentence.F32()
		for b := 0; b < B; b++ {
			for k := 0; k < H; k++ {
				if d := math.Abs(p.want(b, k) - float64(v[b*H+k])); d > 1e-5 {
					t.Fatalf("pooling %v: [%d,%d] off by %g", p.kind, b, k, d)
				}
			}
		}
	}
	if _, err := m.Forward(s, in, bert.Want{Classify: true}); err == nil {
		t.Error("sequence classification accepted without a sequence classifier")
	}
	s.Close()
	if after := cpuLive(); after != before {
		t.Errorf("forward passes left %d live tensors after their scope closed", after-before)
	}
}

// TestPaddingInvariance runs sequences of mixed lengths in one padded
// batch and each on its own: what a sequence gets must not depend on what
// it was batched with or how much padding that took.
func TestPaddingInvariance(t *testing.T) {
	cfg := smallConfig("BertForPreTraining")
	m := newModel(t, cfg)
	in := randomInputs(cfg, 5, 19, 8)
	s := nn.NewScope("t")
	defer s.Close()
	all, err := m.Forward(s, in, m.WantAll())
	if err != nil {
		t.Fatal(err)
	}
	H, V := cfg.HiddenSize, cfg.VocabSize
	for b := 0; b < in.B; b++ {
		n := 0
		for n < in.T && in.Mask[b*in.T+n] == 1 {
			n++
		}
		one := bert.Inputs{B: 1, T: n, IDs: in.IDs[b*in.T : b*in.T+n], TypeIDs: in.TypeIDs[b*in.T : b*in.T+n], Mask: in.Mask[b*in.T : b*in.T+n]}
		alone, err := m.Forward(s, one, m.WantAll())
		if err != nil {
			t.Fatal(err)
		}
		seq := all.Sequence.F32()[b*in.T*H:]
		if d := nn.MaxAbsDiff(seq[:n*H], alone.Sequence.F32()); d > 1e-5 {
			t.Errorf("sequence %d (%d tokens): hidden states differ by %g batched and alone", b, n, d)
		}
		for _, x := range seq[n*H : in.T*H] {
			if x != 0 {
				t.Fatalf("sequence %d: non-zero hidden state at padding", b)
			}
		}
		if d := nn.MaxAbsDiff(all.MLMLogits.F32()[b*in.T*V:(b*in.T+n)*V], alone.MLMLogits.F32()); d > 1e-4 {
			t.Errorf("sequence %d: MLM logits differ by %g", b, d)
		}
		if d := nn.MaxAbsDiff(all.NSPLogits.F32()[2*b:2*b+2], alone.NSPLogits.F32()); d > 1e-5 {
			t.Errorf("sequence %d: NSP logits differ by %g", b, d)
		}
	}
}

// TestForwardSteadyState checks that repeated forward passes take their
// tensor memory from the host pool: what the Go heap still allocates per
// pass is bookkeeping (tensor headers, scopes, index slices), a fixed
// number of small objects whatever the batch shape.
func TestForwardSteadyState(t *testing.T) {
	if raceDetector {
		t.Skip("under -race sync.Pool drops items at random: allocation counts mean nothing")
	}
	cfg := smallConfig("BertForPreTraining")
	m := newModel(t, cfg)
	var counts []float64
	for _, sh := range [][2]int{{2, 8}, {8, 20}} {
		in := randomInputs(cfg, sh[0], sh[1], 1)
		run := func() {
			s := nn.NewScope("forward")
			if _, err := m.Forward(s, in, bert.Want{Pooled: true, NSP: true}); err != nil {
				t.Fatal(err)
			}
			s.Close()
		}
		run()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		counts = append(counts, testing.AllocsPerRun(20, run))
		runtime.ReadMemStats(&after)
		// 21 passes, each with 96 KB of activations or more at B=8.
		if perPass := (after.TotalAlloc - before.TotalAlloc) / 21; perPass > 24<<10 {
			t.Errorf("B=%d T=%d: %d bytes allocated per forward pass", sh[0], sh[1], perPass)
		}
	}
	if counts[0] != counts[1] {
		t.Errorf("allocations per pass grow with the batch: %v", counts)
	}
}

// TestPrepack: packing every weight in the background while forward
// passes run (as serve does once loaded) changes no result, and Close
// while it runs waits for it rather than freeing weights under it.
func TestPrepack(t *testing.T) {
	cfg := smallConfig("BertForPreTraining")
	in := randomInputs(cfg, 1, 5, 3)
	want := func(m *bert.Model) []float32 {
		s := nn.NewScope("want")
		defer s.Close()
		out, err := m.Forward(s, in, bert.Want{Pooled: true, MLM: true, NSP: true})
		if err != nil {
			t.Fatal(err)
		}
		return append(append(append([]float32(nil), out.Sequence.F32()...), out.MLMLogits.F32()...), out.NSPLogits.F32()...)
	}
	ref := want(newModel(t, cfg))
	m := newModel(t, cfg)
	done := make(chan error)
	go func() { done <- m.Prepack() }()
	for i := 0; i < 3; i++ {
		if d := nn.MaxAbsDiff(want(m), ref); d > 1e-5 {
			t.Errorf("pass %d while packing: differs by %g", i, d)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d := nn.MaxAbsDiff(want(m), ref); d > 1e-5 {
		t.Errorf("after packing: differs by %g", d)
	}
	m2, err := bert.NewRandom(cfg, nn.CPU{}, 11)
	if err != nil {
		t.Fatal(err)
	}
	go m2.Prepack()
	m2.Close()
}
