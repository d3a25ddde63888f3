package fluentbit

import (
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/metership/metership/buffer"
	"github.com/metership/metership/engine"
	fb "github.com/metership/metership/fluentbit/fbtest"
)

// A flush whose fsync fails is answered FLB_RETRY (nothing of it is
// acknowledged); the buffer recovers in place, so the chunk sent again is
// accepted, and every record reaches the output exactly once. Before, one
// failed fsync made every later flush FLB_RETRY until Fluent Bit
// restarted.
func TestFlushRetriedAfterFsyncError(t *testing.T) {
	out := testOutput{Root: t.TempDir()}
	var failSyncs atomic.Int32
	faults := func(op buffer.FileOp, path string) error {
		if op == buffer.OpSync && strings.HasSuffix(path, ".open") && failSyncs.Add(-1) >= 0 {
			return syscall.EIO
		}
		return nil
	}
	x, err := newInstance(props(baseProps(t, out, nil)), testLogger(t), engine.Options{BufferFaults: faults})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.Exit() })

	if rc := x.Flush(fb.MeterChunk(0, 100), "usage"); rc != FLBOK {
		t.Fatalf("first flush = %d, want FLBOK", rc)
	}
	second := fb.MeterChunk(100, 100)
	failSyncs.Store(1)
	if rc := x.Flush(second, "usage"); rc != FLBRetry {
		t.Fatalf("flush whose fsync failed = %d, want FLBRetry", rc)
	}
	if ok, why := x.Pipeline().Ready(); ok || !strings.Contains(why, "input/output error") {
		t.Fatalf("Ready = %v %q after a failed fsync; want false, naming the error", ok, why)
	}
	if ok, _ := x.Pipeline().Healthy(); !ok {
		t.Fatal("Healthy = false; the buffer recovered in place")
	}
	if rc := x.Flush(second, "usage"); rc != FLBOK {
		t.Fatalf("chunk sent again = %d, want FLBOK", rc)
	}
	if ok, why := x.Pipeline().Ready(); !ok {
		t.Fatalf("Ready = false (%s) after a flush succeeded", why)
	}
	if rc := x.Exit(); rc != FLBOK {
		t.Fatalf("Exit = %d", rc)
	}
	fb.AssertCustomers(t, fb.ParseRecords(t, fb.ReadDir(t, out.Root)), 0, 200)
}

// When the disk cannot be recovered from in place (the recovery's own
// fsync fails), flushes are FLB_RETRY and Healthy says a restart is
// needed; the records acknowledged before are in the buffer for it.
func TestFlushRetryWhenBufferFailed(t *testing.T) {
	out := testOutput{Root: t.TempDir()}
	var failing atomic.Bool
	faults := func(op buffer.FileOp, path string) error {
		if op == buffer.OpSync && failing.Load() {
			return syscall.EIO
		}
		return nil
	}
	m := baseProps(t, out, nil)
	x, err := newInstance(props(m), testLogger(t), engine.Options{BufferFaults: faults})
	if err != nil {
		t.Fatal(err)
	}
	if rc := x.Flush(fb.MeterChunk(0, 50), "usage"); rc != FLBOK {
		t.Fatalf("flush = %d, want FLBOK", rc)
	}
	failing.Store(true)
	for range 2 {
		if rc := x.Flush(fb.MeterChunk(50, 50), "usage"); rc != FLBRetry {
			t.Fatalf("flush on a failed disk = %d, want FLBRetry", rc)
		}
	}
	if ok, why := x.Pipeline().Healthy(); ok || !strings.Contains(why, "restart") {
		t.Fatalf("Healthy = %v %q, want false asking for a restart", ok, why)
	}
	x.Exit()

	// Fluent Bit restarts: the first chunk was kept, the second is
	// accepted now.
	x = startInstance(t, m)
	if rc := x.Flush(fb.MeterChunk(50, 50), "usage"); rc != FLBOK {
		t.Fatalf("flush after restart = %d, want FLBOK", rc)
	}
	x.Exit()
	fb.AssertCustomers(t, fb.ParseRecords(t, fb.ReadDir(t, out.Root)), 0, 100)
}
