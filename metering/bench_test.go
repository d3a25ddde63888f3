package metering

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/metership/metership/buffer"
	"github.com/metership/metership/conf"
	"github.com/metership/metership/record"
)

// benchRecords is the counting load: 1,000,000 records across 24
// hours x 10 dimensions x 5 allocation tag values.
const benchRecords = 1_000_000

func benchConfig() conf.Metering {
	cfg := meterConfig()
	cfg.Dimensions = map[string]string{}
	for d := range 10 {
		cfg.Dimensions[fmt.Sprintf("meter-%d", d)] = fmt.Sprintf("dim_%d", d)
	}
	return cfg
}

// benchBuffer writes the load into a buffer with the default 8 MiB
// segments and returns the sealed segments, handed out and not acked.
func benchBuffer(b *testing.B) (*buffer.Buffer, []*buffer.Segment) {
	b.Helper()
	dir := b.TempDir()
	buf, err := buffer.Open(buffer.Options{Dir: dir, AgentID: "bench", Sync: buffer.SyncNever})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { buf.Close() })
	start := testNow.Add(-24 * time.Hour).Truncate(time.Hour)
	var batch buffer.Batch
	for i := range benchRecords {
		r := rec{
			customer: "customer-1",
			api:      fmt.Sprintf("meter-%d", i%10),
			nanos:    int64(i%1000+1) * 1_000_000,
			at:       start.Add(time.Duration(i) * 24 * time.Hour / benchRecords),
			dims:     map[string]string{"team": fmt.Sprintf("team-%d", i%5), "region": "eu-west-1"},
			uid:      fmt.Sprintf("0f8fad5b-d9cb-469f-a165-%012d", i),
		}
		batch.AddRecord(r.at.UnixMilli(), r.line())
		if batch.Records() == 1000 {
			if err := buf.Write(&batch); err != nil {
				b.Fatal(err)
			}
			batch.Reset()
		}
	}
	if err := buf.Write(&batch); err != nil {
		b.Fatal(err)
	}
	if err := buf.Seal(); err != nil {
		b.Fatal(err)
	}
	var segs []*buffer.Segment
	for buf.Stats().SegmentsPending > 0 {
		seg, err := buf.Next(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		segs = append(segs, seg)
	}
	return buf, segs
}

// BenchmarkCount counts the whole load, segment by segment, into a fresh
// ledger per iteration: reading the segments, scanning, merging and one
// atomic ledger write per segment, as the pipeline does.
func BenchmarkCount(b *testing.B) {
	_, segs := benchBuffer(b)
	var bytes int64
	for _, s := range segs {
		bytes += s.Size
	}
	clk := newClock(testNow)
	b.SetBytes(bytes)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		m := mustNew(b, benchConfig(), testOptions(b.TempDir(), noAPI{}, clk))
		b.StartTimer()
		for _, seg := range segs {
			if err := m.Count(context.Background(), seg); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		if s := m.Summary(); s.RecordsCounted != benchRecords {
			b.Fatalf("counted %d records", s.RecordsCounted)
		}
		b.StartTimer()
	}
	perOp := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(perOp*1e9/benchRecords, "ns/record")
	b.ReportMetric(benchRecords/perOp, "records/s")
	b.ReportMetric(float64(len(segs)), "segments")
}

// BenchmarkScan is the per-record hot path alone: parse a canonical record
// and add it to the segment's sums (no I/O, no ledger write).
func BenchmarkScan(b *testing.B) {
	lines, times := benchLines()
	sc := newScanner([]string{"team"}, "", false)
	b.SetBytes(int64(len(lines[0])))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		j := i % len(lines)
		sc.add(times[j], lines[j])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkCountAtIngest is what metering adds per record to ingest: the
// record parser's work alone ("parse"), then with the batch's sums taken
// from the fields it located ("parse+count"); the difference is the
// counting.
func BenchmarkCountAtIngest(b *testing.B) {
	lines, _ := benchLines()
	for _, count := range []bool{false, true} {
		name := "parse"
		if count {
			name = "parse+count"
		}
		b.Run(name, func(b *testing.B) {
			p, err := record.NewParser(record.Options{})
			if err != nil {
				b.Fatal(err)
			}
			m := mustNew(b, benchConfig(), testOptions(b.TempDir(), noAPI{}, newClock(testNow)))
			bc := m.NewBatchSums()
			var out []byte
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				line := lines[i%len(lines)]
				var ts int64
				out, ts, err = p.Parse(out[:0], line, record.Origin{})
				if err != nil {
					b.Fatal(err)
				}
				if !count {
					continue
				}
				loc, ok := p.Located()
				if !ok {
					b.Fatal("fast path not taken")
				}
				bc.Add(ts, loc, out)
				if i%10000 == 9999 {
					bc.Reset()
				}
			}
		})
	}
}

// benchLines are 1000 canonical records over a day, 10 meters and 5 teams,
// and their times.
func benchLines() ([][]byte, []int64) {
	lines := make([][]byte, 1000)
	times := make([]int64, len(lines))
	start := testNow.Add(-24 * time.Hour).Truncate(time.Hour)
	for i := range lines {
		at := start.Add(time.Duration(i) * 24 * time.Hour / time.Duration(len(lines)))
		lines[i] = rec{customer: "customer-1", api: fmt.Sprintf("meter-%d", i%10), nanos: int64(i%1000+1) * 1_000_000, at: at,
			dims: map[string]string{"team": fmt.Sprintf("team-%d", i%5), "region": "eu-west-1"},
			uid:  fmt.Sprintf("0f8fad5b-d9cb-469f-a165-%012d", i)}.line()
		times[i] = at.UnixMilli()
	}
	return lines, times
}
