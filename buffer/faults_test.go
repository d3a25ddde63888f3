package buffer

import (
	"errors"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
)

// faultyDisk is the fault-injecting file layer: it replaces a Buffer's
// segment file operations, passing them to the real file until told to
// fail. A failed fsync cannot be had for real on a healthy disk.
type faultyDisk struct {
	mu                            sync.Mutex
	failSync, failWrite, failTrim int // fail the next n calls; -1: all
	syncs                         int // fsyncs that reached the file
	// beforeSync, when set, runs before each fsync (outside mu).
	beforeSync func()
}

func injectFaults(b *Buffer) *faultyDisk {
	d := &faultyDisk{}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ops = fileOps{
		writeAt: func(f *os.File, p []byte, off int64) (int, error) {
			if d.take(&d.failWrite) {
				return 0, syscall.EIO
			}
			return f.WriteAt(p, off)
		},
		sync: func(f *os.File) error {
			d.mu.Lock()
			hook := d.beforeSync
			d.mu.Unlock()
			if hook != nil {
				hook()
			}
			if d.take(&d.failSync) {
				return syscall.EIO
			}
			d.mu.Lock()
			d.syncs++
			d.mu.Unlock()
			return f.Sync()
		},
		truncate: func(f *os.File, size int64) error {
			if d.take(&d.failTrim) {
				return syscall.EIO
			}
			return f.Truncate(size)
		},
	}
	return d
}

func (d *faultyDisk) set(n *int, v int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	*n = v
}

func (d *faultyDisk) take(n *int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case *n < 0:
		return true
	case *n > 0:
		*n--
		return true
	}
	return false
}

// A failed fsync cuts the active segment back to its last durable batch,
// seals that, and the buffer goes on in a new segment: the batch whose
// fsync failed is not acknowledged and never appears, even though its
// bytes were in the page cache (fsyncgate: a retried fsync would have
// "succeeded" without them reaching the disk).
func TestFsyncErrorRecoversInPlace(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, Options{Dir: dir})
	d := injectFaults(b)
	mustWrite(t, b, makeBatch(1, 2, ""))
	mustWrite(t, b, makeBatch(2, 2, ""))

	d.set(&d.failSync, 1)
	err := b.Write(makeBatch(3, 2, ""))
	if !errors.Is(err, ErrNotDurable) || !errors.Is(err, syscall.EIO) || errors.Is(err, ErrFailed) {
		t.Fatalf("Write = %v, want ErrNotDurable wrapping EIO, not ErrFailed", err)
	}
	st := b.Stats()
	if st.Recoveries != 1 || st.SegmentsSealed != 1 || st.Failed != nil || !errors.Is(st.DiskError, syscall.EIO) || st.DiskErrorSince.IsZero() {
		t.Fatalf("Stats after the failed fsync = %+v: want one recovery, the durable part sealed, the disk error reported, not failed", st)
	}
	if cps := b.Checkpoints(); len(cps) != 1 || cps[0].Offset != 2 {
		t.Fatalf("Checkpoints = %v, want src at 2 (batch 3 never durable)", cps)
	}
	select {
	case <-b.Failed():
		t.Fatal("Failed closed after an in-place recovery")
	default:
	}

	mustWrite(t, b, makeBatch(4, 2, ""))
	if st := b.Stats(); st.DiskError != nil || st.DiskErrors != 1 {
		t.Fatalf("after a good write: DiskError %v, DiskErrors %d; want nil, 1", st.DiskError, st.DiskErrors)
	}
	want := []string{record(1, 0), record(1, 1), record(2, 0), record(2, 1), record(4, 0), record(4, 1)}
	crash(t, b)
	b = openT(t, Options{Dir: dir})
	if got := recordsOf(t, b); !slices.Equal(got, want) {
		t.Fatalf("records after reopen = %q, want %q", got, want)
	}
	if cps := b.Checkpoints(); len(cps) != 1 || cps[0].Offset != 4 {
		t.Fatalf("Checkpoints after reopen = %v, want src at 4", cps)
	}
}

