package main

import (
	"bytes"
	"encoding/json"
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

// hourLeft is now, after waiting out the current hour if less than left
// of it remains: the tests below keep the hour in progress for their
// whole run.
func hourLeft(left time.Duration) time.Time {
	now := time.Now().UTC()
	if rest := now.Truncate(time.Hour).Add(time.Hour).Sub(now); rest < left {
		time.Sleep(rest + time.Second)
		now = time.Now().UTC()
	}
	return now
}

// meterLines renders n records of value units each for api at the given
// times, customer c.
func meterLines(customer, api string, value int, times ...time.Time) string {
	var b strings.Builder
	for _, ts := range times {
		fmt.Fprintf(&b, `{"customerId":%q,"meterApiName":%q,"meterValue":%d,"meterTimeInMillis":%d}`+"\n", customer, api, value, ts.UnixMilli())
	}
	return b.String()
}

// appendFile appends s to path.
func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// ledgerOpen reads the metering ledger in bufferDir and returns its open
// usage (not yet in an intent) per dimension and hour, in whole units.
func ledgerOpen(t *testing.T, bufferDir string) map[string]float64 {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(bufferDir, "metering", "ledger.json"))
	if err != nil {
		t.Fatal(err)
	}
	body := data[:bytes.LastIndex(data, []byte("\ncrc32c:"))+1]
	var l struct {
		Series []struct {
			Dimension string `json:"dimension"`
			Open      []struct {
				Hour    time.Time `json:"hour"`
				Buckets []struct {
					Nanos int64 `json:"nanos"`
				} `json:"buckets"`
			} `json:"open"`
		} `json:"series"`
	}
	if err := json.Unmarshal(body, &l); err != nil {
		t.Fatalf("ledger: %v\n%s", err, data)
	}
	out := map[string]float64{}
	for _, s := range l.Series {
		for _, o := range s.Open {
			for _, b := range o.Buckets {
				out[s.Dimension+" "+o.Hour.UTC().Format("15:04")] += float64(b.Nanos) / 1e9
			}
		}
	}
	return out
}

// reported sums the emulator's accepted quantities per dimension and hour.
func reported(st emulator.State) map[string]int64 {
	out := map[string]int64{}
	for _, r := range st.Records {
		out[r.Dimension+" "+r.Hour.UTC().Format("15:04")] += r.Quantity
	}
	return out
}

func noDuplicates(t *testing.T, st emulator.State) {
	t.Helper()
	if len(st.Conflicts) != 0 || st.Errors[emulator.CodeDuplicateRequest] != 0 || st.Errors[emulator.CodeIdempotencyConflict] != 0 {
		t.Fatalf("a second call for a reported hour: conflicts %+v, errors %v", st.Conflicts, st.Errors)
	}
}

// meteredRun is a `metership run` test setup: the emulator, S3 and one
// tailed log file.
type meteredRun struct {
	srv  *s3server.Server
	emu  *emulator.Emulator
	url  string
	log  string
	buf  string
	opts runOptions
}

func newMeteredRun(t *testing.T, metering string) *meteredRun {
	t.Helper()
	r := &meteredRun{srv: s3server.Start(t), emu: emulator.New(emulator.DefaultConfig())}
	hs := httptest.NewServer(r.emu)
	t.Cleanup(hs.Close)
	r.url = hs.URL
	logs, _, buf := runDirs(t)
	r.log, r.buf = filepath.Join(logs, "usage.log"), buf
	r.opts = runOptions{BufferDir: buf, Sources: tailSource(filepath.Join(logs, "*.log")),
		Extra: strings.ReplaceAll(metering, "EMULATOR", hs.URL)}
	return r
}

// start starts the agent with extra metering YAML lines.
func (r *meteredRun) start(t *testing.T) *runProc {
	t.Helper()
	cfg, listen := runConfig(t, r.srv, r.opts)
	return startRun(t, r.srv, cfg, listen)
}

// waitCounted waits until the agent has counted n meter records.
func waitCounted(t *testing.T, p *runProc, n int) {
	t.Helper()
	waitUntil(t, 30*time.Second, func() string { return fmt.Sprintf("%d records counted\n%s", n, p.out.String()) }, func() bool {
		return p.counter("metership_metering_records_counted_total") >= float64(n)
	})
}

const meterUsageMode = `metering:
  mode: meter_usage
  product_code: metership-demo
  endpoint: EMULATOR
  dimensions: {api-calls: api_calls}
`

