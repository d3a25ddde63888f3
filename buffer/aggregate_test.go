package buffer

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// An aggregate frame is written ahead of its batch's frames, handed to
// consumers like a record, and never written for a batch without frames.
func TestAggregateFrames(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, genOptions(dir))

	var batch Batch
	batch.SetTag("app")
	batch.SetAggregate([]byte("sum-1"))
	batch.AddRecord(1000, []byte(`{"r":1}`))
	batch.AddDeadLetter(900, []byte(`{"reason":"bad"}`))
	batch.AddRecord(1200, []byte(`{"r":2}`))
	mustWrite(t, b, &batch)

	batch.Reset()
	batch.SetTag("app")
	batch.SetAggregate([]byte("sum-of-nothing"))
	batch.SetCheckpoint("src", 10, nil)
	if batch.Size() != 0 {
		t.Errorf("a batch without frames has Size %d, want 0 (its aggregate is not written)", batch.Size())
	}
	mustWrite(t, b, &batch)

	batch.Reset()
	batch.SetTag("app")
	batch.SetAggregate([]byte("replaced"))
	batch.SetAggregate(nil)
	batch.AddRecord(1300, []byte(`{"r":3}`))
	mustWrite(t, b, &batch)

	// A crash in the middle of the next batch: its aggregate and a record
	// reached the file, its commit did not. Recovery drops both.
	crash(t, b)
	var torn []byte
	torn = appendFrame(torn, FrameAggregate, 0, []byte("sum-torn"))
	torn = appendFrame(torn, FrameRecord, 1400, []byte(`{"r":4}`))
	appendRaw(t, filepath.Join(dir, seg(1, openExt)), torn)

	b = openT(t, genOptions(dir))
	if r := b.Stats().Recovered; r.DroppedFrames != 2 {
		t.Errorf("recovery dropped %d frames, want the torn batch's 2", r.DroppedFrames)
	}
	if err := b.Seal(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range takeAll(t, b) {
		got = append(got, segmentFrames(t, s)...)
	}
	want := []string{
		`A|app|0|sum-1`,
		`R|app|1000|{"r":1}`,
		`D|app|900|{"reason":"bad"}`,
		`R|app|1200|{"r":2}`,
		`R|app|1300|{"r":3}`,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("frames:\n got %q\nwant %q", got, want)
	}
	if got, want := rawFrameTypes(t, filepath.Join(dir, seg(1, sealedExt))), "TARDRCCRC"; got != want {
		t.Errorf("frame types on disk = %s, want %s", got, want)
	}
}

// Segments written before aggregate frames existed (format version 1) are
// still read: the recovery scenarios in testdata are kept at version 1.
func TestVersion1SegmentsRead(t *testing.T) {
	src := filepath.Join("testdata", "uncommitted-batch")
	data, err := os.ReadFile(filepath.Join(src, seg(1, openExt)))
	if err != nil {
		t.Fatal(err)
	}
	if v := data[7]; v != 1 {
		t.Fatalf("testdata segment is format version %d; keep a version 1 segment here", v)
	}
	dir := t.TempDir()
	copyDir(t, src, dir)
	b := openT(t, genOptions(dir))
	var n int
	for _, s := range takeAll(t, b) {
		n += len(segmentFrames(t, s))
	}
	if n == 0 {
		t.Fatal("no frames read from version 1 segments")
	}
	if [8]byte(data[:8]) == segMagic {
		t.Fatal("segMagic is still version 1")
	}
}
