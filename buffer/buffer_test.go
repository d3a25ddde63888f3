package buffer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestWriteSealFrames(t *testing.T) {
	clock := &fakeClock{t: testEpoch}
	b := openT(t, Options{Dir: t.TempDir(), Now: clock.Now})

	var batch Batch
	batch.SetTag("app.a")
	batch.AddRecord(1000, []byte(`{"r":1}`))
	batch.AddDeadLetter(900, []byte(`{"reason":"bad"}`))
	batch.AddRecord(1200, []byte(`{"r":2}`))
	mustWrite(t, b, &batch)
	batch.Reset()
	batch.SetTag("app.a")
	batch.AddRecord(800, []byte(`{"r":3}`))
	mustWrite(t, b, &batch)
	batch.Reset()
	batch.SetTag("app.b")
	batch.AddRecord(1500, []byte(`{"r":4}`))
	mustWrite(t, b, &batch)
	if err := b.Seal(); err != nil {
		t.Fatal(err)
	}

	seg, err := b.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`R|app.a|1000|{"r":1}`,
		`D|app.a|900|{"reason":"bad"}`,
		`R|app.a|1200|{"r":2}`,
		`R|app.a|800|{"r":3}`,
		`R|app.b|1500|{"r":4}`,
	}
	if got := segmentFrames(t, seg); !slices.Equal(got, want) {
		t.Fatalf("frames:\n got %q\nwant %q", got, want)
	}
	if seg.Seq != 1 || seg.Records != 4 || seg.DeadLetters != 1 {
		t.Errorf("segment = seq %d, %d records, %d dead letters; want 1, 4, 1", seg.Seq, seg.Records, seg.DeadLetters)
	}
	if !seg.FirstTime.Equal(time.UnixMilli(800)) || !seg.LastTime.Equal(time.UnixMilli(1500)) {
		t.Errorf("time bounds = %v..%v, want 800ms..1500ms", seg.FirstTime, seg.LastTime)
	}
	if !seg.Created.Equal(testEpoch) {
		t.Errorf("Created = %v, want %v", seg.Created, testEpoch)
	}
	if want := filepath.Join(b.Dir(), "00000000000000000001.seg"); seg.Path() != want {
		t.Errorf("Path = %s, want %s", seg.Path(), want)
	}
	fi, err := os.Stat(seg.Path())
	if err != nil || fi.Size() != seg.Size {
		t.Fatalf("file size %v (%v), Segment.Size %d", fi.Size(), err, seg.Size)
	}

	// The raw file: one tag frame per tag change, one commit per batch.
	if got, want := rawFrameTypes(t, seg.Path()), "TRDRCRCTRC"; got != want {
		t.Errorf("frame types on disk = %s, want %s", got, want)
	}
}

