//go:build !amd64 || noasm

package bench

// Without assembly there is no FMA loop to time; Peak reports that.
func fmaProbe() (name string, loop func(n int), flopsPerIter float64) {
	return "", nil, 0
}

func vnniProbe() (name string, loop func(n int), opsPerIter float64) {
	return "", nil, 0
}

func bf16Probe() (name string, loop func(n int), flopsPerIter float64) {
	return "", nil, 0
}
