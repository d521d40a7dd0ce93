package main

import (
	"net/http"
	"net/http/pprof"
	"runtime"
)

// Sampling of the blocking and contention profiles that serve --pprof
// turns on: one blocking event per 10µs spent blocked, one contended
// mutex in 10. Both cost time on every channel operation and lock while
// on, which is why they are off without --pprof.
const (
	blockProfileRate     = 10_000
	mutexProfileFraction = 10
)

// withProfiles adds Go's profiles under /debug/pprof/ to the operations
// endpoints h, and turns on the blocking and mutex profiles, which are
// empty otherwise.
func withProfiles(h http.Handler) http.Handler {
	runtime.SetBlockProfileRate(blockProfileRate)
	runtime.SetMutexProfileFraction(mutexProfileFraction)
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}
