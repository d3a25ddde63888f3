package buffer

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// SyncPolicy says when appended data is fsync'd.
type SyncPolicy int

const (
	// SyncAlways fsyncs before Write returns (group commit: concurrent
	// writers share one fsync).
	SyncAlways SyncPolicy = iota
	// SyncInterval fsyncs every Options.SyncInterval; Write returns once the
	// data is in the OS page cache.
	SyncInterval
	// SyncNever leaves flushing to the OS.
	SyncNever
)

// Sentinel errors.
var (
	// ErrFull is returned by Write when the batch would take the buffer past
	// Options.MaxSize. Nothing of the batch was written: back off and retry.
	ErrFull = errors.New("buffer: full")
	// ErrTooLarge is returned when a single batch can never fit (larger
	// than MaxSize or MaxFrameData); split it.
	ErrTooLarge = errors.New("buffer: batch larger than the buffer")
	// ErrClosed is returned by calls on a closed buffer, and by Next once
	// the buffer is closed and no sealed segment is left to hand out.
	ErrClosed = errors.New("buffer: closed")
	// ErrLocked is returned by Open when another process or instance holds
	// the directory.
	ErrLocked = errors.New("buffer: directory in use by another instance")
	// ErrFailed is returned by Write (wrapping the disk error) once the
	// buffer cannot take writes: a failed fsync or an undoable failed write
	// from which it could not recover in place (the recovery's own
	// truncate, fsync or seal failed too, or the policy is SyncInterval or
	// SyncNever, whose acknowledged batches a cut would lose). Close and
	// Open the buffer again (restart the process); recovery keeps every
	// acknowledged batch. Failed is closed at that moment.
	ErrFailed = errors.New("buffer: failed after a disk error; reopen it")
	// ErrNotDurable is returned by Write (wrapping the disk error) when a
	// failed fsync, or a failed write that could not be undone, cut the
	// batch off: it is not acknowledged and not in the buffer (see
	// Buffer.cutActiveLocked). The buffer recovered in place and takes
	// writes again: retry the batch.
	ErrNotDurable = errors.New("buffer: batch not durable after a disk error; retry it")
	// ErrNotInFlight is returned by Ack for a segment that Next did not hand
	// out, or that was already acked or released.
	ErrNotInFlight = errors.New("buffer: segment not handed out by Next")
)

// Options configure a Buffer.
type Options struct {
	Dir          string
	MaxSize      int64         // bound on bytes of segments on disk; default 1 GiB
	SegmentSize  int64         // seal the active segment at this size; default 8 MiB
	Sync         SyncPolicy    // default SyncAlways
	SyncInterval time.Duration // for SyncInterval; default 1s
	// AgentID names this buffer's producer (logs, metering). Empty: a
	// random id generated on first Open and persisted in the directory.
	// Object keys derive from Buffer.InstanceID instead, which this does
	// not override.
	AgentID string
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
	// Faults, when set, is called before each write, fsync and truncate
	// of a segment file with the operation and the file's path; an error
	// it returns fails the operation in its place. Tests only: a failed
	// fsync cannot be had for real.
	Faults func(op FileOp, path string) error
}

// FileOp names a segment file operation, for Options.Faults.
type FileOp int

// The segment file operations Options.Faults can fail.
const (
	OpWrite FileOp = iota
	OpSync
	OpTruncate
)

// Stats is a snapshot for metrics and readiness.
type Stats struct {
	BytesOnDisk     int64
	SegmentsSealed  int // sealed, not yet acked (including in flight)
	SegmentsPending int // sealed and not handed out
	OldestSealed    time.Time
	ActiveBytes     int64
	ActiveRecords   int
	FullRejections  uint64 // Writes refused with ErrFull
	Writes          uint64 // batches written since Open
	Syncs           uint64 // fsyncs of segment data since Open (group commit shares them)
	// DiskError is the last disk error of a Write, Seal or Ack since the
	// last one that succeeded (nil: none), DiskErrorSince when that run
	// of failures began; DiskErrors counts them since Open.
	DiskError      error
	DiskErrorSince time.Time
	DiskErrors     uint64
	// Recoveries counts in-place recoveries from a failed fsync (or an
	// undoable failed write) since Open.
	Recoveries uint64
	// Failed is non-nil once the buffer takes no writes until reopened
	// (ErrFailed).
	Failed    error
	Recovered RecoveryReport
}

// RecoveryReport says what Open found.
type RecoveryReport struct {
	Segments       int   // segments replayed (sealed or recovered active)
	TruncatedBytes int64 // torn / uncommitted / corrupt tail bytes dropped
	DroppedFrames  int   // intact frames dropped because their batch never committed
	// MovedAside names the files (relative to Dir) that recovery set aside
	// as *.bad: whole segments with a corrupt header, and copies of sealed
	// segments whose corrupt tail it cut off.
	MovedAside []string
}

// Segment is a sealed segment handed out by Next. It stays on disk until
// Ack; after a restart, unacked segments are handed out again.
type Segment struct {
	Seq         uint64
	Size        int64 // bytes of the file, header included
	Created     time.Time
	Records     int
	DeadLetters int
	// FirstTime and LastTime are the earliest and latest Frame.Time of the
	// segment's records and dead letters (Unix milliseconds as time.Time).
	FirstTime, LastTime time.Time

	path string
	pool *sync.Pool // the owning Buffer's read buffers
	// inFlight and acking are guarded by the owning Buffer's mu.
	inFlight bool
	acking   bool
}

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

// AgentID is the configured agent id, or the one generated for this
// directory when none is configured. Several buffers may share it; see
// InstanceID for an id unique to the directory.
func (b *Buffer) AgentID() string { return b.agentID }

// Dir is the buffer's directory.
func (b *Buffer) Dir() string { return b.dir }

// Failed is closed once the buffer fails for good (ErrFailed): a disk
// error it could not recover from in place. Close it and Open it again
// (restart the process); recovery keeps every acknowledged batch.
func (b *Buffer) Failed() <-chan struct{} { return b.failedCh }

func (b *Buffer) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
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
