package buffer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// Defaults for zero Options fields.
const (
	DefaultMaxSize      = 1 << 30
	DefaultSegmentSize  = 8 << 20
	DefaultSyncInterval = time.Second
)

// Buffer is the disk segment log: producers Write batches, consumers take
// sealed segments with Next and Ack them once shipped. All methods are safe
// for concurrent use.
type Buffer struct {
	opts     Options
	dir      string
	lockFile *os.File
	ops      fileOps
	agentID  string
	instance instanceMeta // files.go: InstanceID, ObjectKeyID
	report   RecoveryReport
	readBufs sync.Pool

	stop      chan struct{}  // closed by Close to stop the SyncInterval loop
	loop      sync.WaitGroup // the SyncInterval loop
	acks      sync.WaitGroup // Acks doing file work; Close waits for them
	closeOnce sync.Once
	closeErr  error

	// stateMu serialises writes of the state file. It is taken after mu
	// (or without it), never before it.
	stateMu sync.Mutex
	// stateWritten is the generation of the last state file written;
	// guarded by stateMu.
	stateWritten uint64

	// mu guards everything below.
	mu sync.Mutex
	// cond (on mu) is broadcast when a sync ends, syncedPos advances, or the
	// buffer fails or closes.
	cond *sync.Cond
	// changed is closed and replaced when a segment is sealed, released or
	// acked, and on failure or Close; Next and WaitForSpace wait on it.
	changed chan struct{}
	closed  bool
	failed  error
	// failedCh is closed when failed is set (Failed).
	failedCh chan struct{}
	// cuts records each in-place recovery (cutActiveLocked), in order:
	// positions in (keep, end] were cut off. A writer waiting for its
	// batch to become durable looks up the first cut after its append.
	cuts []cut
	// diskErr is the last disk error of a Write, Seal or Ack since the
	// last one that succeeded, and diskErrSince when that run began.
	diskErr      error
	diskErrOp    diskOp
	diskErrSince time.Time
	diskErrors   uint64
	nextSeq      uint64
	active       *activeSegment
	sealed       []*Segment // sealed and not acked, ascending Seq
	diskSize     int64      // bytes of all segment files, active included
	// appendedPos and syncedPos count bytes appended since Open across all
	// segments; data up to syncedPos is known to be on stable storage.
	appendedPos, syncedPos uint64
	// syncing is true while a sync leader fsyncs the active segment with mu
	// released; the active file must not be closed or replaced meanwhile.
	syncing bool
	// pending holds the checkpoints of batches appended but not yet synced
	// (SyncAlways), in append order. Each entry aliases the writer's Batch,
	// which is safe because the writer is blocked until the entry is applied
	// or the buffer fails (which clears pending).
	pending     []pendingCommit
	checkpoints checkpointMap // durable position per source
	stateGen    uint64        // generation of the last checkpoint snapshot
	scratch     []byte        // tag and commit frames of the batch being written
	fullRejects uint64
	writes      uint64
	syncs       uint64
	recoveries  uint64
	// cutsInARow counts in-place recoveries since the last Write that
	// succeeded (maxCutsInARow).
	cutsInARow int
}

// maxCutsInARow bounds in-place recoveries without a Write succeeding in
// between: a segment with nothing durable yet is cut without an fsync, so
// a disk whose every fsync fails would otherwise be "recovered" from
// forever. Past it the buffer fails, so the process is restarted and its
// supervisor shows the crash loop.
const maxCutsInARow = 3

// cut is one in-place recovery: appended positions in (keep, end] were
// not durable and were cut off.
type cut struct {
	keep, end uint64
	err       error // what Write returns for a batch cut off
}

// activeSegment is the one segment being appended to.
type activeSegment struct {
	f       *os.File
	seq     uint64
	start   uint64 // appendedPos before its header: where it begins in the byte count
	path    string
	created time.Time
	size    int64
	tag     string
	commits int
	records int
	dead    int
	// firstData is when the first record or dead letter was appended
	// (by Options.Now), for SealOlderThan.
	firstData        time.Time
	minTime, maxTime int64
}

type pendingCommit struct {
	pos uint64 // appendedPos after the batch's commit frame
	cps []Checkpoint
}

// fileOps are the file operations of the write path. Tests replace them to
// inject disk errors (a full disk, a failing fsync, a torn write) that cannot
// be had for real.
type fileOps struct {
	writeAt  func(f *os.File, p []byte, off int64) (int, error)
	sync     func(f *os.File) error
	truncate func(f *os.File, size int64) error
}

