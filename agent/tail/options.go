package tail

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/metership/metership/buffer"
)

// StartAt values.
const (
	// StartBeginning reads files without a checkpoint from their first byte.
	StartBeginning = "beginning"
	// StartEnd skips what files found by the first scan already hold.
	StartEnd = "end"
)

// Defaults for zero Options fields.
const (
	DefaultRefreshInterval = time.Second
	DefaultPollInterval    = 250 * time.Millisecond
	DefaultRotateWait      = 5 * time.Second
	DefaultMaxLineSize     = 1 << 20
	DefaultReadBufferSize  = 64 << 10
	DefaultMaxChunkLines   = 4096
	DefaultMaxChunkBytes   = 1 << 20
	DefaultRetryInitial    = 100 * time.Millisecond
	DefaultRetryMax        = 5 * time.Second
)

// ErrInvalidOptions is returned (wrapped, naming the field) by New when
// Options cannot work.
var ErrInvalidOptions = errors.New("tail: invalid options")

// Input is one group of globs with its own settings: one source of the
// agent's config. A file matched by several inputs is followed once, by
// the first input (in order) that matched it when it was found; it keeps
// that input while any input matches it.
type Input struct {
	// Name says which input a log line is about (e.g. "sources[1]").
	Name string
	// Paths, Exclude, StartAt and RotateWait are as in Options.
	Paths      []string
	Exclude    []string
	StartAt    string
	RotateWait time.Duration
}

// Options configure a Tailer. Zero values take the defaults above.
type Options struct {
	// Inputs are the groups of globs to follow. When empty, Paths,
	// Exclude, StartAt and RotateWait below form the only input.
	Inputs []Input
	// Paths are filepath.Match globs of the files to follow ("**" is not
	// supported). Symbolic links are followed: the file identity is the
	// link target's.
	Paths []string
	// Exclude are globs of paths to skip; a pattern without a path
	// separator is also matched against the file's base name.
	Exclude []string
	// StartAt is "beginning" (default) or "end". It applies only to files
	// found by the first scan that match no checkpoint; every file that
	// appears later is read from its first byte, like Fluent Bit and
	// Vector do, because its lines were written after the tailer started.
	StartAt string
	// RefreshInterval is how often the globs are evaluated again.
	RefreshInterval time.Duration
	// PollInterval is how often an idle file is checked for growth,
	// truncation and rotation. It is the safety net under inotify, and the
	// only mechanism when DisableNotify is set or inotify is unavailable.
	PollInterval time.Duration
	// DisableNotify turns inotify off (filesystems that do not deliver
	// events, such as NFS or some FUSE mounts): polling only.
	DisableNotify bool
	// RotateWait is how long a file that left the globs (renamed away or
	// deleted) keeps being followed after its last growth, or after it was
	// found gone, whichever is later: writers that have not reopened yet
	// still write to it.
	RotateWait time.Duration
	// MaxLineSize bounds a line's Data. A longer line is delivered once as
	// a TooLong line holding its first MaxLineSize bytes; the rest, up to
	// its newline, is skipped without being held in memory.
	MaxLineSize int
	// ReadBufferSize is the size of each read from a file.
	ReadBufferSize int
	// MaxChunkLines and MaxChunkBytes bound one Chunk (bytes count line
	// Data). A chunk also ends when a file has no more data for now.
	MaxChunkLines int
	MaxChunkBytes int
	// FlushPartialAfter, when > 0, delivers a last line that has no newline
	// yet once the file has not grown for this long; bytes written after
	// that start a new line. The default 0 waits for the newline forever,
	// so a half-written line is never delivered as a line of its own (a
	// rotated or truncated file's unterminated last line is still
	// delivered when the tailer leaves it).
	FlushPartialAfter time.Duration
	// RetryInitial and RetryMax bound the jittered exponential backoff
	// between attempts to hand a chunk to a failing Sink.
	RetryInitial time.Duration
	RetryMax     time.Duration
	// Checkpoints are the tail checkpoints restored from the buffer.
	// Those whose Source lacks SourcePrefix are ignored.
	Checkpoints []buffer.Checkpoint
	// Logger defaults to a no-op logger.
	Logger *zap.Logger
	// Metrics, if set, is updated as the tailer works.
	Metrics *Metrics
	// OnCaughtUp, if set, is called once, from Run's goroutine, when
	// everything the files found by the first scan held at that moment is
	// durably read (a file that stops being followed counts as read). A
	// file whose last line never gets its newline keeps it from being
	// called: callers bound the wait.
	OnCaughtUp func()
}

