package buffer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeClock is a settable Options.Now.
type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time { return c.t }

// testEpoch is the fixed time of deterministic test data.
var testEpoch = time.Date(2024, 6, 7, 12, 0, 0, 0, time.UTC)

func openT(t testing.TB, opts Options) *Buffer {
	t.Helper()
	b, err := Open(opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", opts.Dir, err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// record is the deterministic line of record i of batch n.
func record(n, i int) string { return fmt.Sprintf(`{"n":%d,"i":%d}`, n, i) }

// makeBatch builds batch n with count records, tag and a checkpoint
// source "src" at offset n.
func makeBatch(n, count int, tag string) *Batch {
	var b Batch
	b.SetTag(tag)
	for i := range count {
		b.AddRecord(testEpoch.UnixMilli()+int64(n*1000+i), []byte(record(n, i)))
	}
	b.SetCheckpoint("src", int64(n), []byte(fmt.Sprintf("meta-%d", n)))
	return &b
}

func mustWrite(t testing.TB, b *Buffer, batch *Batch) {
	t.Helper()
	if err := b.Write(batch); err != nil {
		t.Fatalf("Write: %v", err)
	}
}

// frameString renders a frame for exact comparisons.
func frameString(f Frame) string {
	return fmt.Sprintf("%c|%s|%d|%s", f.Type, f.Tag, f.Time, f.Data)
}

// segmentFrames renders every frame of seg.
func segmentFrames(t testing.TB, seg *Segment) []string {
	t.Helper()
	var out []string
	if err := seg.Frames(func(f Frame) error {
		out = append(out, frameString(f))
		return nil
	}); err != nil {
		t.Fatalf("Frames(%d): %v", seg.Seq, err)
	}
	return out
}

// takeAll hands out every pending sealed segment (lowest seq first) and
// returns them; the caller Acks or Releases them.
func takeAll(t testing.TB, b *Buffer) []*Segment {
	t.Helper()
	var segs []*Segment
	for b.Stats().SegmentsPending > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		seg, err := b.Next(ctx)
		cancel()
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		segs = append(segs, seg)
	}
	return segs
}

// recordsOf returns the data of every record frame in the sealed segments of
// b, in order, releasing the segments afterwards.
func recordsOf(t testing.TB, b *Buffer) []string {
	t.Helper()
	var out []string
	segs := takeAll(t, b)
	for _, seg := range segs {
		if err := seg.Frames(func(f Frame) error {
			out = append(out, string(f.Data))
			return nil
		}); err != nil {
			t.Fatalf("Frames(%d): %v", seg.Seq, err)
		}
	}
	for _, seg := range segs {
		b.Release(seg)
	}
	return out
}

// crash abandons b as a killed process would: no seal, no fsync; the lock
// and file descriptors are simply dropped.
func crash(t testing.TB, b *Buffer) {
	t.Helper()
	b.closeOnce.Do(func() {
		_ = b.close(false)
		b.closeErr = errors.New("crashed")
	})
}

func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}
