package metering

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	mm "github.com/aws/aws-sdk-go-v2/service/marketplacemetering"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/metership/metership/buffer"
	"github.com/metership/metership/metering/emulator"
)

func TestReportEndToEnd(t *testing.T) {
	clk := newClock(testNow)
	em, url := startEmulator(t, emulatorConfig(clk))
	dir := t.TempDir()
	from := testNow.Add(-4 * time.Hour).Truncate(time.Hour)
	// Records up to and including the open hour 12:00.
	recs, totals := testRecords(from, testNow.Truncate(time.Hour).Add(time.Hour), 25)
	m := podMeter(t, dir, url, clk)
	countRecords(t, m, recs, 30)

	if err := m.ReportClosed(ctxT(t)); err != nil {
		t.Fatalf("ReportClosed: %v", err)
	}
	want := expectedQuantities(totals)
	open := testNow.Truncate(time.Hour)
	for k := range want {
		if k.hour.Equal(open) {
			delete(want, k)
		}
	}
	st := em.State()
	checkExactlyOnce(t, st, want)
	for _, r := range st.Records {
		if r.ClientToken != clientToken(testProduct, r.Dimension, r.Hour.Unix(), "agent-1") {
			t.Errorf("%s %s: ClientToken %q", r.Dimension, r.Hour, r.ClientToken)
		}
		if !r.Timestamp.Equal(r.Hour) {
			t.Errorf("Timestamp %s is not the hour %s", r.Timestamp, r.Hour)
		}
		if len(r.Allocations) == 0 && r.Quantity > 0 {
			t.Errorf("%s %s: no allocations", r.Dimension, r.Hour)
		}
		untagged := false
		for _, a := range r.Allocations {
			if len(a.Tags) == 0 {
				untagged = true
			}
			for _, tg := range a.Tags {
				if tg.Key != "team" {
					t.Errorf("allocation tag %q, want only team", tg.Key)
				}
			}
		}
		if r.Quantity > 10 && !untagged {
			t.Errorf("%s %s: records without a team have no untagged allocation: %+v", r.Dimension, r.Hour, r.Allocations)
		}
	}
	sum := m.Summary()
	if sum.HoursReported != len(want) || sum.Conflicts != 0 {
		t.Errorf("summary %+v", sum)
	}
	var wantAPICalls int64
	for k, q := range want {
		if k.dimension == "api_calls" {
			wantAPICalls += q
		}
	}
	if sum.Quantities["api_calls"] != wantAPICalls {
		t.Errorf("summary api_calls %d, want %d", sum.Quantities["api_calls"], wantAPICalls)
	}
	if v := metricValue(m.metrics.hoursReported); v != float64(len(want)) {
		t.Errorf("hours_reported_total = %v", v)
	}
	if v := metricValue(m.metrics.lastSuccess); v != float64(testNow.Unix()) {
		t.Errorf("last_success_timestamp_seconds = %v", v)
	}
	if v := metricValue(m.metrics.hoursPending); v != 2 {
		t.Errorf("hours_pending = %v, want the two open 12:00 hours", v)
	}

	// Nothing new: no call at all, from this Meter or a restarted one.
	calls := st.Requests[emulator.OpMeterUsage]
	if err := m.ReportClosed(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	m2 := podMeter(t, dir, url, clk)
	if err := m2.ReportClosed(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got := em.State(); got.Requests[emulator.OpMeterUsage] != calls || len(got.Records) != len(want) || len(got.Conflicts) != 0 {
		t.Fatalf("a pass with nothing new changed the emulator: %d calls (was %d), %d records", got.Requests[emulator.OpMeterUsage], calls, len(got.Records))
	}

	// 12:00 closes at 13:05, with the carry of 11:00.
	clk.Set(testNow.Add(35 * time.Minute))
	if err := m2.ReportClosed(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, em.State(), expectedQuantities(totals))
}

func TestReportWaitsForPendingRecords(t *testing.T) {
	clk := newClock(testNow)
	em, url := startEmulator(t, emulatorConfig(clk))
	dir := t.TempDir()
	recs, totals := testRecords(testNow.Add(-4*time.Hour).Truncate(time.Hour), testNow.Truncate(time.Hour), 10)
	opts := testOptions(dir, newClient(t, url, "AKIDPOD1"), clk)
	pendingAt := testNow.Add(-2 * time.Hour).Truncate(time.Hour).Add(20 * time.Minute) // 10:20
	opts.Pending = func() (int64, bool) { return pendingAt.UnixMilli(), true }
	m := mustNew(t, meterConfig(), opts)
	countRecords(t, m, recs, 10)
	if err := m.ReportClosed(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for _, r := range em.State().Records {
		if !r.Hour.Before(pendingAt.Truncate(time.Hour)) {
			t.Errorf("hour %s reported while records of 10:20 were pending", r.Hour.Format("15:04"))
		}
	}
	if n := len(em.State().Records); n != 4 {
		t.Errorf("%d records, want 2 hours x 2 dimensions", n)
	}
	pendingAt = time.Time{}
	m.opts.Pending = nil
	if err := m.ReportClosed(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, em.State(), expectedQuantities(totals))
}

func TestLateRecordsGoToTheNextOpenHour(t *testing.T) {
	clk := newClock(testNow)
	em, url := startEmulator(t, emulatorConfig(clk))
	dir := t.TempDir()
	m := podMeter(t, dir, url, clk)
	h := func(hh int) time.Time { return time.Date(2025, 6, 15, hh, 0, 0, 0, time.UTC) }
	first := t.TempDir()
	writeBuffer(t, first, []rec{
		{customer: "c", api: "api-calls", nanos: 2.5 * nanosPerUnit, at: h(9).Add(time.Minute)},
		{customer: "c", api: "api-calls", nanos: 4 * nanosPerUnit, at: h(11).Add(time.Minute)},
	}, 10)
	countBuffer(t, m, first)
	if err := m.ReportClosed(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	// The same buffer: sequences are unique per buffer directory.
	writeBuffer(t, first, []rec{
		{customer: "c", api: "api-calls", nanos: 3 * nanosPerUnit, at: h(9).Add(30 * time.Minute)},  // 9 reported -> 10
		{customer: "c", api: "api-calls", nanos: 5 * nanosPerUnit, at: h(11).Add(30 * time.Minute)}, // 11 reported -> 12
	}, 10)
	countBuffer(t, m, first)
	clk.Set(h(13).Add(10 * time.Minute))
	if err := m.ReportClosed(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, r := range em.State().Records {
		got[r.Hour.Format("15:04")] = r.Quantity
	}
	// 09: 2 (carry .5); 11: 4.5 -> 4 (carry .5); 10: 3.5 -> 3 (carry .5),
	// 12: 5.5 -> 5 (carry .5). Intents are created hour by hour per pass.
	want := map[string]int64{"09:00": 2, "11:00": 4, "10:00": 3, "12:00": 5}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("quantities %v, want %v", got, want)
	}
	if len(em.State().Conflicts) != 0 {
		t.Errorf("conflicts %+v", em.State().Conflicts)
	}
	if s := m.Summary(); s.Carried != 2 {
		t.Errorf("carried %d, want 2 late hours", s.Carried)
	}
}

func TestReportZero(t *testing.T) {
	clk := newClock(testNow.Add(-2 * time.Hour)) // ledger created 10:30
	em, url := startEmulator(t, emulatorConfig(clk))
	cfg := meterConfig()
	cfg.ReportZero = true
	m := mustNew(t, cfg, testOptions(t.TempDir(), newClient(t, url, "AKIDPOD1"), clk))
	clk.Set(testNow)
	if err := m.ReportClosed(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, r := range em.State().Records {
		got[r.Dimension+"@"+r.Hour.Format("15:04")] = r.Quantity
	}
	want := map[string]int64{"api_calls@10:00": 0, "api_calls@11:00": 0, "storage_gb@10:00": 0, "storage_gb@11:00": 0}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("heartbeats %v, want %v", got, want)
	}
	clk.Set(testNow.Add(time.Hour))
	if err := m.ReportClosed(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if n := len(em.State().Records); n != 6 {
		t.Fatalf("%d records after another hour, want 6", n)
	}
}

func TestDryRun(t *testing.T) {
	clk := newClock(testNow)
	em, url := startEmulator(t, emulatorConfig(clk))
	recs, totals := testRecords(testNow.Add(-2*time.Hour).Truncate(time.Hour), testNow.Truncate(time.Hour), 10)
	cfg := meterConfig()
	cfg.DryRun = true
	m := mustNew(t, cfg, testOptions(t.TempDir(), newClient(t, url, "AKIDPOD1"), clk))
	countRecords(t, m, recs, 50)
	if err := m.ReportClosed(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	st := em.State()
	if len(st.Records) != 0 {
		t.Errorf("dry run recorded %d records", len(st.Records))
	}
	if st.Errors[emulator.CodeDryRunOperation] != len(totals) {
		t.Errorf("%d DryRunOperation answers, want %d", st.Errors[emulator.CodeDryRunOperation], len(totals))
	}
	if s := m.Summary(); s.DryRun != len(totals) || s.HoursReported != 0 {
		t.Errorf("summary %+v", s)
	}
	if err := m.ReportClosed(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if em.State().Requests[emulator.OpMeterUsage] != st.Requests[emulator.OpMeterUsage] {
		t.Error("dry-run hours were sent again")
	}
}

func TestConflictIsRecordedNotRetried(t *testing.T) {
	clk := newClock(testNow)
	em, url := startEmulator(t, emulatorConfig(clk))
	client := newClient(t, url, "AKIDPOD1")
	hour := testNow.Add(-2 * time.Hour).Truncate(time.Hour)
	// Someone (a lost ledger, another agent with this identity) already
	// reported 999 for api_calls at 10:00.
	if _, err := client.MeterUsage(ctxT(t), &mm.MeterUsageInput{
		ProductCode: aws.String(testProduct), Timestamp: aws.Time(hour),
		UsageDimension: aws.String("api_calls"), UsageQuantity: aws.Int32(999),
	}); err != nil {
		t.Fatal(err)
	}
	bufDir := t.TempDir()
	writeBuffer(t, bufDir, []rec{
		{customer: "c", api: "api-calls", nanos: 7 * nanosPerUnit, at: hour.Add(time.Minute)},
		{customer: "c", api: "api-calls", nanos: 8 * nanosPerUnit, at: hour.Add(time.Hour + time.Minute)},
	}, 10)
	m := mustNew(t, meterConfig(), testOptions(t.TempDir(), client, clk))
	countBuffer(t, m, bufDir)
	if err := m.ReportClosed(ctxT(t)); err != nil {
		t.Fatalf("a conflict is not a reporting failure: %v", err)
	}
	st := em.State()
	if len(st.Conflicts) != 1 || st.Conflicts[0].AttemptedQuantity != 7 || st.Conflicts[0].RecordedQuantity != 999 {
		t.Fatalf("conflicts %+v", st.Conflicts)
	}
	if s := m.Summary(); s.Conflicts != 1 || s.HoursReported != 1 || s.Quantities["api_calls"] != 8 {
		t.Errorf("summary %+v", s)
	}
	if v := metricValue(m.metrics.hoursConflicted); v != 1 {
		t.Errorf("hours_conflicted_total = %v", v)
	}
	if err := m.ReportClosed(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got := em.State(); got.Requests[emulator.OpMeterUsage] != st.Requests[emulator.OpMeterUsage] {
		t.Error("the conflicting hour was sent again")
	}
}

func TestThrottlingAndInternalErrorsAreRetried(t *testing.T) {
	clk := newClock(testNow)
	em, url := startEmulator(t, emulatorConfig(clk))
	recs, totals := testRecords(testNow.Add(-3*time.Hour).Truncate(time.Hour), testNow.Truncate(time.Hour), 10)
	m := podMeter(t, t.TempDir(), url, clk)
	countRecords(t, m, recs, 50)
	// More faults than the SDK's own three attempts absorb.
	em.InjectFaults(emulator.Faults{Throttle: 8, Internal: 5})
	if err := m.ReportClosed(ctxT(t)); err != nil {
		t.Fatalf("ReportClosed: %v", err)
	}
	st := em.State()
	checkExactlyOnce(t, st, expectedQuantities(totals))
	if st.Errors[emulator.CodeThrottling] != 8 || st.Errors[emulator.CodeInternalServiceError] != 5 {
		t.Errorf("errors %v", st.Errors)
	}
	if v := metricValue(m.metrics.reportErrors); v < 1 {
		t.Errorf("report_errors_total = %v: the SDK absorbed every fault, the reporter's retry was not exercised", v)
	}
}

func TestPermanentErrorKeepsTheIntent(t *testing.T) {
	clk := newClock(testNow)
	em, url := startEmulator(t, emulatorConfig(clk))
	dir := t.TempDir()
	recs, totals := testRecords(testNow.Add(-2*time.Hour).Truncate(time.Hour), testNow.Truncate(time.Hour), 10)
	m := podMeter(t, dir, url, clk)
	countRecords(t, m, recs, 50)
	em.InjectFaults(emulator.Faults{DisabledAPI: true})
	if err := m.ReportClosed(ctxT(t)); !errors.Is(err, ErrNotReported) {
		t.Fatalf("ReportClosed with the API disabled: %v, want ErrNotReported", err)
	}
	if s := m.Summary(); s.Pending != len(totals) {
		t.Errorf("%d pending, want %d", s.Pending, len(totals))
	}
	em.InjectFaults(emulator.Faults{})
	m2 := podMeter(t, dir, url, clk)
	if err := m2.ReportClosed(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, em.State(), expectedQuantities(totals))
}

func TestAgentDownPastTheWindow(t *testing.T) {
	clk := newClock(testNow)
	em, url := startEmulator(t, emulatorConfig(clk))
	// The agent was down 8 h: records from 04:00 to 11:59 arrive at 12:30.
	recs, totals := testRecords(testNow.Add(-8*time.Hour).Truncate(time.Hour), testNow.Truncate(time.Hour), 6)
	opts := testOptions(t.TempDir(), newClient(t, url, "AKIDPOD1"), clk)
	core, logs := observer.New(zap.WarnLevel)
	opts.Logger = zap.New(core)
	m := mustNew(t, meterConfig(), opts)
	countRecords(t, m, recs, 20)
	if err := m.ReportClosed(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	st := em.State()
	oldest := hourTime(oldestAt(testNow, 6*time.Hour))
	// One line per dimension, not one per hour.
	carried := logs.FilterMessageSnippet("past the reporting window").All()
	if len(carried) != 2 {
		t.Errorf("%d carry log lines, want one per dimension: %v", len(carried), carried)
	}
	for _, e := range carried {
		f := e.ContextMap()
		if f["hours"] != int64(4) || !f["from"].(time.Time).Equal(testNow.Add(-8*time.Hour).Truncate(time.Hour)) ||
			!f["through"].(time.Time).Equal(testNow.Add(-5*time.Hour).Truncate(time.Hour)) || !f["to"].(time.Time).Equal(oldest) {
			t.Errorf("carry log fields %v", f)
		}
	}
	sent := map[string]int64{}
	for _, r := range st.Records {
		if r.Hour.Before(oldest) {
			t.Errorf("hour %s sent, older than the oldest reportable %s", r.Hour.Format("15:04"), oldest.Format("15:04"))
		}
		sent[r.Dimension] += r.Quantity
	}
	if st.Errors[emulator.CodeTimestampOutOfBounds] != 0 {
		t.Errorf("%d TimestampOutOfBounds", st.Errors[emulator.CodeTimestampOutOfBounds])
	}
	input := map[string]int64{}
	for k, n := range totals {
		input[k.dimension] += n
	}
	m.mu.Lock()
	for _, s := range m.led.series {
		sent[s.key.dimension] = sent[s.key.dimension]*nanosPerUnit + s.carry
	}
	m.mu.Unlock()
	for d, n := range input {
		if sent[d] != n {
			t.Errorf("%s: reported + carry = %d nanos, input %d", d, sent[d], n)
		}
	}
	if s := m.Summary(); s.Carried != 2*4 {
		t.Errorf("carried %d hours, want 2 dimensions x 4 hours (04..07)", s.Carried)
	}
	if v := metricValue(m.metrics.hoursCarried); v != 8 {
		t.Errorf("hours_carried_total = %v", v)
	}
}

func TestExpiredIntentMovesToTheOldestReportableHour(t *testing.T) {
	clk := newClock(testNow)
	em, url := startEmulator(t, emulatorConfig(clk))
	dir := t.TempDir()
	recs, totals := testRecords(testNow.Add(-3*time.Hour).Truncate(time.Hour), testNow.Truncate(time.Hour), 8)
	m := podMeter(t, dir, url, clk)
	countRecords(t, m, recs, 50)
	// AWS refuses everything for 6 hours: the intents age out.
	em.InjectFaults(emulator.Faults{DisabledAPI: true})
	if err := m.ReportClosed(ctxT(t)); !errors.Is(err, ErrNotReported) {
		t.Fatalf("%v", err)
	}
	em.InjectFaults(emulator.Faults{})
	clk.Set(testNow.Add(6 * time.Hour))
	if err := m.ReportClosed(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	st := em.State()
	if st.Errors[emulator.CodeTimestampOutOfBounds] != 0 {
		t.Errorf("expired intents were sent: %v", st.Errors)
	}
	oldest := hourTime(oldestAt(clk.Now(), 6*time.Hour))
	var sent, input int64
	for _, r := range st.Records {
		if !r.Hour.Equal(oldest) {
			t.Errorf("record for %s, want everything in %s", r.Hour.Format("15:04"), oldest.Format("15:04"))
		}
		sent += r.Quantity
	}
	var carry int64
	m.mu.Lock()
	for _, s := range m.led.series {
		carry += s.carry
	}
	m.mu.Unlock()
	for _, n := range totals {
		input += n
	}
	if sent*nanosPerUnit+carry != input {
		t.Errorf("sent %d units + carry %d nanos, input %d nanos", sent, carry, input)
	}
}

func TestEmulatorDownThenBack(t *testing.T) {
	clk := newClock(testNow)
	em := emulator.New(emulatorConfig(clk))
	srv := serveOn(t, "127.0.0.1:0", em)
	addr := srv.addr
	url := "http://" + addr
	recs, totals := testRecords(testNow.Add(-3*time.Hour).Truncate(time.Hour), testNow.Truncate(time.Hour), 10)
	opts := testOptions(t.TempDir(), newClient(t, url, "AKIDPOD1"), clk)
	failures := make(chan error, 100)
	opts.onRetry = func(err error) {
		select {
		case failures <- err:
		default:
		}
	}
	m := mustNew(t, meterConfig(), opts)
	countRecords(t, m, recs, 50)
	srv.close()

	done := make(chan error, 1)
	go func() { done <- m.ReportClosed(ctxT(t)) }()
	for range 3 {
		select {
		case <-failures:
		case err := <-done:
			t.Fatalf("ReportClosed returned while the endpoint was down: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("no retry while the endpoint was down")
		}
	}
	if n := len(em.State().Records); n != 0 {
		t.Fatalf("%d records while down", n)
	}
	serveOn(t, addr, em)
	if err := <-done; err != nil {
		t.Fatalf("ReportClosed after the endpoint came back: %v", err)
	}
	checkExactlyOnce(t, em.State(), expectedQuantities(totals))
}

func TestRunReportsAsHoursClose(t *testing.T) {
	clk := newClock(testNow)
	em, url := startEmulator(t, emulatorConfig(clk))
	recs, totals := testRecords(testNow.Add(-2*time.Hour).Truncate(time.Hour), testNow.Truncate(time.Hour), 5)
	opts := testOptions(t.TempDir(), newClient(t, url, "AKIDPOD1"), clk)
	opts.Tick = 5 * time.Millisecond
	m := mustNew(t, meterConfig(), opts)
	countRecords(t, m, recs, 50)
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for len(em.State().Records) < len(totals) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkExactlyOnce(t, em.State(), expectedQuantities(totals))
}

func TestNewClientUsesTheDefaultChainAndEndpoint(t *testing.T) {
	clk := newClock(testNow)
	em, url := startEmulator(t, emulatorConfig(clk))
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	cfg := meterConfig()
	cfg.Endpoint = url
	client, err := NewClient(ctxT(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	hour := testNow.Add(-time.Hour).Truncate(time.Hour)
	if _, err := client.MeterUsage(ctxT(t), &mm.MeterUsageInput{
		ProductCode: aws.String(testProduct), Timestamp: aws.Time(hour),
		UsageDimension: aws.String("api_calls"), UsageQuantity: aws.Int32(1),
	}); err != nil {
		t.Fatal(err)
	}
	if st := em.State(); len(st.Records) != 1 || st.Records[0].Instance != "AKIDFROMENV" {
		t.Fatalf("records %+v", st.Records)
	}
	if c, ok := client.Options().HTTPClient.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

func TestConcurrentCountAndReport(t *testing.T) {
	clk := newClock(testNow)
	em, url := startEmulator(t, emulatorConfig(clk))
	bufDir := t.TempDir()
	from := testNow.Add(-4 * time.Hour).Truncate(time.Hour)
	recs, totals := testRecords(from, testNow.Truncate(time.Hour), 30)
	writeBuffer(t, bufDir, recs, 6)
	buf, err := buffer.Open(buffer.Options{Dir: bufDir, AgentID: "agent-1", Sync: buffer.SyncNever})
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	var counting atomic.Bool
	counting.Store(true)
	opts := testOptions(t.TempDir(), newClient(t, url, "AKIDPOD1"), clk)
	opts.Live = segmentLive(bufDir)
	// Until every segment is counted, the oldest uncounted record is from
	// the first hour: nothing closes.
	opts.Pending = func() (int64, bool) { return from.UnixMilli(), counting.Load() }
	m := mustNew(t, meterConfig(), opts)

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	workCtx, allCounted := context.WithCancel(ctxT(t))
	defer allCounted()
	for range 2 {
		wg.Go(func() {
			for {
				seg, err := buf.Next(workCtx)
				if errors.Is(err, context.Canceled) {
					return
				}
				if err != nil {
					errs <- err
					return
				}
				if err := m.Count(workCtx, seg); err != nil {
					errs <- err
					return
				}
				if err := buf.Ack(seg); err != nil {
					errs <- err
					return
				}
				if buf.Stats().SegmentsSealed == 0 {
					allCounted()
				}
			}
		})
	}
	stop := make(chan struct{})
	reported := make(chan error, 1)
	go func() {
		for {
			if err := m.ReportClosed(ctxT(t)); err != nil {
				reported <- err
				return
			}
			select {
			case <-stop:
				reported <- nil
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	wg.Wait()
	close(stop)
	if err := <-reported; err != nil {
		t.Fatal(err)
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := len(em.State().Records); n != 0 {
		t.Fatalf("%d records reported while segments were uncounted", n)
	}
	counting.Store(false)
	if err := m.ReportClosed(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, em.State(), expectedQuantities(totals))
}