func osFileOps() fileOps {
	return fileOps{
		writeAt:  (*os.File).WriteAt,
		sync:     (*os.File).Sync,
		truncate: (*os.File).Truncate,
	}
}

// withFaults puts Options.Faults in front of ops.
func withFaults(ops fileOps, faults func(FileOp, string) error) fileOps {
	if faults == nil {
		return ops
	}
	return fileOps{
		writeAt: func(f *os.File, p []byte, off int64) (int, error) {
			if err := faults(OpWrite, f.Name()); err != nil {
				return 0, err
			}
			return ops.writeAt(f, p, off)
		},
		sync: func(f *os.File) error {
			if err := faults(OpSync, f.Name()); err != nil {
				return err
			}
			return ops.sync(f)
		},
		truncate: func(f *os.File, size int64) error {
			if err := faults(OpTruncate, f.Name()); err != nil {
				return err
			}
			return ops.truncate(f, size)
		},
	}
}

// AgentID is the configured agent id, or the one generated for this
// directory when none is configured. Several buffers may share it; see
// InstanceID for an id unique to the directory.
func (b *Buffer) AgentID() string { return b.agentID }

// Dir is the buffer's directory.
func (b *Buffer) Dir() string { return b.dir }

// Write appends batch as one unit: after a crash recovery keeps all of it or
// none of it. It returns once the batch is durable per Options.Sync
// (SyncAlways: fsync'd, sharing the fsync with concurrent writers). The
// batch's checkpoints become visible in Checkpoints at the same moment. An
// empty batch is a no-op. The batch may be reused once Write returns.
//
// Write returns ErrFull, having written nothing, when the segment files plus
// batch.Size() would exceed MaxSize (WaitForSpace(ctx, batch.Size()) waits
// for exactly that room), and ErrTooLarge when the batch alone is larger
// than MaxSize or holds a frame larger than MaxFrameData. Framing (the tag
// and commit frames, a new segment's header) is not counted against the
// limit, so the files exceed MaxSize by at most one batch's framing.
//
// A disk error is returned as is when nothing of the batch stays (a full
// disk); wrapping ErrNotDurable when a failed fsync cut the batch off and
// the buffer recovered in place; wrapping ErrFailed when it could not
// (see "Disk faults" in the package doc). The batch is acknowledged only
// when Write returns nil.
func (b *Buffer) Write(batch *Batch) error {
	if batch.Empty() {
		return nil
	}
	err := b.write(batch)
	if !errors.Is(err, ErrFull) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrClosed) {
		b.mu.Lock()
		b.noteDiskLocked(diskWrite, err)
		if err == nil {
			b.cutsInARow = 0
		}
		b.mu.Unlock()
	}
	return err
}

func (b *Buffer) write(batch *Batch) error {
	if batch.tooLarge || len(batch.tag) > MaxFrameData || checkpointsSize(batch.checkpoints) > MaxFrameData {
		return fmt.Errorf("%w: a frame exceeds %d bytes", ErrTooLarge, MaxFrameData)
	}
	size := int64(batch.Size())
	if size > b.opts.MaxSize {
		return fmt.Errorf("%w: batch of %d bytes, max_size %d", ErrTooLarge, size, b.opts.MaxSize)
	}
	// Bytes this batch adds to a segment, tag frame aside.
	frames := size + frameHeaderSize + int64(checkpointsSize(batch.checkpoints))

	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		if err := b.usableLocked(); err != nil {
			return err
		}
		if b.diskSize+size > b.opts.MaxSize {
			b.fullRejects++
			return fmt.Errorf("%w: %d bytes on disk + batch of %d > max_size %d", ErrFull, b.diskSize, size, b.opts.MaxSize)
		}
		a := b.active
		if a == nil {
			if err := b.createActiveLocked(); err != nil {
				return err
			}
			continue
		}
		n := frames
		if batch.tag != a.tag {
			n += frameHeaderSize + int64(len(batch.tag))
		}
		if a.size > segHeaderSize && a.size+n > b.opts.SegmentSize {
			if b.syncing {
				b.cond.Wait()
				continue
			}
			if err := b.sealLocked(); err != nil && !errors.Is(err, ErrNotDurable) {
				return err
			}
			// Sealed, or the seal's fsync failed and the buffer recovered
			// in place: either way the next pass starts a new segment.
			continue
		}
		break
	}
	if err := b.appendLocked(batch); err != nil {
		return err
	}
	if b.opts.Sync != SyncAlways {
		b.checkpoints.apply(batch.checkpoints)
		return nil
	}
	mine, cuts := b.appendedPos, len(b.cuts)
	if len(batch.checkpoints) > 0 {
		b.pending = append(b.pending, pendingCommit{pos: mine, cps: batch.checkpoints})
	}
	for {
		if len(b.cuts) > cuts {
			// A failed fsync cut the active segment back to what was
			// durable: the batch is durable only if it lies within.
			if c := b.cuts[cuts]; mine > c.keep {
				return c.err
			}
			return nil
		}
		if b.syncedPos >= mine {
			return nil
		}
		if b.failed != nil {
			return b.failedErrLocked()
		}
		if b.syncing {
			b.cond.Wait()
			continue
		}
		b.leadSyncLocked()
	}
}

