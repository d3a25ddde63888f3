package buffer

// PendingMinTime returns the earliest frame time (Unix ms) among the
// active segment and the sealed, unacknowledged segments for which skip
// returns false. Metering uses it to know whether records of an hour may
// still be uncounted: skip reports the segments it already counted.
func (b *Buffer) PendingMinTime(skip func(seq uint64) bool) (int64, bool) {
	type seqTime struct {
		seq uint64
		t   int64
	}
	// Collect under mu, call skip without it: skip may take other locks
	// (metering's), which in turn may call Live.
	b.mu.Lock()
	var (
		minT  int64
		found bool
	)
	if a := b.active; a != nil && a.records+a.dead > 0 {
		minT, found = a.minTime, true
	}
	sealed := make([]seqTime, 0, len(b.sealed))
	for _, s := range b.sealed {
		if s.Records+s.DeadLetters > 0 {
			sealed = append(sealed, seqTime{s.Seq, s.FirstTime.UnixMilli()})
		}
	}
	b.mu.Unlock()
	for _, s := range sealed {
		if skip != nil && skip(s.seq) {
			continue
		}
		if !found || s.t < minT {
			minT, found = s.t, true
		}
	}
	return minT, found
}

// Live reports whether segment seq still exists: it is the active segment
// or sealed and not yet acknowledged. An acknowledged seq never comes back
// (seqs are never reused), so state kept per segment can be dropped once
// Live is false.
func (b *Buffer) Live(seq uint64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.active != nil && b.active.seq == seq {
		return true
	}
	for _, s := range b.sealed {
		if s.Seq == seq {
			return true
		}
	}
	return false
}
