// Package kernels holds the CPU compute kernels of bertstream: a plain Go
// reference for every kernel (the *Ref functions, written for clarity and
// used as ground truth by the tests of every faster version and of every
// backend) and the fast versions. It imports nothing of bertstream's own,
// so that every backend can share it.
//
// One file per op, its plain reference next to its fast versions, and a
// _test.go of the same name with the op's tests (every version against
// the reference, on odd shapes) and Benchmark* functions:
//
//	linear.go     LinearRef; Weight, Engine.PrepareWeight(BF16), PrepareWeightRows,
//	              DeferWeight (packed on first use), Engine.Linear
//	gemm.go       GemmRef; the blocked SGEMM, packing, the Go micro-kernel,
//	              Implementation (a blas.Float32); gemm_amd64.{go,s} the
//	              AVX2 and AVX-512 micro-kernels; gemm_bf16.go and
//	              gemm_bf16_amd64.s the BF16 ones; gemm_int8.go
//	              LinearInt8Ref, QuantizeRowsRef, Engine.PrepareWeightInt8,
//	              the INT8 path (per-channel weights, per-token
//	              activations, int32 sums) and its Go kernel,
//	              gemm_int8_amd64.{go,s} the AVX512-VNNI, AVX-VNNI
//	              and AVX2 (VPMADDWD) ones
//	layernorm.go  LayerNormRef, Engine.LayerNorm (residual add fused)
//	embed.go      EmbedLayerNormRef, CheckEmbedIndexes, Engine.EmbedLayerNorm
//	attention.go  AttentionRef, Engine.Attention, its row softmax
//	gelu.go       Act, GELURef, GELUTanhRef, BiasActRef, the float32
//	              exp/erfc/tanh/GELU, Engine.BiasAct
//	pool.go       Pooling, PoolRef, Engine.Pool
//
// Shared pieces: vec.go and vec_amd64.{go,s}, the vector primitives
// (max, exp-sum, add, GELU, the LayerNorm sums) that several ops use;
// parallel.go, the helper goroutines that run the tasks of a call;
// convert.go, the F16 and BF16 conversions; seqs.go, the packed-sequence
// offsets.
//
// version.go is the only place a version is chosen: a Config (kernel
// version, BF16 kernel, INT8 kernel, goroutines per call, BLAS) resolves
// to an Engine, whose methods are the fast ops. Nothing in the package is configured
// process-wide, so engines of different configurations run side by side.
//
// Layout conventions: matrices are row-major; a "rows x cols" activation
// is a []float32 of rows*cols elements. Weights of linear layers keep the
// PyTorch layout [out, in].
package kernels
