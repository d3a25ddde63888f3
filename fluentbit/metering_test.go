package fluentbit

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/metership/metership/fluentbit/fbtest"
	"github.com/metership/metership/metering/emulator"
)

// TestFlushReportsMeterUsage: hourly metering works from the plugin as
// from the agent. Records of past hours flushed through an instance with
// metering_mode meter_usage are reported to the emulator (through the real
// SDK client) by the time Exit returns, once per (dimension, hour), with
// the hourly sums.
func TestFlushReportsMeterUsage(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "fluent")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "bit")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	emu := emulator.New(emulator.DefaultConfig())
	hs := httptest.NewServer(emu)
	defer hs.Close()

	out := testOutput{Root: t.TempDir()}
	x, err := NewInstance(props(baseProps(t, out, map[string]string{
		"metering_mode":         "meter_usage",
		"metering_product_code": emulator.DemoProductCode,
		"metering_endpoint":     hs.URL,
		"metering_dimensions":   "api-calls=api_calls",
		"metering_lateness":     "0s",
	})), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	hour := time.Now().UTC().Truncate(time.Hour)
	want := map[time.Time]int64{}
	c := &fbtest.Chunk{}
	for i := 0; i < 120; i++ {
		ts := hour.Add(-3*time.Hour + time.Duration(i)*time.Minute) // hours H-3, H-2 (closed)
		c.V2(fbtest.TimeOf(ts), fbtest.Map{}, fbtest.MeterRecord(fbtest.CustomerName(i%4), "api-calls", 2, ts.UnixMilli(), nil))
		want[ts.Truncate(time.Hour)] += 2
	}
	if rc := x.Flush(c.Bytes(), "usage.app"); rc != FLBOK {
		t.Fatalf("flush = %d", rc)
	}
	if rc := x.Exit(); rc != FLBOK {
		t.Fatalf("exit = %d", rc)
	}
	st := emu.State()
	if len(st.Conflicts) != 0 || len(st.Records) != len(want) {
		t.Fatalf("emulator accepted %d records (conflicts %v), want %d", len(st.Records), st.Conflicts, len(want))
	}
	for _, r := range st.Records {
		if r.Dimension != "api_calls" || r.Quantity != want[r.Hour.UTC()] {
			t.Fatalf("record %+v, want quantity %d", r, want[r.Hour.UTC()])
		}
	}
}
