package export_test

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metership/metership/export"
)

// TestSchedule drives the scheduler with an injected clock: a cron job
// fires when due (once per firing), scheduledTimeInSeconds fires once, a
// disabled job never runs, and a deleted job stops.
func TestSchedule(t *testing.T) {
	cfg := fileConfig(t)
	out := t.TempDir()
	mail := &mailbox{}
	e := newEnv(t, cfg, t0, export.Options{Mailer: mail})
	base := func(name string) map[string]any {
		return map[string]any{"jobName": name, "s3Url": "file://" + out, "format": "ndjson", "aggregationBucket": "hour", "range": "ago(2h)"}
	}
	cronJob := base("Hourly")
	cronJob["cron"] = "0 * * * *"
	cronJob["email"] = "ops@example.com"
	hourly := e.create(cronJob)

	once := base("Once")
	once["scheduledTimeInSeconds"] = t0.Add(90 * time.Minute).Unix()
	oneOff := e.create(once)

	disabled := base("Disabled")
	disabled["cron"] = "* * * * *"
	disabled["enabled"] = false
	off := e.create(disabled)

	// 10:20 -> 10:50: nothing is due yet.
	e.clock.Set(t0.Add(30 * time.Minute))
	if n := e.tick(); n != 0 {
		t.Fatalf("10:50: %d runs, want 0", n)
	}
	// 11:00:30: the cron job fires for 11:00, once.
	e.clock.Set(time.Date(2026, 11, 20, 11, 0, 30, 0, time.UTC))
	if n := e.tick(); n != 1 {
		t.Fatalf("11:00:30: %d runs, want 1", n)
	}
	if n := e.tick(); n != 0 {
		t.Fatalf("11:00:30 again: %d runs, want 0", n)
	}
	lr := e.get(hourly.ID).LastRun
	if lr == nil || lr.ScheduledTime != time.Date(2026, 11, 20, 11, 0, 0, 0, time.UTC).Unix() || lr.Result != export.ResultSuccess {
		t.Fatalf("cron lastRun: %+v", lr)
	}
	if !strings.HasSuffix(lr.Key, "Hourly/20261120T090000Z_20261120T110000Z.ndjson") {
		t.Fatalf("cron key: %s", lr.Key)
	}
	// 11:50: the one-off (due 11:50) fires; the cron job is not due.
	e.clock.Set(t0.Add(90 * time.Minute))
	if n := e.tick(); n != 1 {
		t.Fatalf("11:50: %d runs, want 1", n)
	}
	if lr := e.get(oneOff.ID).LastRun; lr == nil || lr.ScheduledTime != t0.Add(90*time.Minute).Unix() {
		t.Fatalf("one-off lastRun: %+v", lr)
	}
	// 12:00 and 13:00: the cron job fires each hour, the one-off never again.
	for _, h := range []int{12, 13} {
		e.clock.Set(time.Date(2026, 11, 20, h, 0, 0, 0, time.UTC))
		if n := e.tick(); n != 1 {
			t.Fatalf("%d:00: %d runs, want 1", h, n)
		}
	}
	if lr := e.get(oneOff.ID).LastRun; lr.ScheduledTime != t0.Add(90*time.Minute).Unix() {
		t.Fatalf("one-off ran again: %+v", lr)
	}
	// Deleted: the cron job stops.
	if st, _ := e.do("DELETE", "/jobs/"+hourly.ID, nil, nil); st != 204 {
		t.Fatal("delete")
	}
	e.clock.Set(time.Date(2026, 11, 20, 16, 0, 0, 0, time.UTC))
	if n := e.tick(); n != 0 {
		t.Fatalf("after delete: %d runs, want 0", n)
	}
	if lr := e.get(off.ID).LastRun; lr != nil {
		t.Fatalf("disabled job ran: %+v", lr)
	}
	// Every run wrote its own object; the disabled job none.
	var names []string
	_ = filepath.WalkDir(out, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasSuffix(p, ".manifest.json") {
			rel, _ := filepath.Rel(out, p)
			names = append(names, rel)
		}
		return nil
	})
	sort.Strings(names)
	want := []string{
		"Hourly/20261120T090000Z_20261120T110000Z.ndjson",
		"Hourly/20261120T100000Z_20261120T120000Z.ndjson",
		"Hourly/20261120T110000Z_20261120T130000Z.ndjson",
		"Once/20261120T090000Z_20261120T120000Z.ndjson",
	}
	if strings.Join(names, "\n") != strings.Join(want, "\n") {
		t.Fatalf("objects:\n%s\nwant:\n%s", strings.Join(names, "\n"), strings.Join(want, "\n"))
	}
	// Each run of the emailed job was mailed.
	if got := mail.sent(); len(got) != 3 || !strings.Contains(got[0], "Hourly") {
		t.Fatalf("mail: %q", got)
	}
}

