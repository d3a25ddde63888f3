package tail

import (
	"sync/atomic"
	"time"
)

// Metrics are the tailer's counters, plain atomics so the agent can export
// them (to Prometheus) without this package depending on a metrics library.
// Counts only include chunks the Sink accepted, so retries never inflate
// them.
type Metrics struct {
	// LinesRead counts lines the Sink accepted (TooLong lines included).
	LinesRead atomic.Uint64
	// BytesRead counts file bytes covered by accepted chunks: line data,
	// newlines and the skipped remainders of too-long lines.
	BytesRead atomic.Uint64
	// TooLongLines counts lines delivered truncated to MaxLineSize.
	TooLongLines atomic.Uint64
	// FilesOpened counts readers started (files, or files found again).
	FilesOpened atomic.Uint64
	// FilesTailed is the number of files open now.
	FilesTailed atomic.Int64
	// Rotations counts files left after they were renamed out of the
	// globs or deleted, and read to their end.
	Rotations atomic.Uint64
	// Truncations counts files found truncated (copytruncate) or rewritten
	// in place (fingerprint changed), and restarted from offset 0.
	Truncations atomic.Uint64
	// SinkErrors counts Consume calls that failed (each retried later);
	// SinkFull counts those that failed with buffer.ErrFull.
	SinkErrors atomic.Uint64
	SinkFull   atomic.Uint64
	// BackPressureNanos is the total time readers spent waiting to retry a
	// chunk the Sink refused.
	BackPressureNanos atomic.Int64
}

// BackPressureSeconds returns BackPressureNanos in seconds, the unit of a
// Prometheus counter.
func (m *Metrics) BackPressureSeconds() float64 {
	return time.Duration(m.BackPressureNanos.Load()).Seconds()
}
