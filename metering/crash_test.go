//go:build unix

package metering

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mm "github.com/aws/aws-sdk-go-v2/service/marketplacemetering"

	"github.com/metership/metership/buffer"
	"github.com/metership/metership/metering/emulator"
)

// Environment of a crash child (besides childEnv, the scenario).
const (
	envLedgerDir = "METERSHIP_METERING_DIR"
	envBufferDir = "METERSHIP_METERING_BUFFER"
	envURL       = "METERSHIP_METERING_URL"
	envNow       = "METERSHIP_METERING_NOW"
	envCrashAt   = "METERSHIP_METERING_CRASH_AT" // point:n, SIGKILL at the n-th hit
)

// runChild is the body of a re-executed test binary: it counts a buffer
// or reports a ledger like the agent does, and SIGKILLs itself at the
// configured crash point. Reaching the end without crashing exits 3, which
// the parent treats as a failure.
func runChild() int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	now, err := time.Parse(time.RFC3339, os.Getenv(envNow))
	if err != nil {
		return fail(err)
	}
	point, nth, _ := strings.Cut(os.Getenv(envCrashAt), ":")
	n, err := strconv.Atoi(nth)
	if err != nil {
		return fail(err)
	}
	var hits atomic.Int32
	client, tr := buildClient(os.Getenv(envURL), "AKIDPOD1")
	defer tr.CloseIdleConnections()
	opts := testOptions(os.Getenv(envLedgerDir), client, newClock(now))
	// Answers are written only when the pass ends, however slow the
	// machine, so what a crash loses does not depend on timing.
	opts.answerSaveEvery = time.Hour
	opts.crashPoint = func(p string) {
		if p != point {
			return
		}
		if hits.Add(1) == int32(n) {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
	m, err := New(meterConfig(), opts)
	if err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	switch os.Getenv(childEnv) {
	case "count":
		if _, err := countAndAck(ctx, m, os.Getenv(envBufferDir)); err != nil {
			return fail(err)
		}
	case "report":
		if err := m.ReportClosed(ctx); err != nil {
			return fail(err)
		}
	default:
		return fail(errors.New("unknown scenario"))
	}
	return 3
}

// countAndAck counts and acks every sealed segment of the buffer in dir.
func countAndAck(ctx context.Context, m *Meter, dir string) (int, error) {
	buf, err := buffer.Open(buffer.Options{Dir: dir, AgentID: "agent-1", Sync: buffer.SyncNever})
	if err != nil {
		return 0, err
	}
	defer buf.Close()
	n := 0
	for buf.Stats().SegmentsPending > 0 {
		seg, err := buf.Next(ctx)
		if err != nil {
			return n, err
		}
		if err := m.Count(ctx, seg); err != nil {
			return n, err
		}
		if err := buf.Ack(seg); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// runCrashChild re-executes the test binary as a child that must die of
// SIGKILL at crashAt.
func runCrashChild(t *testing.T, scenario, crashAt, ledgerDir, bufferDir, url string, now time.Time) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		childEnv+"="+scenario,
		envLedgerDir+"="+ledgerDir,
		envBufferDir+"="+bufferDir,
		envURL+"="+url,
		envNow+"="+now.Format(time.RFC3339),
		envCrashAt+"="+crashAt,
	)
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		t.Fatalf("child %s at %s: %v\n%s", scenario, crashAt, err, out)
	}
	ws, ok := exitErr.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child %s at %s did not die of SIGKILL: %v\n%s", scenario, crashAt, err, out)
	}
}

// checkExactlyOnce asserts the emulator accepted exactly the expected
// quantity once per (dimension, hour), with no conflict of any kind.
func checkExactlyOnce(t *testing.T, st emulator.State, want map[hourlyKey]int64) {
	t.Helper()
	got := accepted(t, st)
	if len(got) != len(want) {
		t.Errorf("%d records accepted, want %d", len(got), len(want))
	}
	for k, q := range want {
		r, ok := got[k]
		if !ok {
			t.Errorf("no record for %s %s", k.dimension, k.hour.Format("15:04"))
			continue
		}
		if r.Quantity != q {
			t.Errorf("%s %s: quantity %d, want %d", k.dimension, k.hour.Format("15:04"), r.Quantity, q)
		}
		var sum int64
		for _, a := range r.Allocations {
			sum += a.Quantity
		}
		if r.Allocations != nil && sum != r.Quantity {
			t.Errorf("%s %s: allocations sum to %d, quantity %d", k.dimension, k.hour.Format("15:04"), sum, r.Quantity)
		}
	}
	if len(st.Conflicts) != 0 {
		t.Errorf("conflicts: %+v", st.Conflicts)
	}
	for _, code := range []string{emulator.CodeDuplicateRequest, emulator.CodeIdempotencyConflict, emulator.CodeTimestampOutOfBounds} {
		if st.Errors[code] != 0 {
			t.Errorf("%d %s", st.Errors[code], code)
		}
	}
}

