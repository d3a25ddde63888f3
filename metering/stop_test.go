package metering

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metership/metership/buffer"
	"github.com/metership/metership/conf"
	"github.com/metership/metership/metering/emulator"
)

// countLines counts records into m as segment seq, without a buffer.
func countLines(t testing.TB, m *Meter, seq uint64, recs ...rec) {
	t.Helper()
	c := m.BeginCount(seq)
	defer c.Close()
	for _, r := range recs {
		c.Add(buffer.Frame{Type: buffer.FrameRecord, Time: r.at.UnixMilli(), Data: r.line()})
	}
	if err := c.Commit(context.Background()); err != nil {
		t.Fatalf("count segment %d: %v", seq, err)
	}
}

// units is n whole units in nanos.
func units(n int64) int64 { return n * nanosPerUnit }

// byHour indexes accepted records by dimension, customer and hour.
func byHour(st emulator.State) map[string]int64 {
	out := map[string]int64{}
	for _, r := range st.Records {
		out[fmt.Sprintf("%s/%s%s/%s", r.Dimension, r.CustomerIdentifier, r.CustomerAWSAccountID, r.Hour.UTC().Format("15:04"))] += r.Quantity
	}
	return out
}

// TestReportFinalReportsTheHourInProgress: a stopping instance reports
// the hour in progress with its whole quantity; restarted on the same
// ledger in the same hour, more usage of that hour waits for the next
// hour instead of a second call for it, and is reported once that hour
// closes. Both APIs.
func TestReportFinalReportsTheHourInProgress(t *testing.T) {
	for _, mode := range []conf.MeteringMode{ModeMeterUsage, ModeBatchMeterUsage} {
		t.Run(string(mode), func(t *testing.T) {
			clk := newClock(testNow) // 12:30: 12:00 is in progress
			ecfg := emulatorConfig(clk)
			ecfg.Products[testProduct] = emulator.Product{Dimensions: []string{"api_calls", "users"}, Licenses: []string{testLicense}}
			em, url := startEmulator(t, ecfg)
			cfg, customer, api, dim := meterConfig(), "c1", "api-calls", "api_calls"
			if mode == ModeBatchMeterUsage {
				cfg, customer, api, dim = batchConfig(), "111111111111", "seats", "users"
			}
			cfg.ReportOnStop = true
			dir := t.TempDir()
			m := mustNew(t, cfg, testOptions(dir, newClient(t, url, "AKIDPOD1"), clk))
			for i := range 5 {
				countLines(t, m, uint64(i+1), rec{customer: customer, api: api, nanos: units(10), at: testNow.Add(-time.Duration(20-i) * time.Minute)})
			}
			if err := m.ReportClosed(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			if n := len(em.State().Records); n != 0 {
				t.Fatalf("%d records for a running instance's open hour", n)
			}
			if err := m.ReportOnStop(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			key := func(hh string) string {
				if mode == ModeMeterUsage {
					return dim + "//" + hh
				}
				return dim + "/" + customer + "/" + hh
			}
			if got, want := fmt.Sprint(byHour(em.State())), fmt.Sprint(map[string]int64{key("12:00"): 50}); got != want {
				t.Fatalf("after stop: %s, want %s", got, want)
			}

			// The container restarts on the same ledger, still at 12:40.
			clk.Set(testNow.Add(10 * time.Minute))
			m = mustNew(t, cfg, testOptions(dir, newClient(t, url, "AKIDPOD1"), clk))
			countLines(t, m, 6, rec{customer: customer, api: api, nanos: units(7), at: testNow.Add(5 * time.Minute)})
			if err := m.ReportOnStop(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			st := em.State()
			if len(st.Conflicts) != 0 || st.Errors[emulator.CodeDuplicateRequest] != 0 {
				t.Fatalf("a second call for a reported hour: conflicts %+v errors %v", st.Conflicts, st.Errors)
			}
			if got, want := fmt.Sprint(byHour(st)), fmt.Sprint(map[string]int64{key("12:00"): 50}); got != want {
				t.Fatalf("after the second stop: %s, want %s", got, want)
			}
			// 13:00 closes: the late usage is reported in it.
			clk.Set(testNow.Add(100 * time.Minute))
			m = mustNew(t, cfg, testOptions(dir, newClient(t, url, "AKIDPOD1"), clk))
			if err := m.ReportClosed(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			if got, want := fmt.Sprint(byHour(em.State())), fmt.Sprint(map[string]int64{key("12:00"): 50, key("13:00"): 7}); got != want {
				t.Fatalf("after 13:00 closed: %s, want %s", got, want)
			}
		})
	}
}

// TestReportOnStopOff: with report_on_stop off, stopping reports closed
// hours only.
func TestReportOnStopOff(t *testing.T) {
	clk := newClock(testNow)
	em, url := startEmulator(t, emulatorConfig(clk))
	m := mustNew(t, meterConfig(), testOptions(t.TempDir(), newClient(t, url, "AKIDPOD1"), clk))
	countLines(t, m, 1, rec{customer: "c", api: "api-calls", nanos: units(3), at: testNow.Add(-time.Minute)})
	if err := m.ReportOnStop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if n := len(em.State().Records); n != 0 {
		t.Fatalf("report_on_stop off reported the open hour: %d records", n)
	}
}

// TestWaitForPassHonoursContext: a reporting pass retrying throttled
// calls holds the reporter; another caller (a shutdown) gives up when its
// context ends instead of waiting for that pass, and the usage stays
// pending for the next start.
func TestWaitForPassHonoursContext(t *testing.T) {
	clk := newClock(testNow)
	em, url := startEmulator(t, emulatorConfig(clk))
	em.InjectFaults(emulator.Faults{Throttle: 1 << 30})
	opts := testOptions(t.TempDir(), newClient(t, url, "AKIDPOD1"), clk)
	opts.MaxRetryElapsed = time.Hour
	opts.Backoff = Backoff{Initial: 20 * time.Millisecond, Max: 50 * time.Millisecond}
	retrying := make(chan struct{})
	var once sync.Once
	opts.onRetry = func(error) { once.Do(func() { close(retrying) }) }
	m := mustNew(t, meterConfig(), opts)
	countLines(t, m, 1, rec{customer: "c", api: "api-calls", nanos: units(4), at: testNow.Add(-time.Hour)})

	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	first := make(chan error, 1)
	go func() { first <- m.ReportClosed(runCtx) }()
	<-retrying

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.ReportClosed(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrNotReported) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("ReportClosed = %v, want ErrNotReported and the context's error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ReportClosed waited for the pass in progress past its context")
	}
	stopRun()
	if err := <-first; !errors.Is(err, ErrNotReported) {
		t.Fatalf("throttled pass = %v, want ErrNotReported", err)
	}
	if s := m.Summary(); s.Pending != 1 {
		t.Fatalf("%d hours pending, want the throttled one kept", s.Pending)
	}
}

// TestWindowsAlwaysReport is a property test over windows 1h-24h and
// lateness 0-30m: configurations validation accepts are exactly those
// that leave time to report, and for them, with usage arriving for any
// hour inside the window, passes at random times and downtimes longer
// than the window, every unit is reported once: in its hour or carried
// to a later one, nothing pending forever. Passes come at random times
// and just after each hour closes, as Run makes them.
func TestWindowsAlwaysReport(t *testing.T) {
	windows := []time.Duration{time.Hour, 65 * time.Minute, 70 * time.Minute, 87 * time.Minute, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 24 * time.Hour}
	latenesses := []time.Duration{0, 5 * time.Minute, 15 * time.Minute, 30 * time.Minute}
	for wi, window := range windows {
		for li, lateness := range latenesses {
			t.Run(fmt.Sprintf("window=%s/lateness=%s", window, lateness), func(t *testing.T) {
				cfg := meterConfig()
				cfg.AllocationTags = nil
				cfg.Window, cfg.Lateness = conf.Duration(window), conf.Duration(lateness)
				err := ValidateConfig(cfg)
				if canReport := window-time.Hour-lateness >= MinReportSlack; canReport != (err == nil) {
					t.Fatalf("validation = %v for slack %s", err, window-time.Hour-lateness)
				}
				if err != nil {
					return
				}
				checkWindowProperty(t, cfg, uint64(wi*len(latenesses)+li))
			})
		}
	}
}

func checkWindowProperty(t *testing.T, cfg conf.Metering, seed uint64) {
	window, lateness := cfg.Window.D(), cfg.Lateness.D()
	rng := rand.New(rand.NewPCG(seed, 42))
	clk := newClock(testNow)
	ecfg := emulatorConfig(clk)
	ecfg.MeterUsageWindow = window // the API's window is the configured one
	em, url := startEmulator(t, ecfg)
	opts := testOptions(t.TempDir(), newClient(t, url, "AKIDPOD1"), clk)
	m := mustNew(t, cfg, opts)

	var total int64
	seq := uint64(0)
	pass := func() {
		t.Helper()
		if err := m.ReportClosed(ctxT(t)); err != nil {
			t.Fatalf("pass at %s: %v", clk.Now().Format(time.RFC3339), err)
		}
	}
	// advance moves the clock by d, stopping for a pass at each hour close
	// on the way unless the agent is down.
	advance := func(d time.Duration, down bool) {
		end := clk.Now().Add(d)
		for !down {
			next := nextClose(clk.Now(), lateness)
			if next.After(end) {
				break
			}
			clk.Set(next)
			pass()
		}
		clk.Set(end)
	}
	for step := range 50 {
		down := rng.IntN(10) == 0
		gap := time.Duration(1+rng.IntN(20)) * time.Minute
		if down {
			gap = time.Duration(30+rng.IntN(int(window/time.Minute)+120)) * time.Minute
		}
		advance(gap, down)
		// Records of any time inside the window, and some older ones.
		for range rng.IntN(4) {
			age := time.Duration(rng.Int64N(int64(window + window/2)))
			n := int64(1 + rng.IntN(9))
			seq++
			countLines(t, m, seq, rec{customer: "c", api: "api-calls", nanos: units(n), at: clk.Now().Add(-age), uid: fmt.Sprint(step, seq)})
			total += n
		}
		pass()
	}
	// No more usage: run until every hour has closed and been reported.
	for range int((window+3*time.Hour)/(10*time.Minute)) + 1 {
		advance(10*time.Minute, false)
		pass()
	}
	st := em.State()
	var sent int64
	for _, r := range st.Records {
		sent += r.Quantity
	}
	if len(st.Conflicts) != 0 {
		t.Fatalf("conflicts: %+v", st.Conflicts)
	}
	if s := m.Summary(); sent != total || s.Pending != 0 {
		var open []string
		m.mu.Lock()
		for _, se := range m.led.series {
			for h := range se.open {
				open = append(open, hourTime(h).Format(time.RFC3339))
			}
		}
		m.mu.Unlock()
		t.Fatalf("reported %d units of %d; %d hours pending (open %s); errors %v", sent, total, s.Pending, strings.Join(open, " "), st.Errors)
	}
}

// TestMaxCarryRecordsOldUsageAsUnbilled: usage of hours older than
// max_carry when counted is not billed; it is in the ledger with its
// reason, in the metric and the Summary, and survives a reopen.
func TestMaxCarryRecordsOldUsageAsUnbilled(t *testing.T) {
	clk := newClock(testNow)
	em, url := startEmulator(t, emulatorConfig(clk))
	cfg := meterConfig()
	cfg.MaxCarry = conf.Duration(24 * time.Hour)
	dir := t.TempDir()
	m := mustNew(t, cfg, testOptions(dir, newClient(t, url, "AKIDPOD1"), clk))
	old := testNow.Add(-72 * time.Hour)
	countLines(t, m, 1,
		rec{customer: "c", api: "api-calls", nanos: units(3), at: old},
		rec{customer: "c", api: "api-calls", nanos: units(4), at: old.Add(time.Hour)},
		rec{customer: "c", api: "storage", nanos: units(2000), at: old},
		rec{customer: "c", api: "api-calls", nanos: units(5), at: testNow.Add(-7 * time.Hour)},
	)
	if err := m.ReportClosed(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	st := em.State()
	if got, want := fmt.Sprint(byHour(st)), fmt.Sprint(map[string]int64{"api_calls//08:00": 5}); got != want {
		t.Fatalf("billed %s, want only the 7h-old usage, in the oldest reportable hour: %s", got, want)
	}
	s := m.Summary()
	if s.UnbilledRecords != 3 || s.Unbilled["api_calls"] != units(7) || s.Unbilled["storage_gb"] != units(2) {
		t.Fatalf("summary unbilled: %d records %v", s.UnbilledRecords, s.Unbilled)
	}
	if v := metricValue(m.metrics.usageUnbilled); v != 3 {
		t.Fatalf("usage_unbilled_total = %v, want 3", v)
	}
	m = mustNew(t, cfg, testOptions(dir, newClient(t, url, "AKIDPOD1"), clk))
	m.mu.Lock()
	var entries []string
	for _, u := range m.led.unbilled {
		entries = append(entries, fmt.Sprintf("%s %s %s %d %d", u.Dimension, u.Hour.Format("02T15"), u.Reason, u.Nanos/nanosPerUnit, u.Records))
	}
	m.mu.Unlock()
	if len(entries) != 3 || !strings.Contains(strings.Join(entries, ";"), "api_calls 12T12 max_carry 3 1") {
		t.Fatalf("ledger unbilled entries: %v", entries)
	}
}

// TestBatchIntentsKeepTheirProductAndDryRun: intents decided before a
// config change (product code, dry_run) go out as decided, each call
// carrying one product and only real intents.
func TestBatchIntentsKeepTheirProductAndDryRun(t *testing.T) {
	clk := newClock(testNow)
	ecfg := emulatorConfig(clk)
	ecfg.Products[testProduct] = emulator.Product{Dimensions: []string{"users"}, Licenses: []string{testLicense}}
	ecfg.Products["metership-other"] = emulator.Product{Dimensions: []string{"users"}, Licenses: []string{testLicense}}
	em, url := startEmulator(t, ecfg)
	dir := t.TempDir()
	cfg := batchConfig()
	m := mustNew(t, cfg, testOptions(dir, newClient(t, url, "AKIDSAAS"), clk))
	countLines(t, m, 1, rec{customer: "111111111111", api: "seats", nanos: units(2), at: testNow.Add(-3 * time.Hour)})
	// The API is disabled: the 09:00 intent is decided under testProduct
	// and stays pending.
	em.InjectFaults(emulator.Faults{DisabledAPI: true})
	if err := m.ReportClosed(ctxT(t)); !errors.Is(err, ErrNotReported) {
		t.Fatalf("ReportClosed = %v, want ErrNotReported", err)
	}
	em.InjectFaults(emulator.Faults{})

	// The product code changes and dry_run is turned on.
	cfg.ProductCode, cfg.DryRun = "metership-other", true
	m = mustNew(t, cfg, testOptions(dir, newClient(t, url, "AKIDSAAS"), clk))
	countLines(t, m, 2, rec{customer: "111111111111", api: "seats", nanos: units(5), at: testNow.Add(-2 * time.Hour)})
	if err := m.ReportClosed(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	st := em.State()
	if len(st.Records) != 1 {
		t.Fatalf("%d records billed, want the one decided before dry_run: %+v", len(st.Records), st.Records)
	}
	if r := st.Records[0]; r.ProductCode != testProduct || r.Quantity != 2 || r.Hour.Format("15:04") != "09:00" {
		t.Fatalf("billed %+v, want 2 units of 09:00 under %s", r, testProduct)
	}
	if s := m.Summary(); s.DryRun != 1 {
		t.Fatalf("dry-run intents %d, want 1", s.DryRun)
	}
}

// TestCatchUpGate: while sources read their start-up backlog no hour
// closes, so late-read usage lands in its own hour; the gate opens when
// every source is done, or at catch_up_timeout.
func TestCatchUpGate(t *testing.T) {
	clk := newClock(testNow)
	em, url := startEmulator(t, emulatorConfig(clk))
	cfg := meterConfig()
	cfg.CatchUpTimeout = conf.Duration(10 * time.Minute)
	opts := testOptions(t.TempDir(), newClient(t, url, "AKIDPOD1"), clk)
	opts.CatchUpSources = 2
	m := mustNew(t, cfg, opts)
	countLines(t, m, 1, rec{customer: "c", api: "api-calls", nanos: units(3), at: testNow.Add(-2 * time.Hour)})
	if err := m.ReportClosed(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	m.SourceCaughtUp()
	countLines(t, m, 2, rec{customer: "c", api: "api-calls", nanos: units(4), at: testNow.Add(-2 * time.Hour)})
	if err := m.ReportClosed(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if n := len(em.State().Records); n != 0 {
		t.Fatalf("%d hours reported while a source reads its backlog", n)
	}
	m.SourceCaughtUp()
	if err := m.ReportClosed(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(byHour(em.State())), fmt.Sprint(map[string]int64{"api_calls//10:00": 7}); got != want {
		t.Fatalf("reported %s, want %s", got, want)
	}

	// A source that never finishes holds hours for catch_up_timeout only.
	opts = testOptions(t.TempDir(), newClient(t, url, "AKIDPOD2"), clk)
	opts.CatchUpSources = 1
	m = mustNew(t, cfg, opts)
	countLines(t, m, 1, rec{customer: "c", api: "api-calls", nanos: units(6), at: testNow.Add(-3 * time.Hour)})
	if err := m.ReportClosed(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	clk.Set(testNow.Add(11 * time.Minute))
	if err := m.ReportClosed(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if n := len(em.State().Records); n != 2 {
		t.Fatalf("%d records after catch_up_timeout, want 2", n)
	}
}