// withDefaults returns o with zero fields set to their defaults, or an
// error naming the first field that cannot work.
func (o Options) withDefaults() (Options, error) {
	if len(o.Inputs) == 0 {
		o.Inputs = []Input{{Paths: o.Paths, Exclude: o.Exclude, StartAt: o.StartAt, RotateWait: o.RotateWait}}
	}
	o.Inputs = slices.Clone(o.Inputs)
	for i := range o.Inputs {
		in := &o.Inputs[i]
		if err := in.validate(); err != nil {
			if len(o.Inputs) > 1 || in.Name != "" {
				return o, fmt.Errorf("%s: %w", in.Name, err)
			}
			return o, err
		}
		if in.RotateWait == 0 {
			in.RotateWait = DefaultRotateWait
		}
	}
	o.Paths, o.Exclude, o.StartAt, o.RotateWait = nil, nil, "", 0
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"refresh_interval", &o.RefreshInterval, DefaultRefreshInterval},
		{"poll_interval", &o.PollInterval, DefaultPollInterval},
		{"flush_partial_after", &o.FlushPartialAfter, 0},
		{"retry_initial", &o.RetryInitial, DefaultRetryInitial},
		{"retry_max", &o.RetryMax, DefaultRetryMax},
	}
	for _, d := range durations {
		if *d.v < 0 {
			return o, fmt.Errorf("%w: %s: %v is negative", ErrInvalidOptions, d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if o.RetryMax < o.RetryInitial {
		return o, fmt.Errorf("%w: retry_max: %v is below retry_initial %v", ErrInvalidOptions, o.RetryMax, o.RetryInitial)
	}
	sizes := []struct {
		name     string
		v        *int
		def, min int
	}{
		{"max_line_size", &o.MaxLineSize, DefaultMaxLineSize, 1},
		{"read_buffer_size", &o.ReadBufferSize, DefaultReadBufferSize, 512},
		{"max_chunk_lines", &o.MaxChunkLines, DefaultMaxChunkLines, 1},
		{"max_chunk_bytes", &o.MaxChunkBytes, DefaultMaxChunkBytes, 1},
	}
	for _, s := range sizes {
		if *s.v == 0 {
			*s.v = s.def
		}
		if *s.v < s.min {
			return o, fmt.Errorf("%w: %s: %d is below %d", ErrInvalidOptions, s.name, *s.v, s.min)
		}
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Metrics == nil {
		o.Metrics = new(Metrics)
	}
	return o, nil
}

// validate checks in's globs and start_at (setting its default).
func (in *Input) validate() error {
	if len(in.Paths) == 0 {
		return fmt.Errorf("%w: paths: at least one glob is required", ErrInvalidOptions)
	}
	for _, p := range in.Paths {
		if _, err := filepath.Match(p, ""); err != nil {
			return fmt.Errorf("%w: paths: %q: %w", ErrInvalidOptions, p, err)
		}
	}
	for _, p := range in.Exclude {
		if _, err := filepath.Match(p, ""); err != nil {
			return fmt.Errorf("%w: exclude: %q: %w", ErrInvalidOptions, p, err)
		}
	}
	switch in.StartAt {
	case "":
		in.StartAt = StartBeginning
	case StartBeginning, StartEnd:
	default:
		return fmt.Errorf("%w: start_at: %q is neither %q nor %q", ErrInvalidOptions, in.StartAt, StartBeginning, StartEnd)
	}
	if in.RotateWait < 0 {
		return fmt.Errorf("%w: rotate_wait: %v is negative", ErrInvalidOptions, in.RotateWait)
	}
	return nil
}
