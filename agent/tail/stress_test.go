package tail

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metership/metership/buffer"
	"github.com/metership/metership/internal/testutil/rotate"
)

// stressSink counts every sequence-numbered line it accepts.
type stressSink struct {
	*recordingSink
	seen []atomic.Int32
}

func (s *stressSink) Consume(ctx context.Context, c *Chunk) error {
	if err := s.recordingSink.Consume(ctx, c); err != nil {
		return err
	}
	for _, l := range c.Lines {
		if len(l.Data) < 8 {
			continue
		}
		seq, err := strconv.Atoi(string(l.Data[:8]))
		if err != nil || seq >= len(s.seen) {
			continue
		}
		s.seen[seq].Add(1)
	}
	return nil
}

// stressWriter appends sequence-numbered lines to one path and rotates it
// the three ways applications and logrotate do. It keeps each rotation
// fair: lines are lost by the rotation itself, with any tailer, when
//   - a file is renamed out of the glob or deleted before a tailer ever
//     opened it (so it first waits until the tailer has a line of the
//     current file), or
//   - copytruncate truncates lines no tailer had read yet (so it first
//     waits until the tailer has every line written).
type stressWriter struct {
	t       *testing.T
	sink    *stressSink
	rng     *rand.Rand
	path    string
	f       *os.File
	next    int // next sequence number
	first   int // first sequence number in the current file
	rotated int
	// deletedUpTo is the last line written to a deleted file: before the
	// tailer is stopped it must have it, or nobody can read it again.
	deletedUpTo int
	ops         map[string]int
	log         []string
}

func (w *stressWriter) open() {
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		w.t.Fatal(err)
	}
	w.f, w.first = f, w.next
}

func (w *stressWriter) line() {
	pad := w.rng.IntN(120)
	b := make([]byte, 0, 16+pad)
	b = fmt.Appendf(b, "%08d ", w.next)
	for range pad {
		b = append(b, byte('a'+w.rng.IntN(26)))
	}
	b = append(b, '\n')
	if _, err := w.f.Write(b); err != nil {
		w.t.Fatal(err)
	}
	w.next++
}

func (w *stressWriter) waitSeen(seq int, what string) {
	waitFor(w.t, fmt.Sprintf("line %d (%s)", seq, what), func() bool { return w.sink.seen[seq].Load() > 0 })
}

// rotate rotates the file one of three ways. online says a tailer is
// running; offline only renames are fair (the tailer finds the renamed
// file from its checkpoint).
func (w *stressWriter) rotate(online bool) {
	op := "rename"
	if online {
		op = []string{"rename", "copytruncate", "delete"}[w.rng.IntN(3)]
	}
	if w.next == w.first {
		w.line() // the tailer can only prove it opened a file with a line
	}
	if online {
		w.waitSeen(w.first, "the tailer opened the file")
	}
	w.ops[op]++
	w.rotated++
	w.log = append(w.log, fmt.Sprintf("before %d: %s (file from %d)", w.next, op, w.first))
	switch op {
	case "rename":
		if err := os.Rename(w.path, fmt.Sprintf("%s.%d", w.path, w.rotated)); err != nil {
			w.t.Fatal(err)
		}
	case "delete":
		if err := os.Remove(w.path); err != nil {
			w.t.Fatal(err)
		}
	case "copytruncate":
		w.waitSeen(w.next-1, "the tailer caught up")
		rotate.CopyTruncate(w.t, w.f, w.path, fmt.Sprintf("%s.ct%d", w.path, w.rotated))
		w.first = w.next
		return
	}
	// A writer that has not reopened yet still writes to the old file.
	for range w.rng.IntN(4) {
		w.line()
	}
	if op == "delete" {
		w.deletedUpTo = w.next - 1
	}
	if err := w.f.Close(); err != nil {
		w.t.Fatal(err)
	}
	w.open()
}

// write appends n lines, rotating now and then (every 225 lines on
// average) while a tailer runs.
func (w *stressWriter) write(n int, online bool) {
	for range n {
		w.line()
		if online && w.rng.IntN(225) == 0 {
			w.rotate(true)
		}
	}
}

