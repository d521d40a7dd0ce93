package main

// The CUDA backend registers itself as "cuda" (--device cuda). Without
// the cuda build tag the package is a stub whose backend says how to
// build it.
import _ "github.com/bertstream/bertstream/cuda"
