package tail

import (
	"maps"
	"os"
)

// Options.OnCaughtUp: the tailer tells once when it has durably read what
// the files found by its first scan held at that moment (the backlog of a
// downtime), so metering can keep those hours open until then.

// backlog is the size each file found by the first scan had then.
type backlog map[fileKey]int64

// startupBacklog records the size of every file the first scan follows.
func (t *Tailer) startupBacklog() backlog {
	t.mu.Lock()
	readers := maps.Clone(t.readers)
	t.mu.Unlock()
	b := make(backlog, len(readers))
	for k, r := range readers {
		path, _ := r.paths()
		fi, err := os.Stat(path)
		if err != nil {
			continue // gone already: its reader finishes what it holds
		}
		if key, _, ok := statKey(fi); ok && key == k {
			b[k] = fi.Size()
		}
	}
	return b
}

// read reports whether every file of b is durably read up to its size at
// the start, or no longer followed (finished, or given up on); files that
// are done are removed from b.
func (b backlog) read(t *Tailer) bool {
	for k, size := range b {
		t.mu.Lock()
		r := t.readers[k]
		t.mu.Unlock()
		if r != nil && r.state().Offset < size {
			return false
		}
		delete(b, k)
	}
	return true
}

// checkCaughtUp calls Options.OnCaughtUp once b is read; it returns the
// backlog still to watch (nil once reported).
func (t *Tailer) checkCaughtUp(b backlog) backlog {
	if b == nil || !b.read(t) {
		return b
	}
	t.opts.OnCaughtUp()
	return nil
}