// rawFrameTypes lists the types of every frame in a segment file.
func rawFrameTypes(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	r := frameReader{r: f, limit: fi.Size(), pos: segHeaderSize, buf: make([]byte, 64)}
	var types []byte
	for {
		ft, _, _, _, err := r.next()
		if errors.Is(err, io.EOF) {
			return string(types)
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		types = append(types, byte(ft))
	}
}

func TestFramesStopsOnCallbackError(t *testing.T) {
	b := openT(t, Options{Dir: t.TempDir()})
	mustWrite(t, b, makeBatch(1, 5, ""))
	if err := b.Seal(); err != nil {
		t.Fatal(err)
	}
	seg, err := b.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop")
	calls := 0
	err = seg.Frames(func(Frame) error {
		calls++
		if calls == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 2 {
		t.Fatalf("Frames = %v after %d calls, want stop after 2", err, calls)
	}
}

func TestBatchNeverSpansSegments(t *testing.T) {
	b := openT(t, Options{Dir: t.TempDir(), SegmentSize: 1000})
	// Each batch is ~3 x (17+15) + tag + commit ≈ 150 bytes; the last one
	// alone exceeds SegmentSize and must go into an empty segment.
	for n := range 20 {
		mustWrite(t, b, makeBatch(n, 3, ""))
	}
	mustWrite(t, b, makeBatch(20, 100, ""))
	mustWrite(t, b, makeBatch(21, 1, ""))
	if err := b.Seal(); err != nil {
		t.Fatal(err)
	}
	segs := takeAll(t, b)
	seen := map[int]uint64{} // batch -> segment
	var all []string
	for _, seg := range segs {
		if seg.Size > 1000 {
			recs := segmentFrames(t, seg)
			if len(recs) != 100 {
				t.Errorf("segment %d has %d bytes > SegmentSize but %d records; only the lone big batch may exceed it", seg.Seq, seg.Size, len(recs))
			}
		}
		if err := seg.Frames(func(f Frame) error {
			var n, i int
			if _, err := fmt.Sscanf(string(f.Data), `{"n":%d,"i":%d}`, &n, &i); err != nil {
				return err
			}
			if s, ok := seen[n]; ok && s != seg.Seq {
				t.Errorf("batch %d spans segments %d and %d", n, s, seg.Seq)
			}
			seen[n] = seg.Seq
			all = append(all, string(f.Data))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if len(segs) < 4 {
		t.Errorf("%d segments, want several rollovers", len(segs))
	}
	var want []string
	for n := range 20 {
		for i := range 3 {
			want = append(want, record(n, i))
		}
	}
	for i := range 100 {
		want = append(want, record(20, i))
	}
	want = append(want, record(21, 0))
	if !slices.Equal(all, want) {
		t.Fatalf("records differ:\n got %q\nwant %q", all, want)
	}
}

func TestSealOlderThan(t *testing.T) {
	clock := &fakeClock{t: testEpoch}
	b := openT(t, Options{Dir: t.TempDir(), Now: clock.Now})
	if sealed, err := b.SealOlderThan(0); sealed || err != nil {
		t.Fatalf("SealOlderThan with nothing written = %v, %v", sealed, err)
	}
	mustWrite(t, b, makeBatch(1, 1, ""))
	clock.t = clock.t.Add(30 * time.Second)
	mustWrite(t, b, makeBatch(2, 1, ""))
	if sealed, err := b.SealOlderThan(time.Minute); sealed || err != nil {
		t.Fatalf("SealOlderThan(1m) at 30s = %v, %v; want false", sealed, err)
	}
	clock.t = clock.t.Add(30 * time.Second)
	if sealed, err := b.SealOlderThan(time.Minute); !sealed || err != nil {
		t.Fatalf("SealOlderThan(1m) at 60s = %v, %v; want true", sealed, err)
	}
	if got := recordsOf(t, b); !slices.Equal(got, []string{record(1, 0), record(2, 0)}) {
		t.Fatalf("records = %q", got)
	}
	// A checkpoint-only active segment has nothing to ship.
	var cp Batch
	cp.SetCheckpoint("x", 1, nil)
	mustWrite(t, b, &cp)
	clock.t = clock.t.Add(time.Hour)
	if sealed, err := b.SealOlderThan(time.Minute); sealed || err != nil {
		t.Fatalf("SealOlderThan on checkpoint-only segment = %v, %v; want false", sealed, err)
	}
}

func TestCheckpoints(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, Options{Dir: dir})
	write := func(cps ...Checkpoint) {
		t.Helper()
		var batch Batch
		batch.AddRecord(1, []byte("r"))
		for _, c := range cps {
			batch.SetCheckpoint(c.Key, c.Offset, c.Meta)
		}
		mustWrite(t, b, &batch)
		// Reusing the batch must not change what the buffer holds.
		batch.Reset()
		batch.SetCheckpoint("mutated", 99, []byte("zzz"))
	}
	check := func(step string, want ...Checkpoint) {
		t.Helper()
		got := b.Checkpoints()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: Checkpoints() = %v, want %v", step, got, want)
		}
	}
	reopen := func() {
		t.Helper()
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		b = openT(t, Options{Dir: dir})
	}

	write(Checkpoint{"b", 10, []byte("mb")}, Checkpoint{"a", 1, []byte("ma")})
	check("first batch", Checkpoint{"a", 1, []byte("ma")}, Checkpoint{"b", 10, []byte("mb")})
	write(Checkpoint{"a", 2, []byte("ma2")}, Checkpoint{"a", 3, []byte("ma3")})
	check("last per source wins", Checkpoint{"a", 3, []byte("ma3")}, Checkpoint{"b", 10, []byte("mb")})
	if err := b.Seal(); err != nil {
		t.Fatal(err)
	}
	write(Checkpoint{"b", -1, nil}, Checkpoint{"c", 7, nil})
	check("offset < 0 forgets", Checkpoint{"a", 3, []byte("ma3")}, Checkpoint{"c", 7, []byte{}})
	reopen()
	check("after reopen", Checkpoint{"a", 3, []byte("ma3")}, Checkpoint{"c", 7, []byte{}})

	// Ack everything: the state file must carry the checkpoints.
	for _, seg := range takeAll(t, b) {
		if err := b.Ack(seg); err != nil {
			t.Fatal(err)
		}
	}
	reopen()
	check("after ack and reopen", Checkpoint{"a", 3, []byte("ma3")}, Checkpoint{"c", 7, []byte{}})
	if segs := b.Stats().SegmentsSealed; segs != 0 {
		t.Fatalf("%d segments left after acking all", segs)
	}

	// A batch of only checkpoints: durable, yet no segment is shipped.
	var batch Batch
	batch.SetCheckpoint("a", 4, nil)
	mustWrite(t, b, &batch)
	check("checkpoint-only batch", Checkpoint{"a", 4, []byte{}}, Checkpoint{"c", 7, []byte{}})
	reopen()
	check("checkpoint-only batch after reopen", Checkpoint{"a", 4, []byte{}}, Checkpoint{"c", 7, []byte{}})
	if got := b.Stats().SegmentsSealed; got != 0 {
		t.Fatalf("checkpoint-only batch produced %d sealed segments", got)
	}
	for _, name := range dirNames(t, dir) {
		if strings.HasSuffix(name, openExt) || strings.HasSuffix(name, sealedExt) {
			t.Errorf("segment file %s left after a checkpoint-only batch and Close", name)
		}
	}
}

// An older, un-acked segment must not roll a checkpoint back after a newer
// segment was acked: only commits at or after the state's asOf replay.
func TestCheckpointsNoRegressionAfterOutOfOrderAck(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, Options{Dir: dir})
	mustWrite(t, b, makeBatch(1, 1, "")) // src=1
	if err := b.Seal(); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, b, makeBatch(2, 1, "")) // src=2
	if err := b.Seal(); err != nil {
		t.Fatal(err)
	}
	segs := takeAll(t, b)
	if len(segs) != 2 {
		t.Fatalf("%d segments", len(segs))
	}
	if err := b.Ack(segs[1]); err != nil {
		t.Fatal(err)
	}
	b.Release(segs[0])
	crash(t, b)

	b = openT(t, Options{Dir: dir})
	if got := b.Checkpoints(); len(got) != 1 || got[0].Offset != 2 {
		t.Fatalf("Checkpoints after reopen = %v, want src at 2", got)
	}
	if got := recordsOf(t, b); !slices.Equal(got, []string{record(1, 0)}) {
		t.Fatalf("records after reopen = %q, want only batch 1", got)
	}
}

// Checkpoints written after the last Ack live only in commit frames of the
// active segment; a crash must not lose them.
func TestCheckpointsReplayActiveAfterCrash(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, Options{Dir: dir})
	mustWrite(t, b, makeBatch(1, 2, ""))
	if err := b.Seal(); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, b, makeBatch(2, 2, ""))
	seg, err := b.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Ack(seg); err != nil { // state asOf = active segment 2
		t.Fatal(err)
	}
	mustWrite(t, b, makeBatch(3, 2, ""))
	crash(t, b)

	b = openT(t, Options{Dir: dir})
	if got := b.Checkpoints(); len(got) != 1 || got[0].Offset != 3 || string(got[0].Meta) != "meta-3" {
		t.Fatalf("Checkpoints = %v, want src at 3", got)
	}
	want := []string{record(2, 0), record(2, 1), record(3, 0), record(3, 1)}
	if got := recordsOf(t, b); !slices.Equal(got, want) {
		t.Fatalf("records = %q, want %q", got, want)
	}
	if r := b.Stats().Recovered; r.Segments != 1 || r.TruncatedBytes != 0 || r.DroppedFrames != 0 {
		t.Fatalf("recovery report = %+v", r)
	}
}