// usableLocked reports why the buffer cannot take writes, if it cannot.
func (b *Buffer) usableLocked() error {
	if b.closed {
		return ErrClosed
	}
	if b.failed != nil {
		return b.failedErrLocked()
	}
	return nil
}

func (b *Buffer) failedErrLocked() error {
	return fmt.Errorf("%w: %w", ErrFailed, b.failed)
}

// appendLocked writes the batch's tag frame, frames and commit frame at the
// end of the active segment. On failure it truncates what it wrote, so no
// half batch stays; if that fails too the buffer enters the failed state.
func (b *Buffer) appendLocked(batch *Batch) error {
	a := b.active
	now := b.opts.Now()
	ts := now.UnixMilli()
	b.scratch = b.scratch[:0]
	if batch.tag != a.tag {
		b.scratch = appendTagFrame(b.scratch, ts, batch.tag)
	}
	tagLen := len(b.scratch)
	b.scratch = appendCommitFrame(b.scratch, ts, batch.checkpoints)

	start := a.size
	off := start
	err := b.writeAtLocked(a.f, b.scratch[:tagLen], &off)
	if err == nil && len(batch.buf) > 0 {
		err = b.writeAtLocked(a.f, batch.agg, &off)
	}
	if err == nil {
		err = b.writeAtLocked(a.f, batch.buf, &off)
	}
	if err == nil {
		err = b.writeAtLocked(a.f, b.scratch[tagLen:], &off)
	}
	if err != nil {
		err = fmt.Errorf("buffer: write segment %s: %w", a.path, err)
		if terr := b.ops.truncate(a.f, start); terr != nil {
			// Bytes of a half batch may stay: cut back to what is durable.
			return b.faultLocked(fmt.Errorf("%w; truncating the partial batch also failed: %w", err, terr))
		}
		return err
	}
	n := off - start
	a.size += n
	b.diskSize += n
	b.appendedPos += uint64(n)
	b.writes++
	a.commits++
	a.tag = batch.tag
	if frames := batch.records + batch.deadLetters; frames > 0 {
		if a.records+a.dead == 0 {
			a.firstData = now
			a.minTime, a.maxTime = batch.minTime, batch.maxTime
		} else {
			a.minTime = min(a.minTime, batch.minTime)
			a.maxTime = max(a.maxTime, batch.maxTime)
		}
		a.records += batch.records
		a.dead += batch.deadLetters
	}
	return nil
}

func (b *Buffer) writeAtLocked(f *os.File, p []byte, off *int64) error {
	if len(p) == 0 {
		return nil
	}
	n, err := b.ops.writeAt(f, p, *off)
	*off += int64(n)
	return err
}

// leadSyncLocked fsyncs the active segment with mu released, so other
// writers keep appending meanwhile; everything appended before it started is
// durable when it returns. The caller checked !b.syncing and that there is
// unsynced data (hence an active segment).
func (b *Buffer) leadSyncLocked() {
	a := b.active
	target := b.appendedPos
	b.syncing = true
	b.mu.Unlock()
	err := b.ops.sync(a.f)
	b.mu.Lock()
	b.syncing = false
	b.syncs++
	if err != nil {
		_ = b.faultLocked(fmt.Errorf("buffer: fsync %s: %w", a.path, err))
	} else {
		b.markSyncedLocked(target)
	}
	b.cond.Broadcast()
}

// syncActiveLocked makes everything appended so far durable, waiting for a
// sync in progress first.
func (b *Buffer) syncActiveLocked() error {
	for {
		if b.failed != nil {
			return b.failedErrLocked()
		}
		if b.syncedPos >= b.appendedPos || b.active == nil {
			return nil
		}
		if b.syncing {
			b.cond.Wait()
			continue
		}
		b.leadSyncLocked()
	}
}

// markSyncedLocked records that data up to pos is durable and applies the
// checkpoints of the batches it covers, in append order.
func (b *Buffer) markSyncedLocked(pos uint64) {
	if pos <= b.syncedPos {
		return
	}
	b.syncedPos = pos
	i := 0
	for ; i < len(b.pending) && b.pending[i].pos <= pos; i++ {
		b.checkpoints.apply(b.pending[i].cps)
	}
	n := copy(b.pending, b.pending[i:])
	clear(b.pending[n:])
	b.pending = b.pending[:n]
}