// TestRunReportsHourInProgressOnStop: `run` in meter_usage mode with
// records of the current hour, SIGTERM: the emulator holds exactly one
// MeterUsage for that hour and dimension with the whole quantity.
// Restarted on the same buffer with more records of that hour, the agent
// keeps them for the next hour: no second call for the hour, no
// DuplicateRequestException.
func TestRunReportsHourInProgressOnStop(t *testing.T) {
	now := hourLeft(3 * time.Minute)
	hour := now.Truncate(time.Hour)
	r := newMeteredRun(t, meterUsageMode)
	times := func(n int) []time.Time {
		var ts []time.Time
		for i := range n {
			ts = append(ts, now.Add(-time.Duration(i+1)*time.Second))
		}
		return ts
	}
	appendFile(t, r.log, meterLines("c1", "api-calls", 10, times(5)...))
	p := r.start(t)
	waitCounted(t, p, 5)
	if code := p.stop(); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.out.String())
	}
	st := r.emu.State()
	want := map[string]int64{"api_calls " + hour.Format("15:04"): 50}
	if fmt.Sprint(reported(st)) != fmt.Sprint(want) || len(st.Records) != 1 {
		t.Fatalf("after SIGTERM the emulator holds %v (%d records), want %v\n%s", reported(st), len(st.Records), want, p.out.String())
	}

	// Restarted on the same buffer: more records of the reported hour.
	appendFile(t, r.log, meterLines("c1", "api-calls", 10, times(3)...))
	p = r.start(t)
	waitCounted(t, p, 3)
	if code := p.stop(); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.out.String())
	}
	st = r.emu.State()
	noDuplicates(t, st)
	if fmt.Sprint(reported(st)) != fmt.Sprint(want) || len(st.Records) != 1 {
		t.Fatalf("after the second SIGTERM the emulator holds %v, want still %v", reported(st), want)
	}
	next := "api_calls " + hour.Add(time.Hour).Format("15:04")
	if open := ledgerOpen(t, r.buf); open[next] != 30 || len(open) != 1 {
		t.Fatalf("ledger open usage %v, want 30 units in %s", open, next)
	}
	mustContain(t, p.out.String(), "usage stays in the ledger")
}

// TestRunShutdownWhileThrottledIsBounded: every call is answered
// ThrottlingException. SIGTERM exits within agent.shutdown_timeout (plus
// the process's own teardown), logging what stays in the ledger, both
// when the final report is the only pass and when the reporting loop is
// retrying a pending hour; the next start, Marketplace back, reports it.
func TestRunShutdownWhileThrottledIsBounded(t *testing.T) {
	now := hourLeft(3 * time.Minute)
	hour := now.Truncate(time.Hour)
	r := newMeteredRun(t, meterUsageMode)
	r.opts.ShutdownTimeout = "3s"
	// Bound what a SIGTERM may take: the 3s timeout, the HTTP server's
	// 2s, and slack for a loaded machine; far below the 30 minutes a
	// throttled pass may retry for.
	const bound = 25 * time.Second
	r.emu.InjectFaults(emulator.Faults{Throttle: 1 << 30})
	appendFile(t, r.log, meterLines("c1", "api-calls", 2, now.Add(-2*time.Second), now.Add(-time.Second)))
	stopWithin := func(p *runProc) {
		t.Helper()
		start := time.Now()
		if code := p.stop(); code != 0 {
			t.Fatalf("exit %d\n%s", code, p.out.String())
		}
		if took := time.Since(start); took > bound {
			t.Fatalf("SIGTERM took %s with shutdown_timeout 3s\n%s", took, p.out.String())
		}
		mustContain(t, p.out.String(), "usage stays in the ledger")
	}

	p := r.start(t)
	waitCounted(t, p, 2)
	stopWithin(p)

	// The ledger now holds the hour's intent: the loop's first pass
	// retries it, throttled, when SIGTERM comes.
	before := r.emu.State().Errors[emulator.CodeThrottling]
	p = r.start(t)
	waitUntil(t, 30*time.Second, func() string { return "a throttled retry\n" + p.out.String() }, func() bool {
		return r.emu.State().Errors[emulator.CodeThrottling] > before
	})
	stopWithin(p)
	if n := len(r.emu.State().Records); n != 0 {
		t.Fatalf("%d records accepted while throttled", n)
	}

	r.emu.InjectFaults(emulator.Faults{})
	p = r.start(t)
	if code := p.stop(); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.out.String())
	}
	st := r.emu.State()
	noDuplicates(t, st)
	if want := map[string]int64{"api_calls " + hour.Format("15:04"): 4}; fmt.Sprint(reported(st)) != fmt.Sprint(want) {
		t.Fatalf("the next start reported %v, want %v", reported(st), want)
	}
}