func TestCrashBetweenCallAndLedgerWrite(t *testing.T) {
	from, to := testNow.Add(-4*time.Hour).Truncate(time.Hour), testNow.Truncate(time.Hour)
	recs, totals := testRecords(from, to, 12)
	// Records for 08:00 that are counted after the crash, before the
	// restart reports: once 08:00 has an intent they belong to the next
	// open hour, and must never change what is re-sent for 08:00.
	lateAt := from.Add(40 * time.Minute)
	late := []rec{
		{customer: "cust", api: "api-calls", nanos: 1_700_000_000, at: lateAt, uid: "late-1"},
		{customer: "cust", api: "api-calls", nanos: 1_700_000_000, at: lateAt, uid: "late-2"},
	}
	// Answers are written when a pass ends (or each second), and calls
	// run concurrently, so a crash repeats every call made since the last
	// write: identical calls, which AWS answers idempotently. The restart
	// sends every intent once more; the first pass got at least minBefore
	// calls out (more may have been in flight when it died).
	const all = -1 // every intent
	tests := []struct {
		crashAt   string
		minBefore int  // calls the first pass made, at least
		durable   bool // the intents reached the disk before the crash
	}{
		{"intents-saved:1", 0, true},          // intents persisted, nothing sent
		{"after-call:1", 1, true},             // first call answered, answer not written
		{"after-call:5", 5, true},             // five answered, none written
		{"ledger-before-rename:1", 0, false},  // the intents' write never landed
		{"ledger-before-rename:2", all, true}, // the answers' write never landed
	}
	for _, tt := range tests {
		t.Run(tt.crashAt, func(t *testing.T) {
			clk := newClock(testNow)
			em, url := startEmulator(t, emulatorConfig(clk))
			bufDir, dir := t.TempDir(), t.TempDir()
			writeBuffer(t, bufDir, recs, 20)
			countBuffer(t, mustNew(t, meterConfig(), testOptions(dir, noAPI{}, clk)), bufDir)

			runCrashChild(t, "report", tt.crashAt, dir, "", url, testNow)
			// The restarted meter's calls are counted at the client: a call
			// of the dead child may still reach the emulator meanwhile.
			restarted := &countingAPI{API: newClient(t, url, "AKIDPOD1")}
			m := mustNew(t, meterConfig(), testOptions(dir, restarted, clk))
			writeBuffer(t, bufDir, late, 10)
			countBuffer(t, m, bufDir)
			if err := m.ReportClosed(ctxT(t)); err != nil {
				t.Fatalf("ReportClosed after the crash: %v", err)
			}
			withLate := maps.Clone(totals)
			lateKey := hourlyKey{"", "api_calls", from}
			if !tt.durable {
				withLate[lateKey] += 3_400_000_000
			}
			want := expectedQuantities(withLate)
			st := em.State()
			checkExactlyOnce(t, st, want)
			minBefore := tt.minBefore
			if minBefore == all {
				minBefore = len(want)
			}
			after := int(restarted.meterUsage.Load())
			if before := st.Requests[emulator.OpMeterUsage] - after; before < minBefore || before > len(want) || after != len(want) {
				t.Errorf("MeterUsage calls: %d before the restart, %d after; want %d..%d before, %d after", before, after, minBefore, len(want), len(want))
			}
			open, _ := ledgerOpen(m)
			wantOpen := map[hourlyKey]int64{}
			if tt.durable {
				wantOpen[hourlyKey{"", "api_calls", to}] = 3_400_000_000
			}
			if fmt.Sprint(open) != fmt.Sprint(wantOpen) {
				t.Errorf("open usage %v, want %v", open, wantOpen)
			}
			if err := m.ReportClosed(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			if calls := em.State().Requests[emulator.OpMeterUsage]; calls != st.Requests[emulator.OpMeterUsage] {
				t.Errorf("a pass with nothing new made %d calls", calls-st.Requests[emulator.OpMeterUsage])
			}
		})
	}
}

func TestCrashDuringCounting(t *testing.T) {
	from, to := testNow.Add(-4*time.Hour).Truncate(time.Hour), testNow.Truncate(time.Hour)
	recs, totals := testRecords(from, to, 15)
	want := expectedQuantities(totals)
	// Creating the ledger is the first write, so the n-th Count writes at
	// hit n+1 of ledger-before-rename.
	for _, crashAt := range []string{"count-scanned:3", "ledger-before-rename:4", "count-saved:3"} {
		t.Run(crashAt, func(t *testing.T) {
			clk := newClock(testNow)
			em, url := startEmulator(t, emulatorConfig(clk))
			bufDir, dir := t.TempDir(), t.TempDir()
			writeBuffer(t, bufDir, recs, 7)

			runCrashChild(t, "count", crashAt, dir, bufDir, url, testNow)

			m := podMeter(t, dir, url, clk)
			if _, err := countAndAck(ctxT(t), m, bufDir); err != nil {
				t.Fatal(err)
			}
			got, records := ledgerOpen(m)
			if records != int64(len(recs)) {
				t.Errorf("ledger holds %d records, want %d", records, len(recs))
			}
			if fmt.Sprint(got) != fmt.Sprint(totals) {
				t.Errorf("ledger\n got %v\nwant %v", got, totals)
			}
			if err := m.ReportClosed(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			checkExactlyOnce(t, em.State(), want)
		})
	}
}

// countingAPI counts the MeterUsage calls made through it.
type countingAPI struct {
	API
	meterUsage atomic.Int32
}

func (c *countingAPI) MeterUsage(ctx context.Context, in *mm.MeterUsageInput, optFns ...func(*mm.Options)) (*mm.MeterUsageOutput, error) {
	c.meterUsage.Add(1)
	return c.API.MeterUsage(ctx, in, optFns...)
}