func TestSeqNeverReused(t *testing.T) {
	dir := t.TempDir()
	var seqs []uint64
	for round := range 3 {
		b := openT(t, Options{Dir: dir})
		mustWrite(t, b, makeBatch(round, 1, ""))
		m, _, err := readMeta(dir)
		if err != nil {
			t.Fatal(err)
		}
		if want := b.active.seq + 1; m.NextSeq != want {
			t.Fatalf("meta next_seq = %d while segment %d is active; want %d persisted before creation", m.NextSeq, b.active.seq, want)
		}
		if err := b.Seal(); err != nil {
			t.Fatal(err)
		}
		for _, seg := range takeAll(t, b) {
			seqs = append(seqs, seg.Seq)
			if err := b.Ack(seg); err != nil {
				t.Fatal(err)
			}
		}
		if round == 1 {
			crash(t, b) // no clean Close this time
			continue
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(seqs, []uint64{1, 2, 3}) {
		t.Fatalf("sequences over reopens with every segment acked = %v, want 1 2 3", seqs)
	}
}

func TestGroupCommit(t *testing.T) {
	b := openT(t, Options{Dir: t.TempDir(), Sync: SyncAlways})
	entered := make(chan struct{})
	release := make(chan struct{})
	var calls int
	var callsMu sync.Mutex
	b.ops.sync = func(f *os.File) error {
		callsMu.Lock()
		calls++
		first := calls == 1
		callsMu.Unlock()
		if first {
			close(entered)
			<-release
		}
		return f.Sync()
	}

	done := make(chan int, 4)
	errs := make(chan error, 4)
	write := func(n int) {
		errs <- b.Write(makeBatch(n, 10, ""))
		done <- n
	}
	go write(0)
	<-entered // writer 0 leads an fsync and holds it
	for n := 1; n <= 3; n++ {
		go write(n)
	}
	// The followers append while the leader is outside the lock.
	waitFor(t, func() bool { return b.Stats().Writes == 4 })
	select {
	case n := <-done:
		t.Fatalf("writer %d returned before its data was synced", n)
	default:
	}
	close(release)
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		<-done
	}
	if s := b.Stats(); s.Syncs != 2 {
		t.Fatalf("Syncs = %d for 4 writes; want 2 (the leader's, then one shared by the 3 followers)", s.Syncs)
	}
	if err := b.Seal(); err != nil {
		t.Fatal(err)
	}
	got := recordsOf(t, b)
	if len(got) != 40 {
		t.Fatalf("%d records, want 40", len(got))
	}
	if cps := b.Checkpoints(); len(cps) != 1 {
		t.Fatalf("Checkpoints = %v", cps)
	}
}

// waitFor polls cond until it holds; the deadline only guards a hang.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestConcurrentWriters(t *testing.T) {
	const writers, batches, perBatch = 8, 40, 5
	dir := t.TempDir()
	b := openT(t, Options{Dir: dir, SegmentSize: 4 << 10, Sync: SyncAlways})
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var batch Batch
			for n := range batches {
				batch.Reset()
				batch.SetTag(fmt.Sprintf("w%d", w))
				for i := range perBatch {
					batch.AddRecord(int64(n), []byte(fmt.Sprintf(`{"w":%d,"n":%d,"i":%d}`, w, n, i)))
				}
				batch.SetCheckpoint(fmt.Sprintf("w%d", w), int64(n), nil)
				if err := b.Write(&batch); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	// A consumer acks concurrently, exercising state writes under load.
	ctx, cancel := context.WithCancel(context.Background())
	var acked []string
	consumerDone := make(chan error, 1)
	go func() {
		for {
			seg, err := b.Next(ctx)
			if err != nil {
				consumerDone <- nil
				return
			}
			if err := seg.Frames(func(f Frame) error {
				if want := f.Tag; !strings.HasPrefix(string(f.Data), fmt.Sprintf(`{"w":%s,`, strings.TrimPrefix(want, "w"))) {
					return fmt.Errorf("record %s carries tag %s", f.Data, f.Tag)
				}
				acked = append(acked, string(f.Data))
				return nil
			}); err != nil {
				consumerDone <- err
				return
			}
			if err := b.Ack(seg); err != nil {
				consumerDone <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := b.Seal(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return b.Stats().SegmentsSealed == 0 })
	cancel()
	if err := <-consumerDone; err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, r := range acked {
		seen[r]++
	}
	for w := range writers {
		for n := range batches {
			for i := range perBatch {
				r := fmt.Sprintf(`{"w":%d,"n":%d,"i":%d}`, w, n, i)
				if seen[r] != 1 {
					t.Fatalf("record %s seen %d times", r, seen[r])
				}
			}
		}
	}
	if len(acked) != writers*batches*perBatch {
		t.Fatalf("%d records, want %d", len(acked), writers*batches*perBatch)
	}
	s := b.Stats()
	if s.Syncs > s.Writes+uint64(s.Recovered.Segments)+64 {
		t.Errorf("Syncs = %d for %d writes", s.Syncs, s.Writes)
	}
	t.Logf("%d writes, %d fsyncs", s.Writes, s.Syncs)
	for _, c := range b.Checkpoints() {
		if c.Offset != batches-1 {
			t.Errorf("checkpoint %v, want offset %d", c, batches-1)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openT(t, Options{Dir: dir})
	if got := len(b.Checkpoints()); got != writers {
		t.Fatalf("%d checkpoints after reopen, want %d", got, writers)
	}
}

// A sync leader fsyncs with the lock released; sealing meanwhile must wait
// rather than close the descriptor under it.
func TestSealWaitsForSyncLeader(t *testing.T) {
	b := openT(t, Options{Dir: t.TempDir()})
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	b.ops.sync = func(f *os.File) error {
		blocked := false
		once.Do(func() { blocked = true })
		if blocked {
			close(entered)
			<-release
		}
		return f.Sync() // fails with "file already closed" if Seal closed it
	}
	writeErr := make(chan error, 1)
	go func() { writeErr <- b.Write(makeBatch(1, 3, "")) }()
	<-entered
	sealErr := make(chan error, 1)
	go func() { sealErr <- b.Seal() }()
	time.Sleep(20 * time.Millisecond)
	select {
	case err := <-sealErr:
		t.Fatalf("Seal returned (%v) while a sync leader held the file", err)
	default:
	}
	close(release)
	if err := <-writeErr; err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := <-sealErr; err != nil {
		t.Fatalf("Seal: %v", err)
	}
	if got := recordsOf(t, b); len(got) != 3 {
		t.Fatalf("records = %q", got)
	}
}

func TestWriteErrorTruncatesBatch(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, Options{Dir: dir})
	mustWrite(t, b, makeBatch(1, 3, ""))
	sizeBefore := b.Stats().ActiveBytes
	diskFull := errors.New("no space left on device")
	b.ops.writeAt = func(f *os.File, p []byte, off int64) (int, error) {
		n, _ := f.WriteAt(p[:len(p)/2], off) // a torn write
		return n, diskFull
	}
	err := b.Write(makeBatch(2, 3, ""))
	if !errors.Is(err, diskFull) || errors.Is(err, ErrFailed) {
		t.Fatalf("Write = %v, want the disk error without ErrFailed", err)
	}
	fi, err := os.Stat(b.active.path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != sizeBefore || b.Stats().ActiveBytes != sizeBefore {
		t.Fatalf("after failed write: file %d bytes, ActiveBytes %d; want both %d", fi.Size(), b.Stats().ActiveBytes, sizeBefore)
	}
	b.ops = osFileOps()
	mustWrite(t, b, makeBatch(3, 3, ""))
	if cps := b.Checkpoints(); cps[0].Offset != 3 {
		t.Fatalf("checkpoint %v, want 3", cps)
	}
	crash(t, b)
	b = openT(t, Options{Dir: dir})
	want := []string{record(1, 0), record(1, 1), record(1, 2), record(3, 0), record(3, 1), record(3, 2)}
	if got := recordsOf(t, b); !slices.Equal(got, want) {
		t.Fatalf("records = %q, want %q", got, want)
	}
	if r := b.Stats().Recovered; r.TruncatedBytes != 0 || r.DroppedFrames != 0 {
		t.Fatalf("recovery found debris: %+v", r)
	}
}

func TestWriteErrorUntruncatableFails(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, Options{Dir: dir})
	mustWrite(t, b, makeBatch(1, 2, ""))
	diskErr := errors.New("I/O error")
	calls := 0
	b.ops.writeAt = func(f *os.File, p []byte, off int64) (int, error) {
		calls++
		if calls == 1 {
			return f.WriteAt(p, off) // the batch's frames land, the commit does not
		}
		return 0, diskErr
	}
	b.ops.truncate = func(*os.File, int64) error { return diskErr }
	if err := b.Write(makeBatch(2, 2, "")); !errors.Is(err, ErrFailed) || !errors.Is(err, diskErr) {
		t.Fatalf("Write = %v, want ErrFailed wrapping the disk error", err)
	}
	b.ops = osFileOps()
	if err := b.Write(makeBatch(3, 2, "")); !errors.Is(err, ErrFailed) {
		t.Fatalf("Write after failure = %v, want ErrFailed", err)
	}
	if err := b.Close(); !errors.Is(err, ErrFailed) {
		t.Fatalf("Close = %v, want ErrFailed", err)
	}
	b = openT(t, Options{Dir: dir})
	if got := recordsOf(t, b); !slices.Equal(got, []string{record(1, 0), record(1, 1)}) {
		t.Fatalf("records = %q, want batch 1 only", got)
	}
	if r := b.Stats().Recovered; r.DroppedFrames != 2 || r.TruncatedBytes != 2*int64(frameHeaderSize+len(record(2, 0))) {
		t.Fatalf("recovery = %+v, want the 2 uncommitted frames dropped", r)
	}
	if cps := b.Checkpoints(); len(cps) != 1 || cps[0].Offset != 1 {
		t.Fatalf("Checkpoints = %v, want src at 1", cps)
	}
}

func TestErrFullAndWaitForSpace(t *testing.T) {
	b := openT(t, Options{Dir: t.TempDir(), MaxSize: 2000, SegmentSize: 500})
	batch := makeBatch(0, 10, "") // ~ 300 bytes
	var err error
	n := 0
	for ; n < 100; n++ {
		if err = b.Write(makeBatch(n, 10, "")); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrFull) {
		t.Fatalf("Write #%d = %v, want ErrFull", n, err)
	}
	before := b.Stats()
	if err := b.Write(makeBatch(n, 10, "")); !errors.Is(err, ErrFull) {
		t.Fatalf("second Write = %v, want ErrFull", err)
	}
	after := b.Stats()
	if after.FullRejections != 2 || after.BytesOnDisk != before.BytesOnDisk || after.Writes != before.Writes {
		t.Fatalf("ErrFull wrote something or was not counted: before %+v after %+v", before, after)
	}
	// Framing is not counted: at most one batch's tag, commit and segment
	// header beyond MaxSize.
	framing := int64(segHeaderSize + 2*frameHeaderSize + checkpointsSize(batch.checkpoints))
	if after.BytesOnDisk > 2000+framing {
		t.Fatalf("BytesOnDisk %d > MaxSize + one batch's framing (%d)", after.BytesOnDisk, framing)
	}

	if err := b.Write(makeBatch(0, 100, "")); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Write of a batch larger than MaxSize = %v, want ErrTooLarge", err)
	}
	if err := b.WaitForSpace(context.Background(), 3000); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("WaitForSpace(3000) = %v, want ErrTooLarge", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := b.WaitForSpace(ctx, batch.Size()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitForSpace while full = %v, want DeadlineExceeded", err)
	}

	waited := make(chan error, 1)
	go func() { waited <- b.WaitForSpace(context.Background(), batch.Size()) }()
	select {
	case err := <-waited:
		t.Fatalf("WaitForSpace returned %v while full", err)
	case <-time.After(10 * time.Millisecond):
	}
	seg, err := b.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Ack(seg); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatalf("WaitForSpace after Ack = %v", err)
	}
	mustWrite(t, b, makeBatch(n, 10, ""))
}

func TestErrTooLargeFrame(t *testing.T) {
	b := openT(t, Options{Dir: t.TempDir(), MaxSize: 1 << 30})
	var batch Batch
	batch.AddRecord(1, make([]byte, MaxFrameData+1))
	if err := b.Write(&batch); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Write of a record > MaxFrameData = %v, want ErrTooLarge", err)
	}
	if s := b.Stats(); s.Writes != 0 || s.BytesOnDisk != 0 {
		t.Fatalf("a refused batch reached the disk: %+v", s)
	}
}

func TestNextReleaseAck(t *testing.T) {
	b := openT(t, Options{Dir: t.TempDir()})
	for n := 1; n <= 3; n++ {
		mustWrite(t, b, makeBatch(n, 1, ""))
		if err := b.Seal(); err != nil {
			t.Fatal(err)
		}
	}
	// Concurrent consumers each get a distinct segment.
	got := make(chan *Segment, 3)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seg, err := b.Next(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			got <- seg
		}()
	}
	wg.Wait()
	close(got)
	bySeq := map[uint64]*Segment{}
	for seg := range got {
		bySeq[seg.Seq] = seg
	}
	if len(bySeq) != 3 {
		t.Fatalf("3 Next calls returned segments %v", bySeq)
	}
	if s := b.Stats(); s.SegmentsSealed != 3 || s.SegmentsPending != 0 {
		t.Fatalf("stats %+v", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := b.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next with all in flight = %v, want DeadlineExceeded", err)
	}

	b.Release(bySeq[2])
	b.Release(bySeq[1])
	seg, err := b.Next(context.Background())
	if err != nil || seg.Seq != 1 {
		t.Fatalf("Next after Release = %v, %v; want segment 1 (lowest first)", seg, err)
	}
	if err := b.Ack(bySeq[3]); err != nil {
		t.Fatal(err)
	}
	if err := b.Ack(bySeq[3]); !errors.Is(err, ErrNotInFlight) {
		t.Fatalf("second Ack = %v, want ErrNotInFlight", err)
	}
	if err := b.Ack(bySeq[2]); !errors.Is(err, ErrNotInFlight) {
		t.Fatalf("Ack of a released segment = %v, want ErrNotInFlight", err)
	}
	if _, err := os.Stat(bySeq[3].Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("acked segment file still there: %v", err)
	}

	// Next blocks until a segment is sealed.
	seg2, err := b.Next(context.Background())
	if err != nil || seg2.Seq != 2 {
		t.Fatalf("Next = %v, %v; want 2", seg2, err)
	}
	next := make(chan *Segment, 1)
	go func() {
		seg, err := b.Next(context.Background())
		if err != nil {
			t.Error(err)
		}
		next <- seg
	}()
	mustWrite(t, b, makeBatch(4, 1, ""))
	if err := b.Seal(); err != nil {
		t.Fatal(err)
	}
	if seg := <-next; seg == nil || seg.Seq != 4 {
		t.Fatalf("blocked Next got %v, want segment 4", seg)
	}

	// Close wakes a blocked Next with ErrClosed.
	closed := make(chan error, 1)
	go func() {
		_, err := b.Next(context.Background())
		closed <- err
	}()
	time.Sleep(5 * time.Millisecond)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-closed; !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close = %v, want ErrClosed", err)
	}
	if err := b.Write(makeBatch(5, 1, "")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Close = %v, want ErrClosed", err)
	}
	if err := b.Ack(seg); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ack after Close = %v, want ErrClosed", err)
	}
}

