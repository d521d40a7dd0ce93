package kernels

import "testing"

func TestNew(t *testing.T) {
	t.Logf("kernel versions on this CPU: %v; BF16: %v", Versions(), BF16Versions())
	c := Default().Config()
	if c.Version != Versions()[0] || c.BF16Version != BF16Versions()[0] || c.BLAS != BLASNative || c.Threads != 0 {
		t.Errorf("the zero Config resolved to %+v, want the fastest versions and the native BLAS", c)
	}
	e := engine(t, Config{Version: "go", BF16Version: "go-bf16", Threads: 3, BLAS: BLASGonum})
	if c := e.Config(); c.Version != "go" || c.BF16Version != "go-bf16" || c.BLAS != BLASGonum || e.Threads() != 3 {
		t.Errorf("configuration %+v, %d threads", c, e.Threads())
	}
	for _, bad := range []Config{{Version: "sse1"}, {BF16Version: "fp8"}, {BLAS: "mkl"}} {
		if _, err := New(bad); err == nil {
			t.Errorf("New accepted %+v", bad)
		}
	}
}
