package main

import (
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/metership/metership/internal/testutil/s3server"
	"github.com/metership/metership/metering/emulator"
)

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

	now := time.Now().UTC()
	current := now.Truncate(time.Hour)
	start := current.Add(-4 * time.Hour)
	// Tenths of a unit per (dimension, hour): the model to compare with.
	type key struct {
		dim  string
		hour time.Time
	}
	tenths := map[key]int64{}
	var b strings.Builder
	i := 0
	for ts := start.Add(30 * time.Second); ts.Before(now.Add(-time.Second)); ts = ts.Add(97 * time.Second) {
		api, dim := "api-calls", "api_calls"
		if i%4 == 3 {
			api, dim = "storage", "storage_gb"
		}
		v := int64(i%9 + 1) // tenths
		fmt.Fprintf(&b, `{"customerId":"c%d","meterApiName":"%s","meterValue":%d.%d,"meterTimeInMillis":%d,"dimensions":{"team":"t%d"}}`+"\n",
			i%3, api, v/10, v%10, ts.UnixMilli(), i%2)
		tenths[key{dim, ts.Truncate(time.Hour)}] += v
		i++
	}
	dir := t.TempDir()
	input := filepath.Join(dir, "usage.ndjson")
	if err := os.WriteFile(input, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	extra := fmt.Sprintf(`metering:
  mode: meter_usage
  product_code: %s
  endpoint: %s
  dimensions: {api-calls: api_calls, storage: storage_gb}
  allocation_tags: [team]
  lateness: 0s
`, emulator.DemoProductCode, hs.URL)
	cfg := s3Config(t, srv, "", filepath.Join(dir, "buf"), extra)
	stdout, stderr, code := runAgent(t, srv, nil, "ship", "-c", cfg, input)
	if code != 0 {
		t.Fatalf("ship exit %d\n%s\n%s", code, stdout, stderr)
	}

	// The model: per dimension, hours in order, integer part reported,
	// remainder carried; the current hour is still open.
	want := map[key]int64{}
	for _, dim := range []string{"api_calls", "storage_gb"} {
		carry := int64(0)
		for h := start; h.Before(current); h = h.Add(time.Hour) {
			total := tenths[key{dim, h}] + carry
			want[key{dim, h}] = total / 10
			carry = total % 10
		}
	}
	st := emu.State()
	if len(st.Conflicts) != 0 {
		t.Fatalf("conflicts: %+v", st.Conflicts)
	}
	got := map[key]int64{}
	for _, r := range st.Records {
		k := key{r.Dimension, r.Hour.UTC()}
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
		if !r.Hour.Before(current) {
			t.Fatalf("open hour %v reported", r.Hour)
		}
	}
	var keys []string
	for k, q := range want {
		if q == 0 {
			continue // nothing to bill in that hour (report_zero is off)
		}
		keys = append(keys, fmt.Sprint(k))
		if got[k] != q {
			t.Errorf("%s %s: reported %d, want %d", k.dim, k.hour.Format(time.RFC3339), got[k], q)
		}
	}
	sort.Strings(keys)
	if len(got) != len(keys) {
		t.Fatalf("reported %d (dimension, hour) pairs, want %d: got %v", len(got), len(keys), got)
	}
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