func TestRestartRedeliversUnacked(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, Options{Dir: dir})
	mustWrite(t, b, makeBatch(1, 2, "t1"))
	if err := b.Seal(); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, b, makeBatch(2, 2, "t2"))
	if err := b.Seal(); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, b, makeBatch(3, 2, "t3"))
	segs := takeAll(t, b)
	if err := b.Ack(segs[0]); err != nil {
		t.Fatal(err)
	}
	// segment 2 is in flight (its upload never finished), 3 is active.
	crash(t, b)

	b = openT(t, Options{Dir: dir})
	segs = takeAll(t, b)
	var got []string
	for _, seg := range segs {
		got = append(got, segmentFrames(t, seg)...)
	}
	want := []string{
		fmt.Sprintf("R|t2|%d|%s", testEpoch.UnixMilli()+2000, record(2, 0)),
		fmt.Sprintf("R|t2|%d|%s", testEpoch.UnixMilli()+2001, record(2, 1)),
		fmt.Sprintf("R|t3|%d|%s", testEpoch.UnixMilli()+3000, record(3, 0)),
		fmt.Sprintf("R|t3|%d|%s", testEpoch.UnixMilli()+3001, record(3, 1)),
	}
	if !slices.Equal(got, want) {
		t.Fatalf("after restart:\n got %q\nwant %q", got, want)
	}
	if segs[1].Seq != 3 || !strings.HasSuffix(segs[1].Path(), "00000000000000000003.seg") {
		t.Fatalf("the crashed active segment was not sealed as 3.seg: %s", segs[1].Path())
	}
	if r := b.Stats().Recovered; r.Segments != 2 {
		t.Fatalf("Recovered.Segments = %d, want 2", r.Segments)
	}
	// New writes get a fresh sequence.
	mustWrite(t, b, makeBatch(4, 1, ""))
	if b.active.seq != 4 {
		t.Fatalf("new active segment seq %d, want 4", b.active.seq)
	}
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, Options{Dir: dir})
	if _, err := Open(Options{Dir: dir}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close = %v, want nil", err)
	}
	b2 := openT(t, Options{Dir: dir})
	if err := b2.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestAgentID(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, Options{Dir: dir})
	generated := b.AgentID()
	if len(generated) != 36 {
		t.Fatalf("generated agent id %q, want a UUID", generated)
	}
	b.Close()
	b = openT(t, Options{Dir: dir})
	if b.AgentID() != generated {
		t.Fatalf("agent id changed across reopen: %q -> %q", generated, b.AgentID())
	}
	b.Close()
	b = openT(t, Options{Dir: dir, AgentID: "pod-7"})
	if b.AgentID() != "pod-7" {
		t.Fatalf("AgentID = %q, want the configured pod-7", b.AgentID())
	}
	b.Close()
	b = openT(t, Options{Dir: dir})
	if b.AgentID() != "pod-7" {
		t.Fatalf("configured agent id not persisted: %q", b.AgentID())
	}
}

