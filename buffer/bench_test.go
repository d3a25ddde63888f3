package buffer

import (
	"context"
	"errors"
	"sync"
	"testing"
)

const benchBatchRecords = 1000

// benchRecord is a typical ~140-byte Amberflo meter record line.
var benchRecord = []byte(`{"customerId":"cust-0042","meterApiName":"api-calls","meterValue":1,"meterTimeInMillis":1717761600000,"uniqueId":"c1f0a2b4d6e8f0a2"}`)

// fillBatch rebuilds batch as the producers do: Reset, records, checkpoint.
func fillBatch(batch *Batch, n int) {
	batch.Reset()
	batch.SetTag("app")
	for i := range benchBatchRecords {
		batch.AddRecord(1717761600000+int64(i), benchRecord)
	}
	batch.SetCheckpoint("/var/log/app/meter.log", int64(n), nil)
}

// ackAll consumes and acks sealed segments until the returned stop is
// called, keeping the buffer from filling up.
func ackAll(b *Buffer) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			seg, err := b.Next(ctx)
			if err != nil {
				return
			}
			if err := b.Ack(seg); err != nil && !errors.Is(err, ErrClosed) {
				panic(err)
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}

func BenchmarkWrite(b *testing.B) {
	for _, bc := range []struct {
		name    string
		sync    SyncPolicy
		writers int
	}{
		{"SyncAlways", SyncAlways, 1},
		{"SyncNever", SyncNever, 1},
		{"SyncAlways/writers=4", SyncAlways, 4},
	} {
		b.Run(bc.name, func(b *testing.B) {
			buf, err := Open(Options{Dir: b.TempDir(), Sync: bc.sync})
			if err != nil {
				b.Fatal(err)
			}
			stop := ackAll(buf)
			var batch Batch
			fillBatch(&batch, 0)
			b.SetBytes(int64(batch.Size()))
			b.ReportAllocs()
			b.ResetTimer()
			if bc.writers == 1 {
				for n := range b.N {
					fillBatch(&batch, n)
					if err := buf.Write(&batch); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				b.SetParallelism(bc.writers) // writers x GOMAXPROCS goroutines
				b.RunParallel(func(pb *testing.PB) {
					var batch Batch
					for n := 0; pb.Next(); n++ {
						fillBatch(&batch, n)
						if err := buf.Write(&batch); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)*benchBatchRecords/b.Elapsed().Seconds(), "records/s")
			s := buf.Stats()
			b.ReportMetric(float64(s.Writes)/float64(max(s.Syncs, 1)), "writes/fsync")
			stop()
			if err := buf.Close(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

func BenchmarkFrames(b *testing.B) {
	buf, err := Open(Options{Dir: b.TempDir(), SegmentSize: 8 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer buf.Close()
	var batch Batch
	for n := 0; buf.Stats().ActiveBytes < 8<<20-int64(2*benchBatchRecords*len(benchRecord)); n++ {
		fillBatch(&batch, n)
		if err := buf.Write(&batch); err != nil {
			b.Fatal(err)
		}
	}
	if err := buf.Seal(); err != nil {
		b.Fatal(err)
	}
	seg, err := buf.Next(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(seg.Size)
	b.ReportAllocs()
	b.ResetTimer()
	records := 0
	for range b.N {
		if err := seg.Frames(func(f Frame) error {
			records++
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if records != b.N*seg.Records {
		b.Fatalf("iterated %d records, want %d", records, b.N*seg.Records)
	}
	b.ReportMetric(float64(records)/b.Elapsed().Seconds(), "records/s")
}
