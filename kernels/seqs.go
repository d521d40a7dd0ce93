package kernels

// SeqOffsets lays sequences of the given lengths end to end, as the packed
// kernels (attention, pooling) take them: sequence b is rows offsets[b] to
// offsets[b+1]. Tests of every backend and kernel build their batches with
// it.
func SeqOffsets(lengths ...int) []int32 {
	seqs := make([]int32, 1, len(lengths)+1)
	for _, l := range lengths {
		seqs = append(seqs, seqs[len(seqs)-1]+int32(l))
	}
	return seqs
}
