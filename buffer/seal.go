package buffer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"
)

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
