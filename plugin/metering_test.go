package main

import (
	"net/http/httptest"
	"testing"
	"time"

	fb "github.com/metership/metership/fluentbit/fbtest"
	"github.com/metership/metership/metering/emulator"
)

// TestHarnessExitReportsHourInProgress: a Fluent Bit that stops (Exit)
// reports the metering hour in progress, as a stopping pod must: its
// ledger may not survive it. Exactly one MeterUsage for the hour and
// dimension, with the whole quantity.
func TestHarnessExitReportsHourInProgress(t *testing.T) {
	emu := emulator.New(emulator.DefaultConfig())
	hs := httptest.NewServer(emu)
	defer hs.Close()
	now := time.Now().UTC()
	if left := now.Truncate(time.Hour).Add(time.Hour).Sub(now); left < time.Minute {
		time.Sleep(left + time.Second)
		now = time.Now().UTC()
	}
	h := startHarness(t,
		"AWS_ACCESS_KEY_ID=fluent",
		"AWS_SECRET_ACCESS_KEY=bit",
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null",
	)
	h.expect("register rc=0 type=2 proxy=11 flags=0 name=metership", "register")
	h.expect("init m rc=1", "init m %s", h.props("m.props", fileProps(t, t.TempDir(), map[string]string{
		"metering_mode":         "meter_usage",
		"metering_product_code": emulator.DemoProductCode,
		"metering_endpoint":     hs.URL,
		"metering_dimensions":   "api-calls=api_calls",
	})))
	c := &fb.Chunk{}
	for i := range 5 {
		ts := now.Add(-time.Duration(i+1) * time.Second)
		c.V1(fb.TimeOf(ts), fb.MeterRecord(fb.CustomerName(i), "api-calls", 10, ts.UnixMilli(), nil))
	}
	h.expect("flush m rc=1", "flush m usage %s", h.file("usage.chunk", c.Bytes()))
	h.expect("exit m rc=1", "exit m")
	st := emu.State()
	if len(st.Records) != 1 || len(st.Conflicts) != 0 {
		t.Fatalf("emulator holds %+v (conflicts %v), want one record\nstderr:\n%s", st.Records, st.Conflicts, h.stderr.String())
	}
	if r := st.Records[0]; r.Dimension != "api_calls" || !r.Hour.Equal(now.Truncate(time.Hour)) || r.Quantity != 50 {
		t.Fatalf("record %+v, want 50 api_calls in %s", r, now.Truncate(time.Hour))
	}
}
