package ship

import (
	"fmt"
	"testing"

	"github.com/metership/metership/buffer"
)

// benchSegment builds about size bytes of ~140-byte meter records spread
// over one UTC day, as a sealed 8 MiB segment holds them.
func benchSegment(size int) (segment, int) {
	var seg segment
	total := 0
	for i := 0; total < size; i++ {
		at := ts + int64(i)*37
		data := fmt.Sprintf(`{"customerId":"customer-%04d","meterApiName":"api-calls","meterValue":%d,"meterTimeInMillis":%d,"uniqueId":"src-%08x"}`,
			i%1000, i%50, at, i)
		seg = append(seg, buffer.Frame{Type: buffer.FrameRecord, Time: at, Tag: "app.meter", Data: []byte(data)})
		total += len(data)
	}
	return seg, total
}

// directSource yields frames without copying, so the benchmark measures
// the encoder only.
type directSource []buffer.Frame

func (s directSource) Frames(fn func(buffer.Frame) error) error {
	for _, f := range s {
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

func BenchmarkEncode(b *testing.B) {
	seg, size := benchSegment(8 << 20)
	for _, bc := range []struct {
		name string
		opts EncoderOptions
	}{
		{"gzip-1", EncoderOptions{}},
		{"gzip-6", EncoderOptions{GzipLevel: 6}},
		{"none", EncoderOptions{Compression: CompressionNone}},
		{"gzip-1-json", EncoderOptions{Format: FormatJSON}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e := mustEncoder(b, bc.opts)
			src := directSource(seg)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			var compressed int
			for b.Loop() {
				objs, err := e.Encode("agent", 1, src)
				if err != nil {
					b.Fatal(err)
				}
				compressed = len(objs[0].Body)
				e.Release(objs)
			}
			b.ReportMetric(float64(len(seg))*float64(b.N)/b.Elapsed().Seconds(), "records/s")
			b.ReportMetric(float64(size)/float64(compressed), "ratio")
		})
	}
}

func BenchmarkPartition(b *testing.B) {
	k := mustKey(b, "ingest/amberdata", DefaultKeyFormat)
	b.ReportAllocs()
	var i int64
	for b.Loop() {
		k.Partition(ts+i, "app.meter")
		i++
	}
}
