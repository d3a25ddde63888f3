package fluentbit

import (
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/metership/metership/fluentbit/fbtest"
	"github.com/metership/metership/metering/emulator"
)

// TestExitWhileThrottledIsBounded: every call is answered
// ThrottlingException. Exit returns within agent_shutdown_timeout (and
// the SDK's last call), leaving the hour in progress pending in the
// ledger; the next instance on the same buffer_dir reports it once
// Marketplace answers.
func TestExitWhileThrottledIsBounded(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "fluent")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "bit")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	emu := emulator.New(emulator.DefaultConfig())
	hs := httptest.NewServer(emu)
	defer hs.Close()
	emu.InjectFaults(emulator.Faults{Throttle: 1 << 30})
	now := time.Now().UTC()
	if left := now.Truncate(time.Hour).Add(time.Hour).Sub(now); left < time.Minute {
		time.Sleep(left + time.Second)
		now = time.Now().UTC()
	}
	out := testOutput{Root: t.TempDir()}
	p := baseProps(t, out, map[string]string{
		"metering_mode":          "meter_usage",
		"metering_product_code":  emulator.DemoProductCode,
		"metering_endpoint":      hs.URL,
		"metering_dimensions":    "api-calls=api_calls",
		"agent_shutdown_timeout": "2s",
		"buffer_dir":             filepath.Join(t.TempDir(), "buffer"),
	})
	x, err := NewInstance(props(p), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	c := &fbtest.Chunk{}
	for i := range 4 {
		ts := now.Add(-time.Duration(i+1) * time.Second)
		c.V2(fbtest.TimeOf(ts), fbtest.Map{}, fbtest.MeterRecord(fbtest.CustomerName(i), "api-calls", 5, ts.UnixMilli(), nil))
	}
	if rc := x.Flush(c.Bytes(), "usage.app"); rc != FLBOK {
		t.Fatalf("flush = %d", rc)
	}
	start := time.Now()
	if rc := x.Exit(); rc != FLBOK {
		t.Fatalf("exit = %d", rc)
	}
	// 2s of shutdown timeout plus slack for a loaded machine; a throttled
	// pass may otherwise retry for 30 minutes.
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("Exit took %s with agent_shutdown_timeout 2s", took)
	}
	if n := len(emu.State().Records); n != 0 {
		t.Fatalf("%d records accepted while throttled", n)
	}

	emu.InjectFaults(emulator.Faults{})
	x, err = NewInstance(props(p), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if rc := x.Exit(); rc != FLBOK {
		t.Fatalf("exit = %d", rc)
	}
	st := emu.State()
	if len(st.Records) != 1 || len(st.Conflicts) != 0 {
		t.Fatalf("emulator holds %+v (conflicts %v), want the hour left pending", st.Records, st.Conflicts)
	}
	if r := st.Records[0]; !r.Hour.Equal(now.Truncate(time.Hour)) || r.Quantity != 20 {
		t.Fatalf("record %+v, want 20 units in %s", r, now.Truncate(time.Hour))
	}
}
