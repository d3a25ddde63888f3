package tail

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/metership/metership/buffer"
)

func TestStartAtBeginning(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.log")
	writeFile(t, path, "one\ntwo\n")
	sink := newRecordingSink(nil)
	opts := testOptions(t, filepath.Join(dir, "*.log"))
	tl, _ := startTailer(t, opts, sink)

	waitLines(t, sink, 2)
	appendFile(t, path, "three\n")
	got := waitLines(t, sink, 3)

	want := []recLine{
		{Offset: 0, Data: "one"},
		{Offset: 4, Data: "two"},
		{Offset: 8, Data: "three"},
	}
	source := got[0].Source
	if !strings.HasPrefix(source, "file:") || strings.Count(source, ":") != 3 {
		t.Fatalf("source %q is not file:<dev>:<ino>:<fp>", source)
	}
	for i := range want {
		want[i].Source, want[i].Path = source, path
	}
	if !slices.Equal(got, want) {
		t.Fatalf("lines\n got %+v\nwant %+v", got, want)
	}
	cp, ok := sink.checkpoint(source)
	if !ok || cp.Offset != 14 {
		t.Fatalf("checkpoint %+v, want offset 14", cp)
	}
	id, err := DecodeMeta(cp.Meta)
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if id.Path != path || id.Ino != st.Ino || id.FingerprintLen != 14 {
		t.Fatalf("meta %+v", id)
	}
	stats := tl.Stats()
	if len(stats) != 1 || stats[0].Source != source || stats[0].Offset != 14 || !stats[0].RotatedAt.IsZero() {
		t.Fatalf("stats %+v", stats)
	}
	if m := opts.Metrics; m.LinesRead.Load() != 3 || m.BytesRead.Load() != 14 || m.FilesTailed.Load() != 1 {
		t.Fatalf("metrics lines %d bytes %d files %d", m.LinesRead.Load(), m.BytesRead.Load(), m.FilesTailed.Load())
	}
	sink.assertConsistent(t)
}

func TestStartAtEnd(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.log")
	writeFile(t, a, "old1\nold2\npart")
	sink := newRecordingSink(nil)
	opts := testOptions(t, filepath.Join(dir, "*.log"))
	opts.StartAt = StartEnd
	_, stop := startTailer(t, opts, sink)

	// The start position is persisted before anything is read, so a
	// restart does not skip what was written meanwhile.
	waitFor(t, "the start checkpoint", func() bool { return len(sink.saved()) == 1 })
	if cp := sink.saved()[0]; cp.Offset != 10 {
		t.Fatalf("start checkpoint %d, want 10 (after the last newline)", cp.Offset)
	}
	appendFile(t, a, "ial\nnew\n")
	// A file created after the start is read from its beginning.
	b := filepath.Join(dir, "b.log")
	writeFile(t, b, "b1\n")
	waitLines(t, sink, 3)
	stop()

	appendFile(t, a, "while-down\n")
	sink2 := newRecordingSink(sink.saved())
	opts2 := testOptions(t, filepath.Join(dir, "*.log"))
	opts2.StartAt = StartEnd
	opts2.Checkpoints = sink.saved()
	startTailer(t, opts2, sink2)
	waitLines(t, sink2, 1)
	time.Sleep(30 * time.Millisecond)

	got := map[string][]string{}
	for _, l := range append(sink.snapshot(), sink2.snapshot()...) {
		got[filepath.Base(l.Path)] = append(got[filepath.Base(l.Path)], l.Data)
	}
	if !slices.Equal(got["a.log"], []string{"partial", "new", "while-down"}) || !slices.Equal(got["b.log"], []string{"b1"}) {
		t.Fatalf("lines %q", got)
	}
	sink.assertConsistent(t)
	sink2.assertConsistent(t)
}