// failLocked puts the buffer into the failed state: Write refuses until
// reopened. Checkpoints of unsynced batches are discarded.
func (b *Buffer) failLocked(err error) {
	if b.failed == nil {
		b.failed = err
		close(b.failedCh)
	}
	clear(b.pending)
	b.pending = b.pending[:0]
	b.cond.Broadcast()
	b.notifyLocked()
}

// faultLocked handles a failed fsync of the active segment, or a failed
// write that could not be undone. Under SyncAlways no batch past the last
// fsync that succeeded has been acknowledged, so the buffer recovers in
// place (cutActiveLocked) and returns an error wrapping ErrNotDurable.
// Under SyncInterval and SyncNever such batches were acknowledged when
// Write returned: cutting them would lose them for certain, so the buffer
// fails (ErrFailed) and the next Open keeps whatever of them verifies.
func (b *Buffer) faultLocked(cause error) error {
	a := b.active
	for b.syncing {
		// A failed append waits for the sync leader; the descriptor is
		// not closed under it.
		b.cond.Wait()
	}
	if b.failed != nil {
		return b.failedErrLocked()
	}
	if b.active != a || a == nil {
		// The leader's fsync failed and cut the segment, with the half
		// batch, meanwhile.
		return fmt.Errorf("%w: %w", ErrNotDurable, cause)
	}
	if b.opts.Sync != SyncAlways {
		b.failLocked(cause)
		return b.failedErrLocked()
	}
	return b.cutActiveLocked(cause)
}

// cutActiveLocked recovers in place from a failed fsync (or an undoable
// failed write) of the active segment. After a failed fsync nothing says
// which of the unsynced pages reached the disk, and Linux may have marked
// them clean and reports the error once (so a second fsync "succeeds"):
// everything after the last fsync that succeeded is treated as lost. The
// file is truncated to that point, which always ends a batch, and fsync'd
// again; that prefix is then scanned and sealed like a crashed segment at
// Open (or removed, its checkpoints kept in the state file, when it holds
// no records). The batches cut off were never acknowledged: their writers
// get an error wrapping ErrNotDurable. The next Write starts a new
// segment. If the truncate, the fsync or the seal fails too, the disk is
// not usable and the buffer fails (ErrFailed) until reopened. The caller
// holds mu, with no sync in progress.
func (b *Buffer) cutActiveLocked(cause error) error {
	a := b.active
	keep, end := b.syncedPos, b.appendedPos
	err := fmt.Errorf("%w: %w", ErrNotDurable, cause)
	b.cuts = append(b.cuts, cut{keep: keep, end: end, err: err})
	b.syncedPos = end
	clear(b.pending)
	b.pending = b.pending[:0]
	b.active = nil
	b.diskSize -= a.size
	b.recoveries++
	var durable int64
	if keep > a.start {
		durable = min(a.size, int64(keep-a.start))
	}
	b.cutsInARow++
	rerr := b.resealLocked(a, durable)
	if rerr == nil && b.cutsInARow > maxCutsInARow {
		rerr = fmt.Errorf("%d disk faults in a row without a write that succeeded", b.cutsInARow)
	}
	if rerr != nil {
		b.failLocked(fmt.Errorf("%w; recovering in place failed too: %w", cause, rerr))
		b.cuts[len(b.cuts)-1].err = b.failedErrLocked()
		return b.failedErrLocked()
	}
	b.cond.Broadcast()
	b.notifyLocked()
	return err
}

// resealLocked cuts segment a back to its first durable bytes and seals
// what they hold.
func (b *Buffer) resealLocked(a *activeSegment, durable int64) error {
	err := b.ops.truncate(a.f, durable)
	if err == nil && durable > 0 {
		err = b.ops.sync(a.f)
	}
	if cerr := a.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("cut %s back to %d bytes: %w", a.path, durable, err)
	}
	reader := &Segment{pool: &b.readBufs}
	buf := reader.getReadBuf()
	// asOf beyond every sequence: its durable checkpoints are applied.
	seg, drop, err := b.recoverSegment(segmentFile{seq: a.seq, name: filepath.Base(a.path), ext: openExt}, math.MaxUint64, buf)
	reader.putReadBuf(buf)
	if err != nil {
		return err
	}
	if seg != nil {
		b.sealed = append(b.sealed, seg)
		b.diskSize += seg.Size
		return syncDir(b.dir)
	}
	// No durable records: keep its durable checkpoints in the state file,
	// then remove it. If that fails (a full disk), the file stays for the
	// next Open, which replays its commits.
	gen, state := b.snapshotLocked(a.seq + 1)
	if b.persistState(gen, state) == nil && os.Remove(drop) == nil {
		_ = syncDir(b.dir)
	}
	return nil
}

