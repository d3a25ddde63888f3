package fluentbit

import (
	"strconv"
	"testing"

	fb "github.com/metership/metership/fluentbit/fbtest"
)

const benchRecords = 1000

// BenchmarkFlush measures 1,000-record chunks of typical meter records:
// the msgpack decode alone, decode plus parse/validate/append into the
// batch (what must reach 1,000,000 records/s per core), and whole flushes
// including the durable commit with buffer_sync never and always. The
// flush benchmarks ship to a file:// output in the background, as in
// production.
func BenchmarkFlush(b *testing.B) {
	chunk := fb.MeterChunk(0, benchRecords)
	report := func(b *testing.B) {
		b.ReportMetric(float64(b.N)*benchRecords/b.Elapsed().Seconds(), "records/s")
	}

	b.Run("decode", func(b *testing.B) {
		var d decoder
		b.SetBytes(int64(len(chunk)))
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			d.reset(chunk)
			for d.more() {
				if _, err := d.nextEvent(); err != nil {
					b.Fatal(err)
				}
			}
		}
		report(b)
	})

	b.Run("decode+append", func(b *testing.B) {
		x := benchInstance(b, "never")
		f, err := x.getFlusher()
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(chunk)))
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			f.in.SetTag("usage")
			f.load(chunk, "usage", 0, nil)
			if acc, rej := f.in.Counts(); acc != benchRecords || rej != 0 {
				b.Fatalf("accepted %d rejected %d", acc, rej)
			}
			f.in.Discard()
		}
		report(b)
	})

	for _, sync := range []string{"never", "always"} {
		b.Run("commit/sync="+sync, func(b *testing.B) {
			x := benchInstance(b, sync)
			// A tag per flush (cycling past what the instance remembers):
			// the same tag and bytes again would be a chunk Fluent Bit
			// re-sent, answered without appending.
			tags := make([]string, 4*maxDoneChunks)
			for i := range tags {
				tags[i] = "usage." + strconv.Itoa(i)
			}
			b.SetBytes(int64(len(chunk)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if rc := x.Flush(chunk, tags[i%len(tags)]); rc != FLBOK {
					b.Fatalf("Flush = %d", rc)
				}
			}
			report(b)
			b.StopTimer()
		})
	}
}

func benchInstance(b *testing.B, sync string) *Instance {
	b.Helper()
	out := testOutput{Root: b.TempDir()}
	x, err := NewInstance(props(map[string]string{
		"output_url":             out.URL(),
		"buffer_dir":             b.TempDir(),
		"buffer_sync":            sync,
		"buffer_max_size":        "4GiB",
		"buffer_segment_size":    "16MiB",
		"agent_shutdown_timeout": "60s",
		"log_level":              "error",
	}), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { x.Exit() })
	return x
}