func TestResumeFromCheckpointExactly(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	var all []string
	var b strings.Builder
	for i := range 1000 {
		line := strings.Repeat("x", i%37) + "#" + string(rune('a'+i%26))
		all = append(all, line)
		b.WriteString(line + "\n")
	}
	writeFile(t, path, b.String())

	// The first tailer stops in the middle of the file: its sink refuses
	// everything after the tenth chunk.
	sink := newRecordingSink(nil)
	sink.fail = func(call int, c *Chunk) error {
		if call > 10 {
			return buffer.ErrFull
		}
		return nil
	}
	opts := testOptions(t, path)
	opts.MaxChunkLines = 7
	_, stop := startTailer(t, opts, sink)
	waitFor(t, "ten chunks", func() bool { sink.mu.Lock(); defer sink.mu.Unlock(); return sink.calls > 12 })
	stop()
	first := sink.snapshot()
	if len(first) != 70 {
		t.Fatalf("first run delivered %d lines, want 70", len(first))
	}

	appendFile(t, path, "tail-1\ntail-2\n")
	all = append(all, "tail-1", "tail-2")
	sink2 := newRecordingSink(sink.saved())
	opts2 := testOptions(t, path)
	opts2.Checkpoints = sink.saved()
	startTailer(t, opts2, sink2)
	second := waitLines(t, sink2, len(all)-70)
	time.Sleep(30 * time.Millisecond)

	got := data(append(first, sink2.snapshot()...))
	if !slices.Equal(got, all) {
		t.Fatalf("got %d lines, want %d; first difference at %d", len(got), len(all), firstDiff(got, all))
	}
	if second[0].Source != first[0].Source || second[0].Offset != sink.saved()[0].Offset {
		t.Fatalf("resumed at %s@%d, checkpoint %+v", second[0].Source, second[0].Offset, sink.saved()[0])
	}
	sink.assertConsistent(t)
	sink2.assertConsistent(t)
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestPartialLineWaitsForNewline(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.log")
	writeFile(t, path, "abc")
	sink := newRecordingSink(nil)
	tl, _ := startTailer(t, testOptions(t, path), sink)
	waitFor(t, "the file to be followed", func() bool { return len(tl.Stats()) == 1 })
	time.Sleep(50 * time.Millisecond) // several polls
	if n := sink.count(); n != 0 {
		t.Fatalf("%d lines delivered before the newline", n)
	}
	appendFile(t, path, "def\nghi")
	waitLines(t, sink, 1)
	time.Sleep(30 * time.Millisecond)
	got := sink.snapshot()
	if len(got) != 1 || got[0].Data != "abcdef" || got[0].Offset != 0 {
		t.Fatalf("lines %+v", got)
	}
	if cp := sink.saved()[0]; cp.Offset != 7 {
		t.Fatalf("checkpoint %d, want 7", cp.Offset)
	}
}

func TestFlushPartialAfter(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.log")
	writeFile(t, path, "one\nxyz")
	sink := newRecordingSink(nil)
	opts := testOptions(t, path)
	opts.FlushPartialAfter = 30 * time.Millisecond
	startTailer(t, opts, sink)
	waitLines(t, sink, 2)
	appendFile(t, path, "123\n")
	got := waitLines(t, sink, 3)
	want := []string{"one", "xyz", "123"}
	if !slices.Equal(data(got), want) || got[1].Offset != 4 || got[2].Offset != 7 {
		t.Fatalf("lines %+v", got)
	}
	sink.assertConsistent(t)
}

func TestCRLF(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.log")
	writeFile(t, path, "a\r\nb\r\n\r\nc\rd\n\ne\r")
	sink := newRecordingSink(nil)
	tl, _ := startTailer(t, testOptions(t, path), sink)
	waitLines(t, sink, 5)
	waitFor(t, "the checkpoint", func() bool { return tl.Stats()[0].Offset == 13 })
	appendFile(t, path, "\n")
	got := waitLines(t, sink, 6)
	wantData := []string{"a", "b", "", "c\rd", "", "e"}
	wantOff := []int64{0, 3, 6, 8, 12, 13}
	for i, l := range got {
		if l.Data != wantData[i] || l.Offset != wantOff[i] {
			t.Fatalf("line %d = %q@%d, want %q@%d", i, l.Data, l.Offset, wantData[i], wantOff[i])
		}
	}
	if cp := sink.saved()[0]; cp.Offset != 16 {
		t.Fatalf("checkpoint %d, want 16", cp.Offset)
	}
	sink.assertConsistent(t)
}

func TestTooLongLines(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.log")
	const maxLine = 100
	content := "short\n" +
		strings.Repeat("y", maxLine) + "\r\n" + // fits: the \r is not data
		strings.Repeat("z", maxLine+1) + "\n" + // one byte too long
		strings.Repeat("w", 5000) + "\n" + // spans many reads
		"after\n"
	writeFile(t, path, content)
	sink := newRecordingSink(nil)
	opts := testOptions(t, path)
	opts.MaxLineSize = maxLine
	opts.ReadBufferSize = 512
	startTailer(t, opts, sink)
	got := waitLines(t, sink, 5)
	want := []recLine{
		{Offset: 0, Data: "short"},
		{Offset: 6, Data: strings.Repeat("y", maxLine)},
		{Offset: 108, Data: strings.Repeat("z", maxLine), TooLong: true},
		{Offset: 210, Data: strings.Repeat("w", maxLine), TooLong: true},
		{Offset: 5211, Data: "after"},
	}
	for i := range got {
		got[i].Source, got[i].Path = "", ""
	}
	if !slices.Equal(got, want) {
		t.Fatalf("lines\n got %+v\nwant %+v", got, want)
	}
	if m := opts.Metrics.TooLongLines.Load(); m != 2 {
		t.Fatalf("TooLongLines = %d", m)
	}
	sink.assertConsistent(t)
}

// memorySink checks a huge line without copying it.
type memorySink struct {
	lines atomic.Int64
	bad   atomic.Value
}

func (s *memorySink) Consume(_ context.Context, c *Chunk) error {
	for _, l := range c.Lines {
		n := s.lines.Add(1)
		switch {
		case n == 1 && (!l.TooLong || len(l.Data) != DefaultMaxLineSize || strings.Trim(string(l.Data[:10]), "x") != "" || l.Offset != 0):
			s.bad.Store("first line: too long " + string(l.Data[:10]))
		case n == 2 && (string(l.Data) != "after" || l.Offset != 10<<20+1):
			s.bad.Store("second line: " + string(l.Data))
		}
	}
	return nil
}

func TestTooLongLineMemory(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	block := []byte(strings.Repeat("x", 1<<20))
	for range 10 {
		if _, err := f.Write(block); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.WriteString("\nafter\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	block = nil

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	sink := &memorySink{}
	opts := testOptions(t, path)
	opts.Metrics = new(Metrics)
	_, stop := startTailer(t, opts, sink)
	waitFor(t, "two lines", func() bool { return sink.lines.Load() >= 2 })
	stop()
	runtime.ReadMemStats(&after)
	if bad := sink.bad.Load(); bad != nil {
		t.Fatal(bad)
	}
	// Read buffers grow to a bit over MaxLineSize (1 MiB) by doubling:
	// about 3 MiB allocated in all, far from the line's 10 MiB.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 5<<20 {
		t.Fatalf("allocated %d bytes to follow a 10 MiB line", alloc)
	}
	if b := opts.Metrics.BytesRead.Load(); b != 10<<20+7 {
		t.Fatalf("BytesRead = %d", b)
	}
}

func TestRenameRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	writeFile(t, path, "l1\nl2\n")
	sink := newRecordingSink(nil)
	opts := testOptions(t, path)
	tl, _ := startTailer(t, opts, sink)
	first := waitLines(t, sink, 2)

	// A writer that has not reopened yet keeps writing to the renamed
	// file, which is read to its end although it left the glob.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path+".1", "l3\n")
	writeFile(t, path, "m1\n")
	got := waitLines(t, sink, 4)
	// The reader counts the rotation after it has left the file.
	waitFor(t, "the rotated file to be left", func() bool {
		return len(tl.Stats()) == 1 && len(sink.saved()) == 1 && opts.Metrics.Rotations.Load() > 0
	})

	byData := map[string]recLine{}
	for _, l := range got {
		byData[l.Data] = l
	}
	if byData["l3"].Source != first[0].Source || byData["l3"].Offset != 6 {
		t.Fatalf("l3 = %+v", byData["l3"])
	}
	if byData["m1"].Source == first[0].Source || byData["m1"].Offset != 0 {
		t.Fatalf("m1 = %+v", byData["m1"])
	}
	if cp := sink.saved()[0]; cp.Key != byData["m1"].Source {
		t.Fatalf("checkpoints %+v: the rotated file's should be forgotten", sink.saved())
	}
	if opts.Metrics.Rotations.Load() != 1 {
		t.Fatalf("Rotations = %d", opts.Metrics.Rotations.Load())
	}
	sink.assertConsistent(t)
}

func TestCopyTruncate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	writeFile(t, path, "old-1\nold-2\nold-3\n")
	sink := newRecordingSink(nil)
	opts := testOptions(t, path)
	tl, _ := startTailer(t, opts, sink)
	first := waitLines(t, sink, 3)

	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, "n1\nn2\n")
	got := waitLines(t, sink, 5)[3:]
	if !slices.Equal(data(got), []string{"n1", "n2"}) || got[0].Offset != 0 || got[1].Offset != 3 {
		t.Fatalf("after truncation %+v", got)
	}
	if got[0].Source == first[0].Source {
		t.Fatal("a truncated file keeps its Source: offsets would repeat under one identity")
	}
	waitFor(t, "the old generation to be forgotten", func() bool {
		cps := sink.saved()
		return len(cps) == 1 && cps[0].Key == got[0].Source && cps[0].Offset == 6
	})
	if n := opts.Metrics.Truncations.Load(); n != 1 {
		t.Fatalf("Truncations = %d", n)
	}
	if len(tl.Stats()) != 1 {
		t.Fatalf("stats %+v", tl.Stats())
	}
	sink.assertConsistent(t)
}