// diskOp says which operation a disk error came from.
type diskOp int

const (
	diskWrite diskOp = iota
	diskSeal
	diskAck
)

// noteDiskLocked records the outcome of a Write, Seal or Ack for health
// checks: a disk error starts or continues a run of failures; a Write
// that succeeds ends it (the buffer takes data again), and so does a
// success of the kind of operation that last failed. A seal or an ack
// that succeeds does not prove that Writes do (a full disk may leave room
// for a rename or a small state file, not for a batch).
func (b *Buffer) noteDiskLocked(op diskOp, err error) {
	if err == nil {
		if b.diskErr != nil && (op == diskWrite || op == b.diskErrOp) {
			b.diskErr, b.diskErrSince = nil, time.Time{}
		}
		return
	}
	if b.diskErr == nil {
		b.diskErrSince = b.opts.Now()
	}
	b.diskErr, b.diskErrOp = err, op
	b.diskErrors++
}

// Failed is closed once the buffer fails for good (ErrFailed): a disk
// error it could not recover from in place. Close it and Open it again
// (restart the process); recovery keeps every acknowledged batch.
func (b *Buffer) Failed() <-chan struct{} { return b.failedCh }

func (b *Buffer) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// createActiveLocked starts a new active segment. The next sequence is
// persisted in meta before the file exists, so no sequence is ever used
// twice, even after every segment was acked and deleted.
func (b *Buffer) createActiveLocked() error {
	seq := b.nextSeq
	if err := writeMeta(b.dir, b.metaFor(seq+1)); err != nil {
		return err
	}
	b.nextSeq = seq + 1
	now := b.opts.Now()
	path := filepath.Join(b.dir, segmentName(seq, openExt))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return fmt.Errorf("buffer: create segment: %w", err)
	}
	var hdr [segHeaderSize]byte
	var off int64
	err = b.writeAtLocked(f, appendSegHeader(hdr[:0], seq, now), &off)
	if err == nil {
		err = syncDir(b.dir)
	}
	if err != nil {
		_ = f.Close() // the segment is removed; err says why
		_ = os.Remove(path)
		return fmt.Errorf("buffer: create segment %s: %w", path, err)
	}
	b.active = &activeSegment{f: f, seq: seq, path: path, created: now, size: segHeaderSize}
	b.active.start = b.appendedPos
	b.diskSize += segHeaderSize
	b.appendedPos += segHeaderSize
	return nil
}

// sealLocked ends the active segment. One with records or dead letters is
// fsync'd and renamed to .seg for Next; one holding only checkpoint commits
// is removed once the state file carries its checkpoints. The caller
// checked !b.syncing.
func (b *Buffer) sealLocked() error {
	a := b.active
	if a == nil {
		return nil
	}
	if a.records+a.dead == 0 {
		return b.dropActiveLocked()
	}
	if err := b.syncBeforeCloseLocked("seal"); err != nil {
		return err
	}
	b.active = nil
	path := filepath.Join(b.dir, segmentName(a.seq, sealedExt))
	err := a.f.Close()
	if err == nil {
		err = os.Rename(a.path, path)
	}
	if err == nil {
		err = syncDir(b.dir)
	}
	if err != nil {
		b.failLocked(fmt.Errorf("buffer: seal %s: %w", a.path, err))
		return b.failedErrLocked()
	}
	b.sealed = append(b.sealed, &Segment{
		Seq:         a.seq,
		Size:        a.size,
		Created:     a.created,
		Records:     a.records,
		DeadLetters: a.dead,
		FirstTime:   time.UnixMilli(a.minTime),
		LastTime:    time.UnixMilli(a.maxTime),
		path:        path,
		pool:        &b.readBufs,
	})
	b.notifyLocked()
	return nil
}

// syncBeforeCloseLocked fsyncs the active segment with mu held (it is being
// sealed or dropped: no writer may append meanwhile) and wakes the writers
// waiting for what it made durable. A failure fails the buffer.
func (b *Buffer) syncBeforeCloseLocked(what string) error {
	a := b.active
	if err := b.ops.sync(a.f); err != nil {
		return b.faultLocked(fmt.Errorf("buffer: %s %s: fsync: %w", what, a.path, err))
	}
	b.syncs++
	b.markSyncedLocked(b.appendedPos)
	b.cond.Broadcast()
	return nil
}