// TestRunNowOnce: a job with no schedule runs once, at the next tick.
func TestRunNowOnce(t *testing.T) {
	e := newEnv(t, fileConfig(t), t0, exportOptions())
	j := e.create(map[string]any{"jobName": "Now", "s3Url": "file://" + t.TempDir(), "format": "csv", "aggregationBucket": "day", "range": "ago(1d)"})
	if n := e.tick(); n != 1 {
		t.Fatalf("first tick: %d", n)
	}
	e.clock.Set(t0.Add(48 * time.Hour))
	if n := e.tick(); n != 0 {
		t.Fatalf("second tick: %d", n)
	}
	if lr := e.get(j.ID).LastRun; lr == nil || lr.Result != export.ResultSuccess || lr.ScheduledTime != t0.Unix() {
		t.Fatalf("lastRun: %+v", lr)
	}
}

// TestFailedOneOffRetries: a one-off whose destination cannot be written
// fails, is recorded and counted, and is retried after RetryAfter.
func TestFailedOneOffRetries(t *testing.T) {
	e := newEnv(t, fileConfig(t), t0, exportOptions())
	blocker := filepath.Join(t.TempDir(), "file")
	writeFile(t, blocker, []byte("x"))
	j := e.create(map[string]any{"jobName": "Broken", "s3Url": "file://" + blocker + "/sub", "format": "csv", "aggregationBucket": "day", "range": "ago(1d)"})
	if n := e.tick(); n != 1 {
		t.Fatalf("tick: %d", n)
	}
	lr := e.get(j.ID).LastRun
	if lr == nil || lr.Result != export.ResultFailure || lr.Error == "" {
		t.Fatalf("lastRun: %+v", lr)
	}
	if n := e.tick(); n != 0 {
		t.Fatalf("retried at once: %d", n)
	}
	e.clock.Set(t0.Add(2 * time.Minute))
	if n := e.tick(); n != 1 {
		t.Fatalf("not retried after RetryAfter: %d", n)
	}
}

type mailbox struct {
	mu   sync.Mutex
	msgs []string
}

func (m *mailbox) Send(ctx context.Context, to, subject, body string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.msgs = append(m.msgs, to+"|"+subject+"|"+body)
	return nil
}

func (m *mailbox) sent() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.msgs...)
}

// TestFailedCronRetriesOnNextSchedule: a failed cron firing is retried
// (same window) at the next firing, then the missed firing follows.
func TestFailedCronRetriesOnNextSchedule(t *testing.T) {
	e := newEnv(t, fileConfig(t), t0, exportOptions())
	dir := t.TempDir()
	blocker := filepath.Join(dir, "out")
	writeFile(t, blocker, []byte("x")) // a file where the export's directory goes
	j := e.create(map[string]any{"jobName": "Flaky", "s3Url": "file://" + blocker, "format": "csv",
		"aggregationBucket": "hour", "range": "ago(1h)", "cron": "0 * * * *"})
	at := func(h int) time.Time { return time.Date(2026, 11, 20, h, 0, 0, 0, time.UTC) }
	e.clock.Set(at(11))
	if n := e.tick(); n != 1 {
		t.Fatalf("11:00: %d runs", n)
	}
	if lr := e.get(j.ID).LastRun; lr.Result != export.ResultFailure || lr.ScheduledTime != at(11).Unix() {
		t.Fatalf("11:00 run: %+v", lr)
	}
	e.clock.Set(at(11).Add(30 * time.Minute))
	if n := e.tick(); n != 0 {
		t.Fatalf("11:30: %d runs, want 0 (retry waits for the next firing)", n)
	}
	if err := os.Remove(blocker); err != nil { // the destination is fixed
		t.Fatal(err)
	}
	e.clock.Set(at(12))
	if n := e.tick(); n != 1 {
		t.Fatalf("12:00: %d runs", n)
	}
	if lr := e.get(j.ID).LastRun; lr.Result != export.ResultSuccess || lr.ScheduledTime != at(11).Unix() {
		t.Fatalf("12:00 retry: %+v", lr)
	}
	if n := e.tick(); n != 1 {
		t.Fatalf("12:00 catch-up: %d runs", n)
	}
	if lr := e.get(j.ID).LastRun; lr.Result != export.ResultSuccess || lr.ScheduledTime != at(12).Unix() {
		t.Fatalf("12:00 firing: %+v", lr)
	}
}