func TestRewriteInPlaceDetectedByFingerprint(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	writeFile(t, path, "aaaaaaaaaa\n")
	sink := newRecordingSink(nil)
	opts := testOptions(t, path)
	startTailer(t, opts, sink)
	first := waitLines(t, sink, 1)

	// Truncate and rewrite past the old offset at once: the size never
	// looks smaller to a poll, only the first bytes tell.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("bbbbbbbbbbbbbbbbbbbb\ncc\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	got := waitLines(t, sink, 3)[1:]
	if !slices.Equal(data(got), []string{"bbbbbbbbbbbbbbbbbbbb", "cc"}) || got[0].Offset != 0 || got[0].Source == first[0].Source {
		t.Fatalf("after rewrite %+v", got)
	}
	if n := opts.Metrics.Truncations.Load(); n != 1 {
		t.Fatalf("Truncations = %d", n)
	}
	sink.assertConsistent(t)
}

func TestSameInodeDifferentContentIsNewFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	writeFile(t, path, "first-file-line\n")
	sink := newRecordingSink(nil)
	_, stop := startTailer(t, testOptions(t, path), sink)
	first := waitLines(t, sink, 1)
	stop()
	var before, after syscall.Stat_t
	if err := syscall.Stat(path, &before); err != nil {
		t.Fatal(err)
	}

	// While the tailer is down the inode gets other content, longer than
	// the checkpoint offset: only the fingerprint tells it apart.
	writeFile(t, path, "second\nfile-with-other-content\n")
	if err := syscall.Stat(path, &after); err != nil {
		t.Fatal(err)
	}
	if before.Ino != after.Ino {
		t.Fatal("the test needs the same inode")
	}
	opts := testOptions(t, path)
	opts.StartAt = StartEnd // the checkpoint's inode makes it a known file: read from 0
	opts.Checkpoints = sink.saved()
	sink2 := newRecordingSink(sink.saved())
	tl, _ := startTailer(t, opts, sink2)
	got := waitLines(t, sink2, 2)
	if !slices.Equal(data(got), []string{"second", "file-with-other-content"}) || got[0].Offset != 0 {
		t.Fatalf("lines %+v", got)
	}
	if got[0].Source == first[0].Source {
		t.Fatal("new content under the old Source")
	}
	waitFor(t, "the stale checkpoint to be forgotten", func() bool {
		cps := sink2.saved()
		return len(cps) == 1 && cps[0].Key == got[0].Source
	})
	if u := tl.Unclaimed(); len(u) != 0 {
		t.Fatalf("unclaimed %+v", u)
	}
	sink2.assertConsistent(t)
}

