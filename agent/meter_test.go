package main

import (
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metership/metership/internal/testutil/s3server"
	"github.com/metership/metership/metering/emulator"
)

// usageKey is a (Marketplace dimension, hour).
type usageKey struct {
	dim  string
	hour time.Time
}

// usageFixture is meter records every step over the four hours before now
// and the current one, in tenths of a unit, with the model of what
// MeterUsage must receive.
type usageFixture struct {
	start, current time.Time
	lines          string
	records        int
	tenths         map[usageKey]int64
}

// hourSafeNow is now, after waiting out an hour boundary less than a
// minute away: the fixtures' model has the current hour open, and the
// tests using them take seconds, so they must not straddle a new hour.
func hourSafeNow() time.Time {
	now := time.Now().UTC()
	if left := now.Truncate(time.Hour).Add(time.Hour).Sub(now); left < time.Minute {
		time.Sleep(left + time.Second)
		now = time.Now().UTC()
	}
	return now
}

func newUsageFixture(now time.Time, step time.Duration) *usageFixture {
	f := &usageFixture{current: now.Truncate(time.Hour), tenths: map[usageKey]int64{}}
	f.start = f.current.Add(-4 * time.Hour)
	var b strings.Builder
	for ts := f.start.Add(30 * time.Second); ts.Before(now.Add(-time.Second)); ts = ts.Add(step) {
		i := f.records
		api, dim := "api-calls", "api_calls"
		if i%4 == 3 {
			api, dim = "storage", "storage_gb"
		}
		v := int64(i%9 + 1) // tenths
		fmt.Fprintf(&b, `{"customerId":"c%d","meterApiName":"%s","meterValue":%d.%d,"meterTimeInMillis":%d,"dimensions":{"team":"t%d"}}`+"\n",
			i%3, api, v/10, v%10, ts.UnixMilli(), i%2)
		f.tenths[usageKey{dim, ts.Truncate(time.Hour)}] += v
		f.records++
	}
	f.lines = b.String()
	return f
}

// meteringYAML is the metering section for the emulator at url.
func meteringYAML(url string) string {
	return fmt.Sprintf(`metering:
  mode: meter_usage
  product_code: %s
  endpoint: %s
  dimensions: {api-calls: api_calls, storage: storage_gb}
  allocation_tags: [team]
  lateness: 0s
`, emulator.DemoProductCode, url)
}

// check asserts exactly one accepted MeterUsage per (dimension, closed
// hour) with a quantity, equal to the model: per dimension, hours in
// order, integer part reported, remainder carried; allocations summing to
// the quantity; the current hour still open, unless final (an agent
// that stopped reports the hour in progress too).
func (f *usageFixture) check(t *testing.T, st emulator.State, final bool) {
	t.Helper()
	end := f.current
	if final {
		end = end.Add(time.Hour)
	}
	want := map[usageKey]int64{}
	for _, dim := range []string{"api_calls", "storage_gb"} {
		carry := int64(0)
		for h := f.start; h.Before(end); h = h.Add(time.Hour) {
			total := f.tenths[usageKey{dim, h}] + carry
			want[usageKey{dim, h}] = total / 10
			carry = total % 10
		}
	}
	if len(st.Conflicts) != 0 {
		t.Fatalf("conflicts: %+v", st.Conflicts)
	}
	got := map[usageKey]int64{}
	for _, r := range st.Records {
		k := usageKey{r.Dimension, r.Hour.UTC()}
		if _, dup := got[k]; dup {
			t.Fatalf("two MeterUsage records accepted for %v", k)
		}
		got[k] = r.Quantity
		var sum int64
		for _, a := range r.Allocations {
			sum += a.Quantity
		}
		if len(r.Allocations) > 0 && sum != r.Quantity {
			t.Fatalf("%v: allocations sum to %d, quantity %d", k, sum, r.Quantity)
		}
		if !r.Hour.Before(end) {
			t.Fatalf("open hour %v reported", r.Hour)
		}
	}
	n := 0
	for k, q := range want {
		if q == 0 {
			continue // nothing to bill in that hour (report_zero is off)
		}
		n++
		if got[k] != q {
			t.Errorf("%s %s: reported %d, want %d", k.dim, k.hour.Format(time.RFC3339), got[k], q)
		}
	}
	if len(got) != n {
		t.Fatalf("reported %d (dimension, hour) pairs, want %d: got %v", len(got), n, got)
	}
}

