package buffer

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"
)

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
