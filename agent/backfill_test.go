package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/metership/metership/internal/testutil/s3server"
)

// writeBackfill writes n meter records spread evenly over days UTC days
// from 2000-01-02, in time order (a backfill of history), or with
// scattered, days in no order, and returns the records' signatures ->
// count.
func writeBackfill(tb testing.TB, path string, n, days int, scattered bool) map[string]int {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	start := time.Date(2000, 1, 2, 0, 0, 0, 0, time.UTC).UnixMilli()
	step := int64(days) * 86_400_000 / int64(n)
	want := make(map[string]int, n)
	for i := 0; i < n; i++ {
		ts := start + int64(i)*step
		if scattered {
			// Day (i*7919) mod days, a prime stride: consecutive records
			// land on far-apart days and each day recurs throughout.
			ts = start + int64(i*7919%days)*86_400_000 + int64(i)
		}
		fmt.Fprintf(w, `{"customerId":"customer-%04d","meterApiName":"api-%d","meterValue":%d.5,"meterTimeInMillis":%d,"dimensions":{"team":"t%d"}}`+"\n",
			i%1000, i%10, i, ts, i%5)
		want[fmt.Sprintf("customer-%04d/%d.5/%d", i%1000, i, ts)]++
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return want
}

// A backfill over many days in one `ship`: each segment holds hundreds of
// key partitions (one per day), far more than the encoder keeps open at
// once; in time order each is finished early, scattered most also recur
// and are appended to after the pass. Every record must arrive once, in
// an object of its own day.
func TestShipBackfillManyDays(t *testing.T) {
	// 64 KiB segments (s3Config) hold ~450 records: in time order ~225
	// days each; scattered, most of the days, each recurring.
	t.Run("ordered", func(t *testing.T) { testBackfill(t, 3000, 1500, false) })
	t.Run("scattered", func(t *testing.T) { testBackfill(t, 1200, 300, true) })
}

func testBackfill(t *testing.T, records, days int, scattered bool) {
	srv := s3server.Start(t)
	dir := t.TempDir()
	input := filepath.Join(dir, "backfill.ndjson")
	want := writeBackfill(t, input, records, days, scattered)
	shipInto(t, srv, filepath.Join(dir, "buf"), input)

	got := readBucket(t, srv)
	if !scattered && len(got.records) != days {
		t.Errorf("%d record objects, want one per day: %d", len(got.records), days)
	}
	byID := checkRecordObjects(t, got) // each record in the object of its day
	if len(byID) != records {
		t.Fatalf("bucket holds %d records, want %d", len(byID), records)
	}
	seen := map[string]int{}
	for _, r := range byID {
		seen[signature(r)]++
	}
	for sig, n := range want {
		if seen[sig] != n {
			t.Fatalf("record %s arrived %d times, want %d", sig, seen[sig], n)
		}
	}
}

// BenchmarkShipBackfill ships 90,000 records spread over 9,000 days (a
// 12 MB input, ~4,500 key partitions per 8 MiB segment) to versitygw with
// the real binary and default settings, reporting wall time, CPU seconds
// and the process's peak RSS: the encoder's memory must not grow with the
// number of partitions (target < 64 MB).
func BenchmarkShipBackfill(b *testing.B) {
	srv := s3server.Start(b)
	dir := b.TempDir()
	input := filepath.Join(dir, "backfill.ndjson")
	const records, days = 90_000, 9_000
	writeBackfill(b, input, records, days, false)
	st, err := os.Stat(input)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(st.Size())
	b.ResetTimer()
	var wall, cpu time.Duration
	var rss int64
	for i := 0; i < b.N; i++ {
		cfgPath := filepath.Join(dir, fmt.Sprintf("m%d.yaml", i))
		cfg := fmt.Sprintf("buffer:\n  dir: %s\noutput:\n  url: s3://%s/backfill%d\n  endpoint: %s\n  force_path_style: true\nlog:\n  level: warn\n",
			filepath.Join(dir, fmt.Sprintf("buf%d", i)), srv.Bucket(), i, srv.Endpoint())
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			b.Fatal(err)
		}
		cmd := agentCmd(srv, "ship", "-c", cfgPath, input)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		syscall.Sync()
		start := time.Now()
		if err := cmd.Run(); err != nil {
			b.Fatalf("ship: %v\n%s", err, out.String())
		}
		wall += time.Since(start)
		if !strings.Contains(out.String(), "status:             complete") {
			b.Fatalf("ship incomplete:\n%s", out.String())
		}
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		cpu += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		rss = max(rss, ru.Maxrss*1024)
	}
	b.ReportMetric(float64(records)*float64(b.N)/wall.Seconds(), "records/s")
	b.ReportMetric(wall.Seconds()/float64(b.N), "wall-s/op")
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
	b.ReportMetric(float64(rss)/(1<<20), "peak-rss-MB")
}