// TestShipReportsMeterUsage ships records spread over past hours with
// metering on and checks, in the emulator, exactly one accepted MeterUsage
// per (dimension, closed hour) whose quantity is the hourly sum with the
// fractional remainder carried, allocations summing exactly. A second ship
// with no input changes nothing.
func TestShipReportsMeterUsage(t *testing.T) {
	srv := s3server.Start(t)
	emu := emulator.New(emulator.DefaultConfig())
	hs := httptest.NewServer(emu)
	defer hs.Close()

	fx := newUsageFixture(hourSafeNow(), 97*time.Second)
	dir := t.TempDir()
	input := filepath.Join(dir, "usage.ndjson")
	if err := os.WriteFile(input, []byte(fx.lines), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := s3Config(t, srv, "", filepath.Join(dir, "buf"), meteringYAML(hs.URL))
	stdout, stderr, code := runAgent(t, srv, nil, "ship", "-c", cfg, input)
	if code != 0 {
		t.Fatalf("ship exit %d\n%s\n%s", code, stdout, stderr)
	}
	fx.check(t, emu.State(), false)
	mustContain(t, stdout, "metering hours reported:")

	// A second ship with no new input: no call changes anything.
	before := emu.State()
	stdout, stderr, code = runAgent(t, srv, strings.NewReader(""), "ship", "-c", cfg, "-")
	if code != 0 {
		t.Fatalf("second ship exit %d\n%s\n%s", code, stdout, stderr)
	}
	after := emu.State()
	if len(after.Records) != len(before.Records) || len(after.Conflicts) != 0 {
		t.Fatalf("second ship changed the emulator: %d -> %d records, conflicts %v", len(before.Records), len(after.Records), after.Conflicts)
	}
	for k, n := range after.Errors {
		if strings.Contains(k, "Duplicate") || strings.Contains(k, "Idempotency") {
			t.Fatalf("second ship caused %d %s", n, k)
		}
	}
}

// TestRunReportsMeterUsage is the same usage tailed by `metership run`:
// every record is counted as it is ingested (none parsed again at segment
// time, per /metrics), and every hour, the one in progress included
// (metering.report_on_stop), is reported by the time the agent has exited
// on SIGTERM, matching the model exactly.
func TestRunReportsMeterUsage(t *testing.T) {
	srv := s3server.Start(t)
	emu := emulator.New(emulator.DefaultConfig())
	hs := httptest.NewServer(emu)
	defer hs.Close()

	fx := newUsageFixture(hourSafeNow(), 97*time.Second)
	logs, _, buf := runDirs(t)
	if err := os.WriteFile(filepath.Join(logs, "usage.log"), []byte(fx.lines), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, listen := runConfig(t, srv, runOptions{BufferDir: buf, Sources: tailSource(filepath.Join(logs, "*.log")), Extra: meteringYAML(hs.URL)})
	agent := startRun(t, srv, cfg, listen)
	waitUntil(t, 30*time.Second, func() string { return "every record counted\n" + agent.out.String() }, func() bool {
		return agent.counter("metership_metering_records_counted_total") >= float64(fx.records)
	})
	if n := agent.counter("metership_metering_records_counted_total"); n != float64(fx.records) {
		t.Fatalf("%v records counted, want %d", n, fx.records)
	}
	if n := agent.counter("metership_metering_records_rescanned_total"); n != 0 {
		t.Fatalf("%v records parsed again when their segments were counted, want 0", n)
	}
	if code := agent.stop(); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, agent.out.String())
	}
	fx.check(t, emu.State(), true)
}
