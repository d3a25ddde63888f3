package buffer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

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
