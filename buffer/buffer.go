package buffer

import (
	"errors"
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
