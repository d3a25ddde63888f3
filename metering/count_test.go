package metering

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/metership/metership/buffer"
)

func TestScannerLayouts(t *testing.T) {
	at := testNow.Add(-2 * time.Hour)
	ms := at.UnixMilli()
	lines := []string{
		// canonical
		fmt.Sprintf(`{"customerId":"c1","meterApiName":"api","meterValue":1.5,"meterTimeInMillis":%d,"dimensions":{"env":"prod","lic":"arn:l","team":"a"},"uniqueId":"u1"}`, ms),
		// escaped customer and tag value: the slow path unescapes
		fmt.Sprintf(`{"customerId":"c\u0031","meterApiName":"api","meterValue":1.5,"meterTimeInMillis":%d,"dimensions":{"env":"prod","lic":"arn:l","team":"\u0061"},"uniqueId":"u2"}`, ms),
		// another order, whitespace, exponent
		fmt.Sprintf(`{ "meterApiName": "api", "customerId": "c1", "meterValue": 15e-1, "dimensions": {"team": "a", "lic": "arn:l", "env": "prod"}, "meterTimeInMillis": %d }`, ms),
		// no dimensions at all
		fmt.Sprintf(`{"customerId":"c1","meterApiName":"api","meterValue":2,"meterTimeInMillis":%d,"uniqueId":"u4"}`, ms),
		// empty tag value counts as absent
		fmt.Sprintf(`{"customerId":"c1","meterApiName":"api","meterValue":2,"meterTimeInMillis":%d,"dimensions":{"team":""},"uniqueId":"u5"}`, ms),
		// unusable values
		fmt.Sprintf(`{"customerId":"c1","meterApiName":"api","meterValue":"7","meterTimeInMillis":%d,"uniqueId":"u6"}`, ms),
		fmt.Sprintf(`{"customerId":"c1","meterApiName":"api","meterValue":-1,"meterTimeInMillis":%d,"uniqueId":"u7"}`, ms),
		`not json`,
	}
	sc := newScanner([]string{"team", "env"}, "lic", true)
	for _, l := range lines {
		sc.add(ms, []byte(l))
	}
	if sc.invalid != 3 {
		t.Errorf("invalid = %d, want 3", sc.invalid)
	}
	type got struct {
		customer, license, team, env string
		present                      uint8
		nanos                        string
		records                      int64
	}
	var entries []got
	for _, e := range sc.entries {
		if e.hour != floorHour(at) || e.api != "api" {
			t.Errorf("entry hour %d api %q", e.hour, e.api)
		}
		entries = append(entries, got{e.customer, e.license, e.tags[0], e.tags[1], e.present, e.nanos.Big().String(), e.records})
	}
	want := []got{
		{"c1", "arn:l", "a", "prod", 3, "4500000000", 3},
		{"c1", "", "", "", 0, "4000000000", 2},
	}
	if fmt.Sprint(entries) != fmt.Sprint(want) {
		t.Errorf("entries\n got %v\nwant %v", entries, want)
	}
}

func TestScannerAllocatesNothingPerRecord(t *testing.T) {
	sc := newScanner([]string{"team", "env"}, "", false)
	line := rec{customer: "c1", api: "api-calls", nanos: 1_250_000_000, at: testNow, dims: map[string]string{"team": "a", "env": "prod", "zone": "z1"}}.line()
	ms := testNow.UnixMilli()
	sc.add(ms, line)
	if n := testing.AllocsPerRun(1000, func() { sc.add(ms, line) }); n != 0 {
		t.Fatalf("scanner.add allocates %.1f times per record", n)
	}
	if sc.entries[0].records != 1002 {
		t.Fatalf("records = %d", sc.entries[0].records)
	}
}

// ledgerOpen returns the open usage per (customer, dimension, hour), and
// records, summed over buckets.
func ledgerOpen(m *Meter) (map[hourlyKey]int64, int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[hourlyKey]int64{}
	var records int64
	for _, s := range m.led.series {
		for h, bs := range s.open {
			for _, b := range bs {
				out[hourlyKey{s.key.customer, s.key.dimension, hourTime(h)}] += b.Nanos
				records += b.Records
			}
		}
	}
	return out, records
}

// testRecords spreads records over hours [from, to) with decimal values,
// three teams (one record in five without a team) and two meters.
func testRecords(from, to time.Time, perHour int) ([]rec, map[hourlyKey]int64) {
	var recs []rec
	totals := map[hourlyKey]int64{}
	i := 0
	for h := from; h.Before(to); h = h.Add(time.Hour) {
		for j := range perHour {
			i++
			r := rec{customer: "cust", at: h.Add(time.Duration(j) * time.Hour / time.Duration(perHour))}
			if i%3 == 0 {
				r.api = "storage"
				r.nanos = int64(i%7+1) * 137_000_000_000 // 137.0 .. 959.0 -> x0.001
				totals[hourlyKey{"", "storage_gb", h}] += r.nanos / 1000
			} else {
				r.api = "api-calls"
				r.nanos = int64(i%5+1) * 300_000_000 // 0.3 .. 1.5
				totals[hourlyKey{"", "api_calls", h}] += r.nanos
			}
			if i%5 != 0 {
				r.dims = map[string]string{"team": fmt.Sprintf("team-%d", i%3), "zone": "z"}
			}
			recs = append(recs, r)
		}
	}
	return recs, totals
}

