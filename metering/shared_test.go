package metering

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// handRecorder is a SharedState that keeps what it was handed, like
// metering/shared's journal: once per usage ID.
type handRecorder struct {
	mu    sync.Mutex
	calls [][]HourUsage
	byID  map[string]HourUsage
	cut   time.Time
	fail  error
}

func (r *handRecorder) Hand(_ context.Context, cut time.Time, usage []HourUsage) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.calls = append(r.calls, usage)
	for _, u := range usage {
		if r.byID == nil {
			r.byID = map[string]HourUsage{}
		}
		if old, ok := r.byID[u.ID]; ok && !sameUsage(old, u) {
			panic("usage " + u.ID + " handed again with different contents")
		}
		r.byID[u.ID] = u
	}
	r.cut = cut
	return nil
}

func sameUsage(a, b HourUsage) bool {
	if a.Hour != b.Hour || a.Customer != b.Customer || a.Dimension != b.Dimension || len(a.Buckets) != len(b.Buckets) {
		return false
	}
	for i := range a.Buckets {
		if a.Buckets[i].Nanos != b.Buckets[i].Nanos || a.Buckets[i].Records != b.Buckets[i].Records || BucketKey(a.Buckets[i].Tags) != BucketKey(b.Buckets[i].Tags) {
			return false
		}
	}
	return true
}

// errCrash stands for the process dying at a crash point.
var errCrash = errors.New("crash")

// With Options.Shared, closed hours go to the SharedState with their
// exact usage (no rounding, no call to AWS), each key and hour once; a
// crash after the hand-over and before the ledger records it hands the
// same usage again, unchanged, and nothing more after.
func TestSharedHandOverSurvivesCrash(t *testing.T) {
	clk := newClock(testNow)
	_, url := startEmulator(t, emulatorConfig(clk))
	dir := t.TempDir()
	shared := &handRecorder{}
	opts := testOptions(dir, newClient(t, url, "AKIDPOD1"), clk)
	opts.Shared = shared
	crashAt := "after-hand"
	opts.crashPoint = func(p string) {
		if p == crashAt {
			panic(errCrash)
		}
	}
	cfg := batchConfig()
	m := mustNew(t, cfg, opts)
	recs := []rec{
		{customer: "123456789012", api: "seats", nanos: 1_500_000_000, at: testNow.Add(-3 * time.Hour)},
		{customer: "123456789012", api: "seats", nanos: 250_000_000, at: testNow.Add(-3 * time.Hour), dims: map[string]string{"team": "a"}},
		{customer: "210987654321", api: "storage", nanos: 3_000_000_000, at: testNow.Add(-2 * time.Hour)},
		{customer: "123456789012", api: "seats", nanos: 700_000_000, at: testNow}, // open hour
	}
	countRecords(t, m, recs, 2)
	func() {
		defer func() {
			if r := recover(); r != errCrash { //nolint:errorlint // the panic value itself, never wrapped
				t.Fatalf("no crash at %s: %v", crashAt, r)
			}
		}()
		_ = m.ReportClosed(context.Background())
	}()
	first := shared.calls[0]
	if len(first) != 2 {
		t.Fatalf("handed %d keys, want 2: %+v", len(first), first)
	}
	// Restart: the ledger still has the intents pending.
	crashAt = ""
	m = mustNew(t, cfg, opts)
	if err := m.ReportClosed(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(shared.calls) != 2 || len(shared.calls[1]) != 2 {
		t.Fatalf("after the restart: %d calls, last %+v", len(shared.calls), shared.calls[len(shared.calls)-1])
	}
	if err := m.ReportClosed(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(shared.calls[2]); n != 0 {
		t.Fatalf("handed %d again after the ledger recorded the hand-over", n)
	}
	var seats, storage int64
	for _, u := range shared.byID {
		for _, b := range u.Buckets {
			if u.Dimension == "users" {
				seats += b.Nanos
			} else {
				storage += b.Nanos
			}
		}
	}
	if seats != 1_750_000_000 || storage != 3_000_000_000 {
		t.Fatalf("handed seats %d, storage %d nanos", seats, storage)
	}
	if !shared.cut.Equal(testNow.Truncate(time.Hour)) {
		t.Fatalf("closed before %v", shared.cut)
	}
	if s := m.Summary(); s.HoursReported != 0 || s.Pending != 1 {
		t.Fatalf("summary %+v: nothing reported to AWS by this agent, the open hour pending", s)
	}
}

// meter_usage is per pod: a SharedState is refused there.
func TestSharedNeedsBatchMode(t *testing.T) {
	clk := newClock(testNow)
	opts := testOptions(t.TempDir(), newClient(t, "http://127.0.0.1:1", "AKIDPOD1"), clk)
	opts.Shared = &handRecorder{}
	if _, err := New(meterConfig(), opts); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("New: %v", err)
	}
}
