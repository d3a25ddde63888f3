package tail

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// discardSink counts lines and signals when it has seen want of them.
type discardSink struct {
	lines atomic.Int64
	want  int64
	done  chan struct{}
}

func (s *discardSink) Consume(_ context.Context, c *Chunk) error {
	if s.lines.Add(int64(len(c.Lines))) == s.want && len(c.Lines) > 0 {
		close(s.done)
	}
	return nil
}

// BenchmarkTailMillionLines reads a 1,000,000-line file (about 100 MB)
// from the start into a discarding sink; each op is one whole file.
func BenchmarkTailMillionLines(b *testing.B) {
	const lines = 1_000_000
	path := filepath.Join(b.TempDir(), "bench.log")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for i := range lines {
		fmt.Fprintf(w, `{"customerId":"c-%04d","meterApiName":"api-calls","meterValue":1,"meterTimeInMillis":%d}`+"\n", i%1000, 1700000000000+int64(i))
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(fi.Size())
	b.ReportAllocs()
	b.ResetTimer()
	var elapsed time.Duration
	for range b.N {
		sink := &discardSink{want: lines, done: make(chan struct{})}
		opts := Options{Paths: []string{path}, DisableNotify: true}
		tl, err := New(opts, sink)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		start := time.Now()
		go func() { errc <- tl.Run(ctx) }()
		<-sink.done
		elapsed += time.Since(start)
		cancel()
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(lines)*float64(b.N)/elapsed.Seconds(), "lines/s")
}