func TestCountRealSegments(t *testing.T) {
	bufDir := t.TempDir()
	recs, totals := testRecords(testNow.Add(-4*time.Hour).Truncate(time.Hour), testNow.Truncate(time.Hour).Add(time.Hour), 40)
	recs = append(recs,
		rec{customer: "cust", api: "unmapped-meter", nanos: 5 * nanosPerUnit, at: testNow},
		rec{customer: "cust", api: "unmapped-meter", nanos: 5 * nanosPerUnit, at: testNow},
	)
	writeBuffer(t, bufDir, recs, 37)
	clk := newClock(testNow)
	m := mustNew(t, meterConfig(), testOptions(t.TempDir(), noAPI{}, clk))
	if n := countBuffer(t, m, bufDir); n < 5 {
		t.Fatalf("only %d segments", n)
	}
	got, records := ledgerOpen(m)
	if fmt.Sprint(got) != fmt.Sprint(totals) {
		t.Errorf("ledger\n got %v\nwant %v", got, totals)
	}
	if records != int64(len(recs)-2) {
		t.Errorf("ledger holds %d records, want %d", records, len(recs)-2)
	}
	sum := m.Summary()
	if sum.RecordsCounted != int64(len(recs)-2) || sum.RecordsUnmapped != 2 {
		t.Errorf("summary counted %d unmapped %d", sum.RecordsCounted, sum.RecordsUnmapped)
	}
	if v := metricValue(m.metrics.recordsUnmapped); v != 2 {
		t.Errorf("records_unmapped_total = %v", v)
	}
}

// noAPI is an API that must not be called.
type noAPI struct{ API }

