package export

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
)

// benchNow ends the benchmark's shipped data: five days before it.
var benchNow = time.Date(2026, 12, 3, 10, 20, 0, 0, time.UTC)

// writeShipped writes n canonical meter records, five days of them, as
// gzipped NDJSON objects under the default dated keys in dir
// (what output.url file://dir holds after shipping them); 100,000
// records an object, 200 customers x 4 regions x 2 meters.
func writeShipped(tb testing.TB, dir string, n int) int64 {
	tb.Helper()
	const perObject = 100_000
	span := int64(5 * 24 * time.Hour / time.Millisecond)
	start := benchNow.UnixMilli() - span
	regions := []string{"eu-west-1", "us-east-1", "ap-south-1", "sa-east-1"}
	var raw int64
	var line []byte
	for obj := 0; obj*perObject < n; obj++ {
		// Objects hold consecutive times, as a shipper's segments do.
		first := start + span*int64(obj*perObject)/int64(n)
		day := time.UnixMilli(first).UTC().Format("01-02-2006")
		path := filepath.Join(dir, day, fmt.Sprintf("%08d.gz", obj))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			tb.Fatal(err)
		}
		f, err := os.Create(path)
		if err != nil {
			tb.Fatal(err)
		}
		zw := gzip.NewWriter(f)
		bw := bufio.NewWriterSize(zw, 1<<20)
		for i := obj * perObject; i < min(n, (obj+1)*perObject); i++ {
			ms := start + span*int64(i)/int64(n)
			if time.UnixMilli(ms).UTC().Format("01-02-2006") != day {
				ms = first // keep the object in its partition
			}
			line = append(line[:0], `{"customerId":"customer-`...)
			line = strconv.AppendInt(line, int64(i%200), 10)
			line = append(line, `","meterApiName":"`...)
			if i%2 == 0 {
				line = append(line, "api_calls"...)
			} else {
				line = append(line, "storage_gb"...)
			}
			line = append(line, `","meterValue":`...)
			line = strconv.AppendInt(line, int64(i%97), 10)
			line = append(line, '.')
			line = strconv.AppendInt(line, int64(100+i%900), 10)
			line = append(line, `,"meterTimeInMillis":`...)
			line = strconv.AppendInt(line, ms, 10)
			line = append(line, `,"dimensions":{"region":"`...)
			line = append(line, regions[i%4]...)
			line = append(line, `","tier":"gold"},"uniqueId":"`...)
			line = append(line, "e2b1c5d0-6f1a-5f0e-9d2a-"...)
			line = strconv.AppendInt(line, 100000000000+int64(i), 10)
			line = append(line, "\"}\n"...)
			raw += int64(len(line))
			if _, err := bw.Write(line); err != nil {
				tb.Fatal(err)
			}
		}
		if err := bw.Flush(); err != nil {
			tb.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			tb.Fatal(err)
		}
		if err := f.Close(); err != nil {
			tb.Fatal(err)
		}
	}
	return raw
}

// BenchmarkExport reads back 10,000,000 shipped records (about 1.4 GB of
// NDJSON, gzipped, from the page cache) and aggregates them by day,
// customerId and region: records/s with one worker (one core) and with
// GOMAXPROCS workers, and the process's peak RSS during the export
// (VmHWM, reset after the data is written), which depends on the number
// of groups, not of records. METERSHIP_BENCH_RECORDS changes the count.
func BenchmarkExport(b *testing.B) {
	n := 10_000_000
	if s := os.Getenv("METERSHIP_BENCH_RECORDS"); s != "" {
		fmt.Sscan(s, &n)
	}
	dir := b.TempDir()
	raw := writeShipped(b, dir, n)
	j := &Job{JobName: "bench", S3URL: "file:///dev/null", Format: "csv", AggregationBucket: "day", Range: "ago(6d)", GroupBy: []string{"customerId", "region"}}
	plan, err := NewPlan(j, benchNow)
	if err != nil {
		b.Fatal(err)
	}
	for _, workers := range []int{1, runtime.GOMAXPROCS(0)} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			r := &Runner{Source: &DirSource{Dir: dir}, KeyFormat: "%m-%d-%Y/$UUID.gz", Workers: workers}
			runtime.GC()
			resetPeakRSS()
			b.SetBytes(raw)
			b.ResetTimer()
			var groups int
			for range b.N {
				agg, _, err := r.Aggregate(context.Background(), plan)
				if err != nil {
					b.Fatal(err)
				}
				if agg.Records != int64(n) {
					b.Fatalf("aggregated %d records, want %d", agg.Records, n)
				}
				groups = len(agg.sums)
			}
			b.StopTimer()
			sec := b.Elapsed().Seconds() / float64(b.N)
			b.ReportMetric(float64(n)/sec, "records/s")
			b.ReportMetric(float64(n)/sec/float64(workers), "records/s/core")
			b.ReportMetric(float64(groups), "groups")
			if hwm := peakRSS(); hwm > 0 {
				b.ReportMetric(float64(hwm)/(1<<20), "peak-rss-MB")
			}
		})
	}
}

// resetPeakRSS resets the kernel's high-water mark of this process's RSS
// (Linux: "5" to /proc/self/clear_refs).
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSS is VmHWM in bytes, 0 if unknown.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