// dropActiveLocked removes an active segment without records or dead
// letters. If it holds commits, their checkpoints are first made durable in
// the state file.
func (b *Buffer) dropActiveLocked() error {
	a := b.active
	if a.commits > 0 {
		if err := b.syncBeforeCloseLocked("drop"); err != nil {
			return err
		}
		gen, state := b.snapshotLocked(a.seq + 1)
		if err := b.persistState(gen, state); err != nil {
			return err
		}
	}
	b.active = nil
	b.diskSize -= a.size
	err := a.f.Close()
	if rerr := os.Remove(a.path); err == nil {
		err = rerr
	}
	if err == nil {
		err = syncDir(b.dir)
	}
	if err != nil {
		b.failLocked(fmt.Errorf("buffer: remove empty segment %s: %w", a.path, err))
		return b.failedErrLocked()
	}
	return nil
}

// snapshotLocked encodes the durable checkpoints as the state file, with
// asOf the lowest sequence whose commits it may not yet contain.
func (b *Buffer) snapshotLocked(asOf uint64) (gen uint64, state []byte) {
	b.stateGen++
	return b.stateGen, encodeState(asOf, b.checkpoints.sorted())
}

// asOfLocked is the sequence of the active segment, or of the next one.
func (b *Buffer) asOfLocked() uint64 {
	if b.active != nil {
		return b.active.seq
	}
	return b.nextSeq
}

// persistState writes a snapshot unless a newer one is already durable
// (a newer snapshot holds everything an older one does).
func (b *Buffer) persistState(gen uint64, state []byte) error {
	b.stateMu.Lock()
	defer b.stateMu.Unlock()
	if gen <= b.stateWritten {
		return nil
	}
	if err := atomicWrite(b.dir, stateName, state); err != nil {
		return err
	}
	b.stateWritten = gen
	return nil
}

// Seal seals the active segment if it holds records or dead letters, making
// it available to Next. It returns once the segment is durable.
func (b *Buffer) Seal() error {
	_, err := b.sealIf(func(a *activeSegment) bool { return true })
	return err
}

// SealOlderThan seals the active segment if its first record or dead letter
// was written at least age ago (Options.Now); it reports whether it sealed.
// Call it periodically to bound how long a record waits (flush_interval).
func (b *Buffer) SealOlderThan(age time.Duration) (bool, error) {
	return b.sealIf(func(a *activeSegment) bool { return b.opts.Now().Sub(a.firstData) >= age })
}

func (b *Buffer) sealIf(due func(*activeSegment) bool) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		if err := b.usableLocked(); err != nil {
			return false, err
		}
		a := b.active
		if a == nil || a.records+a.dead == 0 || !due(a) {
			return false, nil
		}
		if b.syncing {
			b.cond.Wait()
			continue
		}
		err := b.sealLocked()
		b.noteDiskLocked(diskSeal, err)
		if errors.Is(err, ErrNotDurable) {
			// The seal's fsync failed and the buffer recovered in place:
			// what was durable is sealed, and the writers of what was cut
			// off were told.
			return true, nil
		}
		return err == nil, err
	}
}

// Next returns the sealed segment with the lowest sequence that is not
// handed out, waiting for one. It returns ctx.Err() when ctx is done and
// ErrClosed once the buffer is closed. Each segment goes to one caller until
// it is acked or released.
func (b *Buffer) Next(ctx context.Context) (*Segment, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return nil, ErrClosed
		}
		for _, s := range b.sealed {
			if !s.inFlight {
				s.inFlight = true
				b.mu.Unlock()
				return s, nil
			}
		}
		changed := b.changed
		b.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		}
	}
}

// Ack deletes a segment handed out by Next: it has been shipped and
// counted. The checkpoints are persisted first (as of the active segment),
// so deleting the segment's commit frames loses no source position.
func (b *Buffer) Ack(seg *Segment) error { return b.AckAll([]*Segment{seg}) }