func TestCountIsIdempotentPerSegmentAcrossReopen(t *testing.T) {
	bufDir, dir := t.TempDir(), t.TempDir()
	recs, totals := testRecords(testNow.Add(-3*time.Hour).Truncate(time.Hour), testNow.Truncate(time.Hour), 30)
	writeBuffer(t, bufDir, recs, 25)
	clk := newClock(testNow)

	buf, err := buffer.Open(buffer.Options{Dir: bufDir, AgentID: "agent-1", Sync: buffer.SyncNever})
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	var segs []*buffer.Segment
	for buf.Stats().SegmentsPending > 0 {
		seg, err := buf.Next(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		segs = append(segs, seg)
	}
	m := mustNew(t, meterConfig(), testOptions(dir, noAPI{}, clk))
	for _, seg := range segs[:len(segs)/2] {
		if err := m.Count(ctxT(t), seg); err != nil {
			t.Fatal(err)
		}
	}
	before, err := os.ReadFile(filepath.Join(dir, ledgerName))
	if err != nil {
		t.Fatal(err)
	}

	// A restart: the segments were never acked, so the pipeline counts all
	// of them again.
	m2 := mustNew(t, meterConfig(), testOptions(dir, noAPI{}, clk))
	for _, seg := range segs[:len(segs)/2] {
		if !m2.Counted(seg.Seq) {
			t.Fatalf("segment %d not counted after reopen", seg.Seq)
		}
		if err := m2.Count(ctxT(t), seg); err != nil {
			t.Fatal(err)
		}
	}
	after, _ := os.ReadFile(filepath.Join(dir, ledgerName))
	if !bytes.Equal(before, after) {
		t.Fatal("counting already counted segments changed the ledger")
	}
	for _, seg := range segs {
		if err := m2.Count(ctxT(t), seg); err != nil {
			t.Fatal(err)
		}
	}
	got, records := ledgerOpen(m2)
	if fmt.Sprint(got) != fmt.Sprint(totals) || records != int64(len(recs)) {
		t.Errorf("ledger after recount\n got %v (%d records)\nwant %v (%d records)", got, records, totals, len(recs))
	}
	var secondHalf int64
	for _, seg := range segs[len(segs)/2:] {
		secondHalf += int64(seg.Records)
	}
	if s := m2.Summary(); s.RecordsCounted != secondHalf {
		t.Errorf("reopened meter counted %d records, want only the %d of the new segments", s.RecordsCounted, secondHalf)
	}
}

func TestCountPrunesAckedSegments(t *testing.T) {
	bufDir, dir := t.TempDir(), t.TempDir()
	recs, _ := testRecords(testNow.Add(-2*time.Hour).Truncate(time.Hour), testNow.Truncate(time.Hour), 10)
	writeBuffer(t, bufDir, recs, 4)
	opts := testOptions(dir, noAPI{}, newClock(testNow))
	opts.Live = segmentLive(bufDir)
	m := mustNew(t, meterConfig(), opts)
	n := countBuffer(t, m, bufDir)
	m.mu.Lock()
	counted := len(m.led.counted)
	m.mu.Unlock()
	// Each Count prunes the segments acked before it: only the last
	// counted one can still be listed.
	if n < 3 || counted > 1 {
		t.Fatalf("%d segments counted, %d still listed", n, counted)
	}
}

func TestNewRefusesACorruptLedger(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(testNow)
	mustNew(t, meterConfig(), testOptions(dir, noAPI{}, clk))
	p := filepath.Join(dir, ledgerName)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	data[10] ^= 0x20
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(meterConfig(), testOptions(dir, noAPI{}, clk)); !errors.Is(err, ErrCorruptLedger) {
		t.Fatalf("New on a damaged ledger: %v, want ErrCorruptLedger", err)
	}
}

func TestCountContextCanceled(t *testing.T) {
	bufDir := t.TempDir()
	recs, _ := testRecords(testNow.Add(-time.Hour).Truncate(time.Hour), testNow.Truncate(time.Hour), 3)
	writeBuffer(t, bufDir, recs, 10)
	buf, err := buffer.Open(buffer.Options{Dir: bufDir, AgentID: "agent-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	seg, err := buf.Next(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	m := mustNew(t, meterConfig(), testOptions(t.TempDir(), noAPI{}, newClock(testNow)))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.Count(ctx, seg); !errors.Is(err, context.Canceled) {
		t.Fatalf("Count with a canceled context: %v", err)
	}
	if m.Counted(seg.Seq) {
		t.Fatal("segment counted although Count failed")
	}
}

// mergeSegments merges every segment of a buffer directory into m, in
// memory, without acknowledging any; it returns their sequences.
func mergeSegments(t *testing.T, m *Meter, dir string) []uint64 {
	t.Helper()
	buf, err := buffer.Open(buffer.Options{Dir: dir, AgentID: "agent-1", Sync: buffer.SyncNever})
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	var seqs []uint64
	for buf.Stats().SegmentsPending > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		seg, err := buf.Next(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		c := m.BeginCount(seg.Seq)
		if err := seg.Frames(func(f buffer.Frame) error { c.Add(f); return nil }); err != nil {
			t.Fatal(err)
		}
		if err := c.Merge(context.Background()); err != nil {
			t.Fatal(err)
		}
		c.Close()
		seqs = append(seqs, seg.Seq)
	}
	return seqs
}

// Merged counts are durable only after Sync, and all of them together: a
// meter opened on the ledger before the Sync (a restart after a crash)
// sees none of them and counts the segments once; after it, all of them,
// and counting a segment again adds nothing.
func TestMergeDurableAfterSync(t *testing.T) {
	bufDir, dir := t.TempDir(), t.TempDir()
	recs, totals := testRecords(testNow.Add(-3*time.Hour).Truncate(time.Hour), testNow.Truncate(time.Hour), 20)
	writeBuffer(t, bufDir, recs, 9)
	clk := newClock(testNow)
	m := mustNew(t, meterConfig(), testOptions(dir, noAPI{}, clk))
	seqs := mergeSegments(t, m, bufDir)
	if len(seqs) < 3 {
		t.Fatalf("only %d segments", len(seqs))
	}
	for _, seq := range seqs {
		if !m.Counted(seq) {
			t.Fatalf("segment %d merged but not Counted", seq)
		}
	}
	if got, _ := ledgerOpen(m); fmt.Sprint(got) != fmt.Sprint(totals) {
		t.Fatalf("in memory\n got %v\nwant %v", got, totals)
	}

	crashed := mustNew(t, meterConfig(), testOptions(dir, noAPI{}, clk))
	for _, seq := range seqs {
		if crashed.Counted(seq) {
			t.Fatalf("segment %d counted on disk before Sync", seq)
		}
	}
	if got, records := ledgerOpen(crashed); records != 0 {
		t.Fatalf("ledger on disk before Sync holds %d records: %v", records, got)
	}

	if err := m.Sync(); err != nil {
		t.Fatal(err)
	}
	restarted := mustNew(t, meterConfig(), testOptions(dir, noAPI{}, clk))
	for _, seq := range seqs {
		if !restarted.Counted(seq) {
			t.Fatalf("segment %d not counted on disk after Sync", seq)
		}
	}
	mergeSegments(t, restarted, bufDir) // the segments were never acknowledged
	if err := restarted.Sync(); err != nil {
		t.Fatal(err)
	}
	got, records := ledgerOpen(restarted)
	if records != int64(len(recs)) || fmt.Sprint(got) != fmt.Sprint(totals) {
		t.Fatalf("after counting again: %d records\n got %v\nwant %v", records, got, totals)
	}
}