// TestRunCatchUpAfterDowntime: usage of an hour is counted but not yet
// reported when the agent stops; while it is down, two hours of records
// (more of that hour, and the next) are appended. After the restart each
// hour is reported as itself: hours stay open until the tailer has read
// the backlog.
func TestRunCatchUpAfterDowntime(t *testing.T) {
	now := hourLeft(3 * time.Minute)
	h2, h1 := now.Truncate(time.Hour).Add(-2*time.Hour), now.Truncate(time.Hour).Add(-time.Hour)
	// First run: a lateness of 3h keeps h2 open, and report_on_stop is
	// off, so h2's first records are in the ledger, unreported, at the
	// stop.
	r := newMeteredRun(t, meterUsageMode+"  lateness: 3h\n  report_on_stop: false\n")
	appendFile(t, r.log, meterLines("c1", "api-calls", 1, h2.Add(time.Minute), h2.Add(2*time.Minute), h2.Add(3*time.Minute)))
	p := r.start(t)
	waitCounted(t, p, 3)
	if code := p.stop(); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.out.String())
	}
	if n := len(r.emu.State().Records); n != 0 {
		t.Fatalf("%d records reported before the downtime", n)
	}

	// Down: the application goes on writing.
	appendFile(t, r.log, meterLines("c1", "api-calls", 10, h2.Add(40*time.Minute), h2.Add(50*time.Minute)))
	appendFile(t, r.log, meterLines("c1", "api-calls", 100, h1.Add(10*time.Minute), h1.Add(20*time.Minute), h1.Add(30*time.Minute)))

	r.opts.Extra = strings.ReplaceAll(meterUsageMode, "EMULATOR", r.url)
	p = r.start(t)
	waitCounted(t, p, 5)
	if code := p.stop(); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.out.String())
	}
	st := r.emu.State()
	noDuplicates(t, st)
	want := map[string]int64{"api_calls " + h2.Format("15:04"): 23, "api_calls " + h1.Format("15:04"): 300}
	if fmt.Sprint(reported(st)) != fmt.Sprint(want) {
		t.Fatalf("reported %v, want each hour as itself: %v\n%s", reported(st), want, p.out.String())
	}
}

