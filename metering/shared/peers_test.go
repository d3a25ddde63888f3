package shared

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	mm "github.com/aws/aws-sdk-go-v2/service/marketplacemetering"
	"github.com/aws/aws-sdk-go-v2/service/marketplacemetering/types"

	"github.com/metership/metership/metering"
)

// A replica whose heartbeat stopped without a clean Stop is counted in
// replicas_stalled by the others (the alert on it), one that stopped
// cleanly with nothing unwritten is not, a live one counts in
// replicas_live, and one gone longer than the lookback is forgotten.
func TestReplicaWhoseHeartbeatStopped(t *testing.T) {
	w := newWorld(t)
	stateDir := filepath.Join(t.TempDir(), "state")
	w.state = "file://" + stateDir
	a := w.agent("pod-a", tempDir(t, "a"))
	b := w.agent("pod-b", tempDir(t, "b"))
	ctx := context.Background()
	step := func(agents ...*Agent) {
		t.Helper()
		for _, ag := range agents {
			if err := ag.Step(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	// age makes pod-b's heartbeat look written d ago (the state's clock is
	// the file's modification time, as S3's LastModified).
	age := func(d time.Duration) {
		t.Helper()
		old := time.Now().Add(-d)
		if err := os.Chtimes(filepath.Join(stateDir, heartbeatKey("pod-b")), old, old); err != nil {
			t.Fatal(err)
		}
	}
	want := func(live, stalled int) {
		t.Helper()
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.liveReplicas != live || a.stalledReplicas != stalled {
			t.Fatalf("replicas_live %d, replicas_stalled %d; want %d, %d", a.liveReplicas, a.stalledReplicas, live, stalled)
		}
	}
	step(b, a) // a's first Step watches the heartbeats
	want(2, 0)
	// Later ones do every 5 ticks; the test watches at once.
	watch := func() {
		t.Helper()
		if err := a.watchPeers(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// pod-b dies: its heartbeat gets older than 3 ticks.
	age(10 * time.Minute)
	watch()
	want(1, 1)

	// pod-b comes back and stops cleanly, nothing left unwritten.
	step(b)
	if err := b.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile(filepath.Join(stateDir, heartbeatKey("pod-b")))
	if err != nil {
		t.Fatal(err)
	}
	if hb, err := decode[Heartbeat](body, heartbeatFormat); err != nil || !hb.Stopped {
		t.Fatalf("heartbeat after Stop: %s %v", body, err)
	}
	age(10 * time.Minute)
	watch()
	want(1, 0)

	// A stale heartbeat that does not say stopped, older than the lookback.
	b2 := w.agent("pod-b", tempDir(t, "b2"))
	step(b2)
	age(b2.cfg.Window + lookbackExtra + time.Hour)
	watch()
	want(1, 0)
	age(time.Hour)
	watch()
	want(1, 1)
}

// Stop with usage not yet written leaves the heartbeat as it was: that
// replica must come back, and the others count it stalled meanwhile.
func TestStopWithUnwrittenUsageIsNotClean(t *testing.T) {
	w := newWorld(t)
	a := w.agent("pod-a", tempDir(t, "a"))
	// Usage of the open hour (12:00 at testNow), handed but not closed.
	if err := a.Hand(context.Background(), hr(12), []metering.HourUsage{usage(hr(12), "c1", "api_calls", 5e9, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := a.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := a.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	stopped := a.stopped
	a.mu.Unlock()
	if stopped {
		t.Fatal("Stop marked a replica with unwritten usage stopped")
	}
}

// A claimed record AWS answers DuplicateRecord for (another sender got a
// different quantity in first) is counted in records_conflicted_total,
// the metric the conflict alert reads in replica mode.
func TestConflictCounted(t *testing.T) {
	w := newWorld(t)
	w.clk.Set(hr(11).Add(10 * time.Minute))
	a := w.agent("pod-a", tempDir(t, "a"))
	w.clk.Set(hr(12).Add(6 * time.Minute))
	other, tr := mmClient(w.emURL, "AKIDOTHER")
	defer tr.CloseIdleConnections()
	out, err := other.BatchMeterUsage(context.Background(), &mm.BatchMeterUsageInput{ProductCode: aws.String(testProduct),
		UsageRecords: []types.UsageRecord{{CustomerIdentifier: aws.String("c1"), Dimension: aws.String("api_calls"), Quantity: aws.Int32(99), Timestamp: aws.Time(hr(11))}}})
	if err != nil || len(out.Results) != 1 || out.Results[0].Status != types.UsageRecordResultStatusSuccess {
		t.Fatalf("the other sender's record: %+v %v", out, err)
	}
	if err := a.Hand(context.Background(), hr(12), []metering.HourUsage{usage(hr(11), "c1", "api_calls", 3e9, 3)}); err != nil {
		t.Fatal(err)
	}
	steps(t, 1, a)
	a.mu.Lock()
	n := a.conflicts
	a.mu.Unlock()
	if n != 1 {
		t.Fatalf("records_conflicted_total = %d, want 1", n)
	}
}