// A failed fsync of a segment's first batch leaves nothing durable in it:
// the file is removed and the next Write starts over.
func TestFsyncErrorOnFirstBatch(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, Options{Dir: dir})
	d := injectFaults(b)
	d.set(&d.failSync, 1)
	if err := b.Write(makeBatch(1, 2, "")); !errors.Is(err, ErrNotDurable) {
		t.Fatalf("Write = %v, want ErrNotDurable", err)
	}
	if st := b.Stats(); st.SegmentsSealed != 0 || st.BytesOnDisk != 0 || st.ActiveBytes != 0 {
		t.Fatalf("Stats = %+v, want nothing on disk", st)
	}
	if names := dirNames(t, dir); slices.ContainsFunc(names, func(n string) bool { return n[0] == '0' }) {
		t.Fatalf("segment files left: %v", names)
	}
	mustWrite(t, b, makeBatch(2, 2, ""))
	crash(t, b)
	b = openT(t, Options{Dir: dir})
	if got, want := recordsOf(t, b), []string{record(2, 0), record(2, 1)}; !slices.Equal(got, want) {
		t.Fatalf("records = %q, want %q", got, want)
	}
}

// Writers that appended while a sync leader's fsync was failing are all
// refused; the batch made durable before is kept.
func TestFsyncErrorFailsGroup(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, Options{Dir: dir})
	d := injectFaults(b)
	mustWrite(t, b, makeBatch(0, 1, ""))
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	d.mu.Lock()
	d.beforeSync = func() {
		once.Do(func() {
			close(entered)
			<-release
		})
	}
	d.failSync = 1
	d.mu.Unlock()
	errs := make(chan error, 4)
	go func() { errs <- b.Write(makeBatch(1, 2, "")) }()
	<-entered
	for n := 2; n <= 4; n++ {
		go func() { errs <- b.Write(makeBatch(n, 2, "")) }()
	}
	waitFor(t, func() bool { return b.Stats().Writes == 5 })
	close(release)
	for range 4 {
		if err := <-errs; !errors.Is(err, ErrNotDurable) {
			t.Fatalf("Write = %v, want ErrNotDurable", err)
		}
	}
	mustWrite(t, b, makeBatch(5, 1, ""))
	crash(t, b)
	b = openT(t, Options{Dir: dir})
	if got, want := recordsOf(t, b), []string{record(0, 0), record(5, 0)}; !slices.Equal(got, want) {
		t.Fatalf("records = %q, want %q", got, want)
	}
}

// A seal whose fsync fails keeps what was durable: everything, since every
// SyncAlways batch was fsync'd before its Write returned.
func TestSealFsyncErrorKeepsDurable(t *testing.T) {
	b := openT(t, Options{Dir: t.TempDir(), Sync: SyncAlways})
	d := injectFaults(b)
	mustWrite(t, b, makeBatch(1, 3, ""))
	d.set(&d.failSync, 1)
	if err := b.Seal(); err != nil {
		t.Fatalf("Seal = %v, want nil: the durable data is sealed", err)
	}
	if st := b.Stats(); st.Recoveries != 1 || !errors.Is(st.DiskError, syscall.EIO) {
		t.Fatalf("Stats = %+v, want one recovery and the disk error", st)
	}
	if got, want := recordsOf(t, b), []string{record(1, 0), record(1, 1), record(1, 2)}; !slices.Equal(got, want) {
		t.Fatalf("records = %q, want %q", got, want)
	}
	mustWrite(t, b, makeBatch(2, 1, ""))
}

// When the recovery's own fsync fails, the disk is not usable: the buffer
// fails for good (Failed is closed) and the next Open keeps every
// acknowledged batch.
func TestFsyncErrorUnrecoverable(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, Options{Dir: dir})
	d := injectFaults(b)
	mustWrite(t, b, makeBatch(1, 2, ""))
	d.set(&d.failSync, -1)
	if err := b.Write(makeBatch(2, 2, "")); !errors.Is(err, ErrFailed) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("Write = %v, want ErrFailed wrapping EIO", err)
	}
	select {
	case <-b.Failed():
	default:
		t.Fatal("Failed not closed")
	}
	if st := b.Stats(); st.Failed == nil {
		t.Fatalf("Stats.Failed = nil")
	}
	d.set(&d.failSync, 0)
	if err := b.Write(makeBatch(3, 2, "")); !errors.Is(err, ErrFailed) {
		t.Fatalf("Write after failure = %v, want ErrFailed", err)
	}
	if err := b.Close(); !errors.Is(err, ErrFailed) {
		t.Fatalf("Close = %v, want ErrFailed", err)
	}
	b = openT(t, Options{Dir: dir})
	if got, want := recordsOf(t, b), []string{record(1, 0), record(1, 1)}; !slices.Equal(got, want) {
		t.Fatalf("records = %q, want %q", got, want)
	}
}