// TestShipBatchOldRecordsWithinWindow: BatchMeterUsage refuses records 6
// hours or more old. Records 7 h and 5 h old are all billed, in hours the
// emulator accepts, and ship completes.
func TestShipBatchOldRecordsWithinWindow(t *testing.T) {
	srv := s3server.Start(t)
	emu := emulator.New(emulator.DefaultConfig())
	hs := httptest.NewServer(emu)
	defer hs.Close()
	now := time.Now().UTC()
	dir := t.TempDir()
	input := filepath.Join(dir, "usage.ndjson")
	lines := meterLines("c1", "api-calls", 3, now.Add(-7*time.Hour)) + meterLines("c1", "api-calls", 4, now.Add(-5*time.Hour)) +
		meterLines("c2", "api-calls", 5, now.Add(-7*time.Hour-30*time.Minute))
	if err := os.WriteFile(input, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := s3Config(t, srv, "", filepath.Join(dir, "buf"), fmt.Sprintf(`metering:
  mode: batch_meter_usage
  product_code: %s
  endpoint: %s
  dimensions: {api-calls: api_calls}
`, emulator.DemoProductCode, hs.URL))
	stdout, stderr, code := runAgent(t, srv, nil, "ship", "-c", cfg, input)
	if code != 0 {
		t.Fatalf("ship exit %d\n%s\n%s", code, stdout, stderr)
	}
	st := emu.State()
	byCustomer := map[string]int64{}
	for _, r := range st.Records {
		byCustomer[r.CustomerIdentifier] += r.Quantity
		if age := r.ReceivedAt.Sub(r.Hour); age >= 6*time.Hour {
			t.Errorf("record for %s accepted %s after its hour", r.Hour, age)
		}
	}
	if want := map[string]int64{"c1": 7, "c2": 5}; fmt.Sprint(byCustomer) != fmt.Sprint(want) {
		t.Fatalf("billed %v, want %v\n%s\n%s", byCustomer, want, stdout, stderr)
	}
}

// TestShipMaxCarry: records 3 days old are not billed (metering.max_carry
// defaults to 24h); they are counted and visible in ship's summary and
// log, and still shipped to S3.
func TestShipMaxCarry(t *testing.T) {
	srv := s3server.Start(t)
	emu := emulator.New(emulator.DefaultConfig())
	hs := httptest.NewServer(emu)
	defer hs.Close()
	now := time.Now().UTC()
	old := now.Add(-72 * time.Hour)
	dir := t.TempDir()
	input := filepath.Join(dir, "usage.ndjson")
	lines := meterLines("c1", "api-calls", 3, old, old.Add(time.Minute)) + meterLines("c1", "api-calls", 4, now.Add(-2*time.Hour))
	if err := os.WriteFile(input, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := s3Config(t, srv, "", filepath.Join(dir, "buf"), strings.ReplaceAll(meterUsageMode, "EMULATOR", hs.URL))
	stdout, stderr, code := runAgent(t, srv, nil, "ship", "-c", cfg, input)
	if code != 0 {
		t.Fatalf("ship exit %d\n%s\n%s", code, stdout, stderr)
	}
	if want := map[string]int64{"api_calls " + now.Add(-2*time.Hour).Truncate(time.Hour).Format("15:04"): 4}; fmt.Sprint(reported(emu.State())) != fmt.Sprint(want) {
		t.Fatalf("billed %v, want only the recent usage %v", reported(emu.State()), want)
	}
	mustContain(t, stdout, "metering unbilled:  2 records older than metering.max_carry")
	mustContain(t, stdout, "api_calls = 6")
	mustContain(t, stderr, "usage older than metering.max_carry is not billed")
	if n := len(checkRecordObjects(t, readBucket(t, srv))); n != 3 {
		t.Fatalf("%d records shipped to S3, want 3", n)
	}
}

// TestShipTimeoutWhileThrottled: every call is answered
// ThrottlingException. `ship --timeout` gives up at its deadline, also
// when the ledger holds an hour left by an earlier ship that the
// reporting loop is retrying, and says INCOMPLETE; once Marketplace
// answers, the next ship reports what was left, exactly once.
func TestShipTimeoutWhileThrottled(t *testing.T) {
	srv := s3server.Start(t)
	emu := emulator.New(emulator.DefaultConfig())
	hs := httptest.NewServer(emu)
	defer hs.Close()
	emu.InjectFaults(emulator.Faults{Throttle: 1 << 30})
	now := hourLeft(2 * time.Minute)
	closed := now.Truncate(time.Hour).Add(-time.Hour)
	dir := t.TempDir()
	input := filepath.Join(dir, "usage.ndjson")
	if err := os.WriteFile(input, []byte(meterLines("c1", "api-calls", 3, closed.Add(time.Minute), closed.Add(2*time.Minute))), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := s3Config(t, srv, "", filepath.Join(dir, "buf"), strings.ReplaceAll(meterUsageMode, "EMULATOR", hs.URL))
	const bound = 20 * time.Second // --timeout 3s, plus slack for a loaded machine
	for range 2 {
		start := time.Now()
		stdout, stderr, code := runAgent(t, srv, strings.NewReader(""), "ship", "--timeout", "3s", "-c", cfg, input)
		if took := time.Since(start); took > bound {
			t.Fatalf("ship --timeout 3s took %s\n%s\n%s", took, stdout, stderr)
		}
		if code == 0 || !strings.Contains(stdout, "INCOMPLETE") {
			t.Fatalf("ship exit %d, want INCOMPLETE while throttled\n%s\n%s", code, stdout, stderr)
		}
		mustContain(t, stderr, "usage stays in the ledger")
	}
	if n := len(emu.State().Records); n != 0 {
		t.Fatalf("%d records accepted while throttled", n)
	}
	emu.InjectFaults(emulator.Faults{})
	stdout, stderr, code := runAgent(t, srv, strings.NewReader(""), "ship", "-c", cfg, "-")
	if code != 0 {
		t.Fatalf("ship exit %d\n%s\n%s", code, stdout, stderr)
	}
	st := emu.State()
	noDuplicates(t, st)
	if want := map[string]int64{"api_calls " + closed.Format("15:04"): 6}; fmt.Sprint(reported(st)) != fmt.Sprint(want) {
		t.Fatalf("reported %v, want %v", reported(st), want)
	}
}
