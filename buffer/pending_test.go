package buffer

import (
	"context"
	"testing"
)

func TestPendingMinTimeAndLive(t *testing.T) {
	b, err := Open(Options{Dir: t.TempDir(), SegmentSize: 1 << 20, MaxSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, ok := b.PendingMinTime(nil); ok {
		t.Fatal("empty buffer reports pending records")
	}
	var batch Batch
	batch.AddRecord(5000, []byte(`{"a":1}`))
	batch.AddRecord(3000, []byte(`{"a":2}`))
	if err := b.Write(&batch); err != nil {
		t.Fatal(err)
	}
	if m, ok := b.PendingMinTime(nil); !ok || m != 3000 {
		t.Fatalf("active min time = %d, %v; want 3000", m, ok)
	}
	if err := b.Seal(); err != nil {
		t.Fatal(err)
	}
	batch.Reset()
	batch.AddRecord(9000, []byte(`{"a":3}`))
	if err := b.Write(&batch); err != nil {
		t.Fatal(err)
	}
	seg, err := b.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := b.PendingMinTime(nil); m != 3000 {
		t.Fatalf("sealed segment not considered: %d", m)
	}
	if m, _ := b.PendingMinTime(func(seq uint64) bool { return seq == seg.Seq }); m != 9000 {
		t.Fatalf("skipped segment still considered: %d", m)
	}
	if !b.Live(seg.Seq) {
		t.Fatal("unacked segment not live")
	}
	if err := b.Ack(seg); err != nil {
		t.Fatal(err)
	}
	if b.Live(seg.Seq) {
		t.Fatal("acked segment still live")
	}
}