func TestBadMeta(t *testing.T) {
	for _, name := range []string{metaName, stateName} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			b := openT(t, Options{Dir: dir})
			mustWrite(t, b, makeBatch(1, 1, ""))
			b.Close()
			if err := os.WriteFile(filepath.Join(dir, name), []byte("garbage"), 0o640); err != nil {
				t.Fatal(err)
			}
			if _, err := Open(Options{Dir: dir}); !errors.Is(err, ErrBadMeta) {
				t.Fatalf("Open with corrupt %s = %v, want ErrBadMeta", name, err)
			}
			// The failed Open released the lock.
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
			openT(t, Options{Dir: dir})
		})
	}
}

func TestSyncPolicies(t *testing.T) {
	t.Run("interval", func(t *testing.T) {
		b := openT(t, Options{Dir: t.TempDir(), Sync: SyncInterval, SyncInterval: 5 * time.Millisecond})
		mustWrite(t, b, makeBatch(1, 1, ""))
		if cps := b.Checkpoints(); len(cps) != 1 {
			t.Fatalf("Checkpoints = %v right after Write", cps)
		}
		waitFor(t, func() bool { return b.Stats().Syncs >= 1 })
	})
	t.Run("never", func(t *testing.T) {
		dir := t.TempDir()
		b := openT(t, Options{Dir: dir, Sync: SyncNever})
		mustWrite(t, b, makeBatch(1, 1, ""))
		mustWrite(t, b, makeBatch(2, 1, ""))
		if s := b.Stats(); s.Syncs != 0 {
			t.Fatalf("SyncNever fsynced %d times on Write", s.Syncs)
		}
		if err := b.Seal(); err != nil {
			t.Fatal(err)
		}
		if s := b.Stats(); s.Syncs != 1 {
			t.Fatalf("Seal made %d fsyncs, want 1", s.Syncs)
		}
		mustWrite(t, b, makeBatch(3, 1, ""))
		seg, err := b.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Ack(seg); err != nil {
			t.Fatal(err)
		}
		if s := b.Stats(); s.Syncs != 2 {
			t.Fatalf("Ack under SyncNever made %d fsyncs in total, want 2: the active segment must be durable before the state file names its checkpoints", s.Syncs)
		}
		crash(t, b)
		b = openT(t, Options{Dir: dir})
		if cps := b.Checkpoints(); len(cps) != 1 || cps[0].Offset != 3 {
			t.Fatalf("Checkpoints = %v", cps)
		}
	})
}