// Under SyncInterval a batch is acknowledged before its fsync: a failed
// background fsync cannot be cut without losing acknowledged batches, so
// the buffer fails for good and recovery at the next Open keeps what
// verifies.
func TestSyncIntervalFsyncErrorFails(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, Options{Dir: dir, Sync: SyncInterval})
	d := injectFaults(b)
	mustWrite(t, b, makeBatch(1, 2, ""))
	d.set(&d.failSync, -1)
	<-b.Failed()
	if err := b.Write(makeBatch(2, 1, "")); !errors.Is(err, ErrFailed) {
		t.Fatalf("Write = %v, want ErrFailed", err)
	}
	crash(t, b)
	b = openT(t, Options{Dir: dir})
	if got, want := recordsOf(t, b), []string{record(1, 0), record(1, 1)}; !slices.Equal(got, want) {
		t.Fatalf("records = %q, want %q", got, want)
	}
}

// A failed write whose half batch cannot be truncated away is cut back to
// the last durable batch like a failed fsync.
func TestWriteErrorUntruncatableRecovers(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, Options{Dir: dir})
	d := injectFaults(b)
	mustWrite(t, b, makeBatch(1, 2, ""))
	d.set(&d.failWrite, 1)
	d.set(&d.failTrim, 1)
	if err := b.Write(makeBatch(2, 2, "")); !errors.Is(err, ErrNotDurable) {
		t.Fatalf("Write = %v, want ErrNotDurable", err)
	}
	mustWrite(t, b, makeBatch(3, 1, ""))
	crash(t, b)
	b = openT(t, Options{Dir: dir})
	if got, want := recordsOf(t, b), []string{record(1, 0), record(1, 1), record(3, 0)}; !slices.Equal(got, want) {
		t.Fatalf("records = %q, want %q", got, want)
	}
}

// A failed write (a full disk) is reported in Stats until a Write
// succeeds; a seal that succeeds meanwhile does not clear it, since it
// does not show that batches fit again.
func TestDiskErrorUntilWriteSucceeds(t *testing.T) {
	b := openT(t, Options{Dir: t.TempDir()})
	d := injectFaults(b)
	mustWrite(t, b, makeBatch(1, 2, ""))
	d.set(&d.failWrite, 1)
	if err := b.Write(makeBatch(2, 2, "")); !errors.Is(err, syscall.EIO) || errors.Is(err, ErrNotDurable) || errors.Is(err, ErrFailed) {
		t.Fatalf("Write = %v, want the disk error alone", err)
	}
	if err := b.Seal(); err != nil {
		t.Fatal(err)
	}
	if st := b.Stats(); !errors.Is(st.DiskError, syscall.EIO) || st.DiskErrors != 1 || st.Recoveries != 0 {
		t.Fatalf("Stats after a failed write and a good seal = %+v, want the write's error kept", st)
	}
	mustWrite(t, b, makeBatch(3, 1, ""))
	if st := b.Stats(); st.DiskError != nil || !st.DiskErrorSince.IsZero() {
		t.Fatalf("Stats after a good write = %+v, want no disk error", st)
	}
}

// A disk whose every fsync fails is not recovered from forever: after
// maxCutsInARow cuts without a Write succeeding the buffer fails.
func TestFsyncAlwaysFailingFails(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, Options{Dir: dir})
	d := injectFaults(b)
	d.set(&d.failSync, -1)
	for i := range maxCutsInARow {
		if err := b.Write(makeBatch(i, 1, "")); !errors.Is(err, ErrNotDurable) {
			t.Fatalf("Write #%d = %v, want ErrNotDurable", i, err)
		}
	}
	if err := b.Write(makeBatch(9, 1, "")); !errors.Is(err, ErrFailed) {
		t.Fatalf("Write past maxCutsInARow = %v, want ErrFailed", err)
	}
	<-b.Failed()
	crash(t, b)
	b = openT(t, Options{Dir: dir})
	if got := recordsOf(t, b); len(got) != 0 {
		t.Fatalf("records = %q, want none (nothing was acknowledged)", got)
	}
}