// AckAll acknowledges several segments handed out by Next as Ack does
// each, with one state write and one directory sync for all of them. On
// error none is acknowledged (some files may be gone: they are then
// acknowledged, and not shipped again, at the next start).
func (b *Buffer) AckAll(segs []*Segment) error {
	if len(segs) == 0 {
		return nil
	}
	if err := b.beginRemoval(segs); err != nil {
		return err
	}
	defer b.acks.Done()
	fail := func(err error) error {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, seg := range segs {
			seg.acking = false
		}
		err = fmt.Errorf("buffer: ack segment %d: %w", segs[0].Seq, err)
		b.noteDiskLocked(diskAck, err)
		return err
	}
	for _, seg := range segs {
		if err := os.Remove(seg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fail(err)
		}
	}
	if err := syncDir(b.dir); err != nil {
		return fail(err)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	for _, seg := range segs {
		seg.acking = false
		b.sealed = slices.DeleteFunc(b.sealed, func(s *Segment) bool { return s == seg })
		seg.inFlight = false
		b.diskSize -= seg.Size
	}
	b.noteDiskLocked(diskAck, nil)
	b.notifyLocked()
	return nil
}

// beginRemoval starts deleting (or cutting) segments handed out by Next:
// it marks them as being acknowledged and persists the checkpoints as of
// the active segment, so that losing their commit frames loses no source
// position. On success the caller removes the files, clears acking and
// calls b.acks.Done; on error nothing changed. ErrClosed and
// ErrNotInFlight are returned as they are.
func (b *Buffer) beginRemoval(segs []*Segment) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	for i, seg := range segs {
		if !b.ownsLocked(seg) || !seg.inFlight || seg.acking || slices.Contains(segs[:i], seg) {
			b.mu.Unlock()
			return ErrNotInFlight
		}
	}
	undo := func() {
		for _, seg := range segs {
			seg.acking = false
		}
		b.acks.Done()
	}
	for _, seg := range segs {
		seg.acking = true
	}
	b.acks.Add(1)
	if b.opts.Sync != SyncAlways {
		// The checkpoint map already holds page-cache-only commits; make
		// them durable before a state file can record them.
		if err := b.syncActiveLocked(); err != nil {
			undo()
			b.mu.Unlock()
			return fmt.Errorf("buffer: remove segment %d: %w", segs[0].Seq, err)
		}
	}
	gen, state := b.snapshotLocked(b.asOfLocked())
	b.mu.Unlock()
	if err := b.persistState(gen, state); err != nil {
		err = fmt.Errorf("buffer: remove segment %d: %w", segs[0].Seq, err)
		b.mu.Lock()
		undo()
		b.noteDiskLocked(diskAck, err)
		b.mu.Unlock()
		return err
	}
	return nil
}

// Salvage handles a segment from Next whose Frames failed with
// ErrCorrupt: its file was damaged after it was sealed (Open checks every
// sealed segment, so this is bit rot or tampering at run time). As
// recovery does at Open, the file is copied aside as *.bad, for
// inspection, and cut back to its last intact commit; what remains is
// handed out by Next again, or the segment is deleted when nothing
// remains. The checkpoints are persisted first, as by Ack. It returns the
// name of the file set aside. Without Salvage the segment would fail
// again on every retry and, being the oldest, hold back those after it.
func (b *Buffer) Salvage(seg *Segment) (string, error) {
	if err := b.beginRemoval([]*Segment{seg}); err != nil {
		return "", err
	}
	defer b.acks.Done()
	b.mu.Lock()
	defer b.mu.Unlock()
	seg.acking = false
	name := segmentName(seg.Seq, sealedExt)
	aside := len(b.report.MovedAside)
	buf := seg.getReadBuf()
	// asOf beyond every sequence: the checkpoints are already applied.
	ns, drop, err := b.recoverSegment(segmentFile{seq: seg.Seq, name: name, ext: sealedExt}, math.MaxUint64, buf)
	seg.putReadBuf(buf)
	if err != nil {
		return "", fmt.Errorf("buffer: salvage segment %d: %w", seg.Seq, err)
	}
	var bad string
	if len(b.report.MovedAside) > aside {
		bad = b.report.MovedAside[len(b.report.MovedAside)-1]
	}
	if drop != "" {
		if err := os.Remove(drop); err != nil && !errors.Is(err, os.ErrNotExist) {
			return bad, fmt.Errorf("buffer: salvage segment %d: %w", seg.Seq, err)
		}
	}
	if err := syncDir(b.dir); err != nil {
		return bad, fmt.Errorf("buffer: salvage segment %d: %w", seg.Seq, err)
	}
	b.diskSize -= seg.Size
	seg.inFlight = false
	if ns == nil {
		// Header damaged (moved aside whole) or nothing committed left.
		b.sealed = slices.DeleteFunc(b.sealed, func(s *Segment) bool { return s == seg })
		seg.Size, seg.Records, seg.DeadLetters = 0, 0, 0
	} else {
		seg.Size, seg.Records, seg.DeadLetters = ns.Size, ns.Records, ns.DeadLetters
		seg.FirstTime, seg.LastTime = ns.FirstTime, ns.LastTime
		b.diskSize += seg.Size
	}
	b.notifyLocked()
	return bad, nil
}