func TestOpenValidation(t *testing.T) {
	if _, err := Open(Options{}); err == nil {
		t.Fatal("Open without Dir succeeded")
	}
	if _, err := Open(Options{Dir: t.TempDir(), Sync: SyncPolicy(9)}); err == nil {
		t.Fatal("Open with an unknown sync policy succeeded")
	}
}

func TestCheckpointEncoding(t *testing.T) {
	cps := []Checkpoint{
		{Key: "", Offset: 0, Meta: nil},
		{Key: "/var/log/app.log", Offset: 1<<62 + 5, Meta: []byte{0, 1, 2}},
		{Key: strings.Repeat("s", 300), Offset: -1, Meta: make([]byte, 200)},
	}
	enc := appendCheckpoints(nil, cps)
	if len(enc) != checkpointsSize(cps) {
		t.Fatalf("encoded %d bytes, checkpointsSize says %d", len(enc), checkpointsSize(cps))
	}
	var got []Checkpoint
	if err := decodeCheckpoints(enc, func(s []byte, o int64, m []byte) {
		got = append(got, Checkpoint{string(s), o, append([]byte(nil), m...)})
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint([]Checkpoint{{"", 0, []byte{}}, cps[1], cps[2]}) {
		t.Fatalf("round trip = %v", got)
	}
	for cut := range len(enc) {
		if err := decodeCheckpoints(enc[:cut], func([]byte, int64, []byte) {}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated at %d: %v, want ErrCorrupt", cut, err)
		}
	}
	if err := decodeCheckpoints(append(enc, 0), func([]byte, int64, []byte) {}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("trailing byte: %v, want ErrCorrupt", err)
	}
}

func TestSegmentNames(t *testing.T) {
	tests := []struct {
		name string
		seq  uint64
		ext  string
		ok   bool
	}{
		{"00000000000000000001.seg", 1, ".seg", true},
		{"00000000000000000042.open", 42, ".open", true},
		{"18446744073709551615.seg.bad", 1<<64 - 1, ".seg.bad", true},
		{"00000000000000000001.open.bad", 1, ".open.bad", true},
		{"00000000000000000001.seg.tmp", 0, "", false},
		{"0000000000000000000x.seg", 0, "", false},
		{"meta", 0, "", false},
		{"LOCK", 0, "", false},
	}
	for _, tt := range tests {
		seq, ext, ok := parseSegmentName(tt.name)
		if seq != tt.seq || ext != tt.ext || ok != tt.ok {
			t.Errorf("parseSegmentName(%q) = %d, %q, %v; want %d, %q, %v", tt.name, seq, ext, ok, tt.seq, tt.ext, tt.ok)
		}
	}
	if got := segmentName(7, sealedExt); got != "00000000000000000007.seg" {
		t.Errorf("segmentName = %s", got)
	}
}

// WaitEmpty returns once the last sealed segment is acknowledged, not
// before; on ctx's end or a closed buffer it returns their errors.
func TestWaitEmpty(t *testing.T) {
	b := openT(t, Options{Dir: t.TempDir()})
	if err := b.WaitEmpty(context.Background()); err != nil {
		t.Fatalf("empty buffer: %v", err)
	}
	mustWrite(t, b, makeBatch(1, 2, "app"))
	if err := b.Seal(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.WaitEmpty(context.Background()) }()
	seg, err := b.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("WaitEmpty returned %v with a segment in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	if err := b.Ack(seg); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("after the Ack: %v", err)
	}

	mustWrite(t, b, makeBatch(2, 2, "app"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.WaitEmpty(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: %v", err)
	}
	go func() { done <- b.WaitEmpty(context.Background()) }()
	b.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("closed: %v", err)
	}
}

// AckAll acknowledges a group of segments as one: all or none, and the
// checkpoints of their commit frames survive their deletion.
func TestAckAll(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, Options{Dir: dir})
	for n := 1; n <= 4; n++ {
		mustWrite(t, b, makeBatch(n, 1, ""))
		if err := b.Seal(); err != nil {
			t.Fatal(err)
		}
	}
	var segs []*Segment
	for range 4 {
		seg, err := b.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		segs = append(segs, seg)
	}
	// A group naming a segment twice, or one not in flight, acks nothing.
	if err := b.AckAll([]*Segment{segs[0], segs[1], segs[0]}); !errors.Is(err, ErrNotInFlight) {
		t.Fatalf("AckAll with a duplicate = %v, want ErrNotInFlight", err)
	}
	b.Release(segs[3])
	if err := b.AckAll(segs); !errors.Is(err, ErrNotInFlight) {
		t.Fatalf("AckAll with a released segment = %v, want ErrNotInFlight", err)
	}
	for _, seg := range segs {
		if _, err := os.Stat(seg.Path()); err != nil {
			t.Fatalf("segment %d touched by a refused AckAll: %v", seg.Seq, err)
		}
	}
	again, err := b.Next(context.Background())
	if err != nil || again != segs[3] {
		t.Fatalf("Next = %v, %v; want the released segment", again, err)
	}
	if err := b.AckAll(segs); err != nil {
		t.Fatal(err)
	}
	for _, seg := range segs {
		if _, err := os.Stat(seg.Path()); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("acked segment %d still on disk: %v", seg.Seq, err)
		}
	}
	if s := b.Stats(); s.SegmentsSealed != 0 {
		t.Fatalf("stats after AckAll %+v, want no segment left", s)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openT(t, Options{Dir: dir})
	if s := b.Stats(); s.SegmentsSealed != 0 {
		t.Fatalf("after reopening %+v, want no segment", s)
	}
	if cps := b.Checkpoints(); len(cps) != 1 || cps[0].Offset != 4 {
		t.Fatalf("checkpoints after reopening %v, want src at 4", cps)
	}
}

// A sealed segment damaged while the buffer runs (Frames: ErrCorrupt) is
// salvaged like recovery does at Open: a copy set aside, the intact
// commits handed out again; a damaged header sets it aside whole.
func TestSalvage(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, Options{Dir: dir})
	for n := 1; n <= 3; n++ {
		mustWrite(t, b, makeBatch(n, 5, ""))
	}
	if err := b.Seal(); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, b, makeBatch(4, 5, ""))
	if err := b.Seal(); err != nil {
		t.Fatal(err)
	}
	first, err := b.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Damage the last batch of the first segment.
	f, err := os.OpenFile(first.Path(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff, 0xff, 0xff}, first.Size-20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := first.Frames(func(Frame) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Frames of the damaged segment = %v, want ErrCorrupt", err)
	}
	bad, err := b.Salvage(first)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, bad)); bad == "" || err != nil {
		t.Fatalf("copy set aside %q: %v", bad, err)
	}
	again, err := b.Next(context.Background())
	if err != nil || again != first {
		t.Fatalf("Next = %v, %v; want the salvaged segment again", again, err)
	}
	var got []string
	if err := again.Frames(func(f Frame) error { got = append(got, string(f.Data)); return nil }); err != nil {
		t.Fatalf("Frames after Salvage: %v", err)
	}
	var want []string
	for n := 1; n <= 2; n++ {
		for i := range 5 {
			want = append(want, record(n, i))
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || again.Records != 10 {
		t.Fatalf("salvaged segment holds %v (Records %d), want the two intact batches %v", got, again.Records, want)
	}
	if err := b.Ack(again); err != nil {
		t.Fatal(err)
	}

	// A damaged header: the segment is set aside whole and leaves the buffer.
	second, err := b.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(second.Path(), []byte("not a segment header at all, not at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Salvage(second); err != nil {
		t.Fatal(err)
	}
	if s := b.Stats(); s.SegmentsSealed != 0 || s.BytesOnDisk != 0 {
		t.Fatalf("stats after salvaging a headless segment: %+v", s)
	}
	if _, err := os.Stat(second.Path() + badExt); err != nil {
		t.Fatalf("headless segment not set aside: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openT(t, Options{Dir: dir})
	if s := b.Stats(); s.SegmentsSealed != 0 {
		t.Fatalf("after reopening: %+v", s)
	}
	if cps := b.Checkpoints(); len(cps) != 1 || cps[0].Offset != 4 {
		t.Fatalf("checkpoints after reopening %v, want src at 4", cps)
	}
}