func TestDeleteAndRecreate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	writeFile(t, path, "before-start\n")
	sink := newRecordingSink(nil)
	opts := testOptions(t, path)
	opts.StartAt = StartEnd
	tl, _ := startTailer(t, opts, sink)
	waitFor(t, "the file to be followed", func() bool { return len(tl.Stats()) == 1 })
	appendFile(t, path, "a1\n")
	waitLines(t, sink, 1)

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, "b1\nb2\n")
	got := waitLines(t, sink, 3)
	if !slices.Equal(data(got), []string{"a1", "b1", "b2"}) || got[1].Offset != 0 {
		t.Fatalf("lines %+v", got)
	}
	waitFor(t, "the deleted file to be left", func() bool {
		cps := sink.saved()
		return len(tl.Stats()) == 1 && len(cps) == 1 && cps[0].Key == got[1].Source
	})
	sink.assertConsistent(t)
}

func TestRenamedOutOfGlobWhileBehind(t *testing.T) {
	dir := t.TempDir()
	archive := filepath.Join(dir, "archive")
	if err := os.Mkdir(archive, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "app.log")
	writeFile(t, path, "l0\n")
	var hold atomic.Bool
	hold.Store(true)
	sink := newRecordingSink(nil)
	sink.fail = func(int, *Chunk) error {
		if hold.Load() {
			return buffer.ErrFull
		}
		return nil
	}
	opts := testOptions(t, path)
	opts.MaxChunkLines = 2
	tl, _ := startTailer(t, opts, sink)
	waitFor(t, "back-pressure", func() bool { return opts.Metrics.SinkFull.Load() > 0 })

	// The buffer is full; meanwhile the file grows and moves out of the
	// glob into another directory.
	var want []string
	want = append(want, "l0")
	for _, l := range []string{"l1", "l2", "l3", "l4", "l5"} {
		appendFile(t, path, l+"\n")
		want = append(want, l)
	}
	if err := os.Rename(path, filepath.Join(archive, "app.log.1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the file to be marked rotated", func() bool {
		s := tl.Stats()
		return len(s) == 1 && !s[0].RotatedAt.IsZero()
	})
	time.Sleep(2 * opts.RotateWait) // RotateWait passes while paused
	hold.Store(false)

	got := waitLines(t, sink, len(want))
	waitFor(t, "the file to be left", func() bool { return len(tl.Stats()) == 0 && len(sink.saved()) == 0 })
	if !slices.Equal(data(got), want) {
		t.Fatalf("lines %q", data(got))
	}
	if opts.Metrics.BackPressureNanos.Load() <= 0 {
		t.Fatal("back-pressure not counted")
	}
	sink.assertConsistent(t)
}

func TestSinkFailuresRetried(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	var want []string
	var b strings.Builder
	for i := range 50 {
		l := strings.Repeat("r", i)
		want = append(want, l)
		b.WriteString(l + "\n")
	}
	writeFile(t, path, b.String())
	sink := newRecordingSink(nil)
	sink.fail = func(call int, _ *Chunk) error {
		switch {
		case call <= 5:
			return errors.New("disk on fire")
		case call <= 8:
			return buffer.ErrFull
		}
		return nil
	}
	opts := testOptions(t, path)
	opts.MaxChunkLines = 10
	startTailer(t, opts, sink)
	got := waitLines(t, sink, 50)
	time.Sleep(30 * time.Millisecond)
	if !slices.Equal(data(sink.snapshot()), want) {
		t.Fatalf("lines %q", data(got))
	}
	m := opts.Metrics
	if m.SinkErrors.Load() != 8 || m.SinkFull.Load() != 3 || m.BackPressureNanos.Load() <= 0 || m.LinesRead.Load() != 50 {
		t.Fatalf("errors %d full %d back-pressure %v lines %d", m.SinkErrors.Load(), m.SinkFull.Load(), m.BackPressureSeconds(), m.LinesRead.Load())
	}
	sink.mu.Lock()
	chunks := sink.chunks
	sink.mu.Unlock()
	if chunks != 5 {
		t.Fatalf("%d chunks accepted, want 5", chunks)
	}
	sink.assertConsistent(t)
}

// TestRotatedFileMatchedAgainKeepsCheckpoint is the crash-point test of a
// rotated file handed back to the globs while the tailer leaves it: the
// file is renamed out of the glob, and renamed back while its reader,
// RotateWait over, delivers its unterminated last line. Its checkpoint is
// never forgotten in between (a crash there would read it again from 0),
// the reader goes on, and a tailer started on the checkpoints reads only
// what is new.
func TestRotatedFileMatchedAgainKeepsCheckpoint(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	writeFile(t, path, "l1\nl2\nl3")
	opts := testOptions(t, filepath.Join(dir, "*.log"))
	sink := newRecordingSink(nil)
	var tl *Tailer
	var source string
	var forgotten bool
	sink.fail = func(_ int, c *Chunk) error {
		if c.Source == source && c.Checkpoint.Offset < 0 {
			forgotten = true // a crash now loses the file's position
		}
		if len(c.Lines) == 1 && string(c.Lines[0].Data) == "l3" {
			// The reader is leaving the file: hand it back, and wait
			// until a scan has seen it matched.
			if err := os.Rename(path+".1", path); err != nil {
				return err
			}
			deadline := time.Now().Add(10 * time.Second)
			for !matchedAt(tl, path) {
				if time.Now().After(deadline) {
					return errors.New("the file was not matched again")
				}
				time.Sleep(time.Millisecond)
			}
		}
		return nil
	}
	tl, stop := startTailer(t, opts, sink)
	source = waitLines(t, sink, 2)[0].Source
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	waitLines(t, sink, 3)
	appendFile(t, path, "\nl4\n")
	waitLines(t, sink, 5)
	stop()
	sink.mu.Lock()
	gone := forgotten
	sink.mu.Unlock()
	if gone {
		t.Fatal("the checkpoint of a file matched again was forgotten (a crash then reads it from 0)")
	}
	if got := data(sink.snapshot()); !slices.Equal(got, []string{"l1", "l2", "l3", "", "l4"}) {
		t.Fatalf("lines %q", got)
	}
	cp, ok := sink.checkpoint(source)
	if !ok || cp.Offset != int64(len("l1\nl2\nl3\nl4\n")) {
		t.Fatalf("checkpoint %+v (found %v), want the whole file", cp, ok)
	}
	sink.assertConsistent(t)

	// Restarted on the checkpoints: nothing is read again.
	again := newRecordingSink(sink.saved())
	opts = testOptions(t, filepath.Join(dir, "*.log"))
	opts.Checkpoints = sink.saved()
	tl2, _ := startTailer(t, opts, again)
	waitFor(t, "the file to be followed", func() bool { return len(tl2.Stats()) == 1 && tl2.Stats()[0].Offset == cp.Offset })
	appendFile(t, path, "l5\n")
	if got := data(waitLines(t, again, 1)); !slices.Equal(got, []string{"l5"}) {
		t.Fatalf("after a restart: lines %q, want only l5", got)
	}
}

// matchedAt reports whether tl follows a file at path that is matched by
// its globs (not marked rotated).
func matchedAt(tl *Tailer, path string) bool {
	for _, f := range tl.Stats() {
		if f.Path == path && f.RotatedAt.IsZero() {
			return true
		}
	}
	return false
}

// TestInputsOneReaderPerFile runs two inputs whose globs both match
// app.log (*.log and app*): one reader follows it, under the first input;
// renamed to app.log.1 (out of *.log, still in app*) it stays followed by
// the same reader, is not left, and every line arrives once.
func TestInputsOneReaderPerFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	writeFile(t, path, "a1\na2\n")
	opts := testOptions(t)
	opts.Inputs = []Input{
		{Name: "logs", Paths: []string{filepath.Join(dir, "*.log")}},
		{Name: "app", Paths: []string{filepath.Join(dir, "app*")}, StartAt: StartEnd},
	}
	sink := &inputSink{recordingSink: newRecordingSink(nil)}
	tl, _ := startTailer(t, opts, sink)
	waitLines(t, sink.recordingSink, 2)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reader to follow app.log.1", func() bool {
		st := tl.Stats()
		return len(st) == 1 && st[0].Path == path+".1"
	})
	appendFile(t, path+".1", "a3\n")
	got := waitLines(t, sink.recordingSink, 3)
	if d := data(got); !slices.Equal(d, []string{"a1", "a2", "a3"}) {
		t.Fatalf("lines %q", d)
	}
	if got[2].Source != got[0].Source {
		t.Fatalf("a3 read under %s, a1 under %s: not the same reader", got[2].Source, got[0].Source)
	}
	st := tl.Stats()
	if len(st) != 1 || st[0].Path != path+".1" || !st[0].RotatedAt.IsZero() {
		t.Fatalf("stats %+v, want app.log.1 followed and matched", st)
	}
	if n := opts.Metrics.Rotations.Load(); n != 0 {
		t.Fatalf("%d files left, want none", n)
	}
	sink.mu.Lock()
	inputs := slices.Clone(sink.inputs)
	sink.mu.Unlock()
	for _, in := range inputs {
		if in != 0 {
			t.Fatalf("chunks of inputs %v, want only input 0 (the first that matched)", inputs)
		}
	}
	sink.assertConsistent(t)
}

// inputSink records the Input of each chunk.
type inputSink struct {
	*recordingSink
	inputs []int
}

func (s *inputSink) Consume(ctx context.Context, c *Chunk) error {
	if err := s.recordingSink.Consume(ctx, c); err != nil {
		return err
	}
	s.mu.Lock()
	s.inputs = append(s.inputs, c.Input)
	s.mu.Unlock()
	return nil
}