// TestRotationStress follows a file rotated at random by rename,
// copytruncate and delete+recreate, with a Sink that refuses chunks at
// random, and restarts the tailer halfway from the acknowledged
// checkpoints while the file keeps growing and is rotated once more. Every
// line must arrive exactly once.
func TestRotationStress(t *testing.T) {
	const total = 20000
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	sink := &stressSink{recordingSink: newRecordingSink(nil), seen: make([]atomic.Int32, total+1000)} // rotations add a few lines
	failRng := rand.New(rand.NewPCG(seed, 2))
	sink.fail = func(int, *Chunk) error {
		if failRng.IntN(30) == 0 {
			return buffer.ErrFull
		}
		return nil
	}
	w := &stressWriter{t: t, sink: sink, rng: rand.New(rand.NewPCG(seed, 1)), path: path, ops: map[string]int{}, deletedUpTo: -1}
	w.open()
	defer func() { _ = w.f.Close() }()

	options := func() Options {
		o := testOptions(t, path)
		o.RotateWait = 200 * time.Millisecond
		o.MaxChunkLines = 64
		o.Checkpoints = sink.saved()
		return o
	}
	opts := options()
	_, stop := startTailer(t, opts, sink)
	w.write(total*2/5, true)

	// Stop in the middle of the stream: the current file has a checkpoint
	// (its first line arrived), lines after it may still be unread.
	w.line()
	w.waitSeen(w.first, "the tailer opened the file")
	if w.deletedUpTo >= 0 {
		w.waitSeen(w.deletedUpTo, "deleted files read")
	}
	stop()
	w.write(total/10, false)
	w.rotate(false)
	w.write(total/10, false)

	opts2 := options()
	tl, _ := startTailer(t, opts2, sink)
	w.write(total-w.next, true)
	if w.next == w.first {
		// A rotation at the last line left an empty file, which has no
		// checkpoint until its first line.
		w.line()
	}

	deadline := time.Now().Add(15 * time.Second)
	for {
		var missing []int
		for i := range w.next {
			if sink.seen[i].Load() == 0 {
				missing = append(missing, i)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, l := range w.log {
				t.Log(l)
			}
			t.Fatalf("missing %d lines, first %v", len(missing), missing[:min(len(missing), 20)])
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Rotated files are left and their checkpoints forgotten. Files that
	// were deleted while the first tailer was waiting out RotateWait on
	// them cannot be found again: their checkpoints stay unclaimed, for
	// the agent's garbage collection.
	deadline = time.Now().Add(10 * time.Second)
	for len(tl.Stats()) != 1 || len(sink.saved()) != 1+len(tl.Unclaimed()) {
		if time.Now().After(deadline) {
			t.Fatalf("rotated files not left: stats %+v\ncheckpoints %+v\nunclaimed %+v", tl.Stats(), sink.saved(), tl.Unclaimed())
		}
		time.Sleep(5 * time.Millisecond)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, cp := range tl.Unclaimed() {
		id, err := DecodeMeta(cp.Meta)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			f, err := os.Open(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			fi, err := f.Stat()
			if err != nil {
				t.Fatal(err)
			}
			key, _, _ := statKey(fi)
			fp := fingerprint{n: id.FingerprintLen, sum: id.Fingerprint}
			same, err := fp.verify(f, fi.Size(), make([]byte, FingerprintSize))
			_ = f.Close()
			if err != nil {
				t.Fatal(err)
			}
			if key.ino == id.Ino && same {
				t.Errorf("checkpoint %s unclaimed although its file exists as %s", cp.Key, e.Name())
			}
		}
	}
	var gaps, dups int
	for i := range sink.seen {
		switch n := sink.seen[i].Load(); {
		case n == 0 && i < w.next:
			gaps++
		case n > 1 || (n > 0 && i >= w.next):
			dups++
		}
	}
	if gaps != 0 || dups != 0 {
		t.Fatalf("%d gaps, %d duplicates among %d lines", gaps, dups, w.next)
	}
	sink.assertConsistent(t)
	m1, m2 := opts.Metrics, opts2.Metrics
	t.Logf("rotations %v; truncations seen %d; files left %d; sink refusals %d",
		w.ops, m1.Truncations.Load()+m2.Truncations.Load(), m1.Rotations.Load()+m2.Rotations.Load(),
		m1.SinkFull.Load()+m2.SinkFull.Load())
	if w.ops["rename"] == 0 || w.ops["copytruncate"] == 0 || w.ops["delete"] == 0 {
		t.Fatalf("not every rotation was exercised: %v", w.ops)
	}
}