// Release hands a segment from Next back un-acked (its upload failed), so
// Next returns it again. Releasing a segment not in flight does nothing.
func (b *Buffer) Release(seg *Segment) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ownsLocked(seg) && seg.inFlight && !seg.acking {
		seg.inFlight = false
		b.notifyLocked()
	}
}

func (b *Buffer) ownsLocked(seg *Segment) bool {
	for _, s := range b.sealed {
		if s == seg {
			return true
		}
	}
	return false
}

// WaitForSpace blocks until n more bytes fit under MaxSize, ctx is done, or
// the buffer closes; Acks wake it. Pass batch.Size(): once it returns, Write
// accepts that batch unless another writer took the room first.
func (b *Buffer) WaitForSpace(ctx context.Context, n int) error {
	if int64(n) > b.opts.MaxSize {
		return fmt.Errorf("%w: %d bytes, max_size %d", ErrTooLarge, n, b.opts.MaxSize)
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		b.mu.Lock()
		if err := b.usableLocked(); err != nil {
			b.mu.Unlock()
			return err
		}
		if b.diskSize+int64(n) <= b.opts.MaxSize {
			b.mu.Unlock()
			return nil
		}
		changed := b.changed
		b.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// WaitEmpty waits until every sealed segment is acknowledged and the
// active segment holds no records, or ctx is done, or the buffer is
// closed. It wakes on each Ack rather than polling, so a drain ends as
// soon as its last upload does.
func (b *Buffer) WaitEmpty(ctx context.Context) error {
	for {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return ErrClosed
		}
		empty := len(b.sealed) == 0 && (b.active == nil || b.active.records == 0)
		changed := b.changed
		b.mu.Unlock()
		if empty {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// Checkpoints returns the durable position of every source, sorted by
// source: exactly what the committed batches in the buffer (or already
// acked) account for. A source resumes right after it.
func (b *Buffer) Checkpoints() []Checkpoint {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.checkpoints.sorted()
}

// Stats returns a snapshot for metrics and readiness.
func (b *Buffer) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := Stats{
		Failed:         b.failed,
		DiskError:      b.diskErr,
		DiskErrorSince: b.diskErrSince,
		DiskErrors:     b.diskErrors,
		Recoveries:     b.recoveries,
		BytesOnDisk:    b.diskSize,
		SegmentsSealed: len(b.sealed),
		FullRejections: b.fullRejects,
		Writes:         b.writes,
		Syncs:          b.syncs,
		Recovered:      b.report,
	}
	s.Recovered.MovedAside = append([]string(nil), b.report.MovedAside...)
	for _, seg := range b.sealed {
		if !seg.inFlight {
			s.SegmentsPending++
		}
	}
	if len(b.sealed) > 0 {
		s.OldestSealed = b.sealed[0].Created
	}
	if b.active != nil {
		s.ActiveBytes = b.active.size
		s.ActiveRecords = b.active.records
	}
	return s
}

// Close seals the active segment, stops background syncing, wakes Next and
// WaitForSpace callers with ErrClosed and releases the directory lock.
// Sealed segments not yet acked are handed out again after the next Open.
// Calls after the first return nil.
func (b *Buffer) Close() error {
	b.closeOnce.Do(func() { b.closeErr = b.close(true) })
	return b.closeErr
}

// close shuts the buffer down; seal false leaves the active segment as a
// crash would (tests).
func (b *Buffer) close(seal bool) error {
	b.mu.Lock()
	for b.syncing {
		b.cond.Wait()
	}
	var err error
	switch {
	case b.failed != nil:
		err = b.failedErrLocked()
	case seal:
		if err = b.sealLocked(); errors.Is(err, ErrNotDurable) {
			err = nil // recovered in place: what was durable is sealed
		}
	}
	if b.active != nil {
		_ = b.active.f.Close() // what was acknowledged is fsynced; seal reported its own error
		b.active = nil
	}
	b.closed = true
	b.notifyLocked()
	b.cond.Broadcast()
	b.mu.Unlock()

	if b.stop != nil {
		close(b.stop)
		b.loop.Wait()
	}
	b.acks.Wait()
	if cerr := b.lockFile.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("buffer: release lock: %w", cerr)
	}
	return err
}

// syncLoop fsyncs the active segment every SyncInterval (SyncInterval
// policy) until Close.
func (b *Buffer) syncLoop() {
	defer b.loop.Done()
	t := time.NewTicker(b.opts.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		b.mu.Lock()
		if !b.closed {
			// A failure is recorded in b.failed and reported by Write.
			_ = b.syncActiveLocked()
		}
		b.mu.Unlock()
	}
}
