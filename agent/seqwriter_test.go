package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/metership/metership/internal/testutil/rotate"
	"github.com/metership/metership/internal/testutil/s3server"
)

// seqBase is the meterTimeInMillis of sequence number 0; record i is one
// second later than record i-1.
var seqBase = time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC).UnixMilli()

// seqWriter appends sequence-numbered meter records to one tailed path and
// rotates it the three ways applications and logrotate do: rename (the
// rotated file leaves the glob), copytruncate (the copy goes to another
// directory) and delete+recreate. Like agent/tail's stress writer it keeps
// each rotation fair, watching the running agent's per-file offsets on
// /metrics; lines are lost by the rotation itself, with any tailer, when
//   - a file is renamed or deleted before a tailer opened it (so it first
//     waits until the agent has a line of the current file durable),
//   - copytruncate truncates lines not read yet (so it first waits until
//     the agent has the whole file durable),
//   - crashes: a file is deleted with lines the agent has not made durable,
//     or renamed away while the agent is down before it ever checkpointed
//     it (offline only renames of checkpointed files are done, and deletes
//     wait for the whole file).
type seqWriter struct {
	t      *testing.T
	rng    *rand.Rand
	path   string
	copies string // directory of copytruncate copies, outside the glob
	crash  bool   // the agent may be killed at any moment
	agent  *runProc

	f       *os.File
	ino     uint64
	size    int64 // bytes in the current file generation
	next    int   // next sequence number
	rotated int
	// durable says the agent had the current file's first line durable,
	// so its checkpoint lets a restarted agent find it after a rename.
	durable bool
	// truncations is how many copytruncates the running agent must have
	// seen before an offset of the current file means its new generation.
	truncations int
	ops         map[string]int
	pad         []byte
}

func newSeqWriter(t *testing.T, seed uint64, path, copies string, crash bool) *seqWriter {
	w := &seqWriter{t: t, rng: rand.New(rand.NewPCG(seed, 1)), path: path, copies: copies, crash: crash, ops: map[string]int{}}
	w.open()
	t.Cleanup(func() { _ = w.f.Close() })
	return w
}

func (w *seqWriter) open() {
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		w.t.Fatal(err)
	}
	fi, err := f.Stat()
	if err != nil {
		w.t.Fatal(err)
	}
	w.f, w.ino, w.size, w.durable = f, inode(w.t, f), fi.Size(), false
}

// seqLine renders record seq; pad varies the line length.
func seqLine(dst []byte, seq int, pad []byte) []byte {
	dst = fmt.Appendf(dst, `{"customerId":"seq-%08d","meterApiName":"stress","meterValue":%d,"meterTimeInMillis":%d,"dimensions":{"pad":"p%s"}}`+"\n",
		seq, seq%100+1, seqBase+int64(seq)*1000, pad)
	return dst
}

func (w *seqWriter) line() {
	w.pad = w.pad[:0]
	for range w.rng.IntN(80) {
		w.pad = append(w.pad, byte('a'+w.rng.IntN(26)))
	}
	b := seqLine(nil, w.next, w.pad)
	if _, err := w.f.Write(b); err != nil {
		w.t.Fatal(err)
	}
	w.next++
	w.size += int64(len(b))
}

// offset is the agent's durable offset in the current file, or -1.
func (w *seqWriter) offset() int64 {
	samples := w.agent.metrics()
	if n, _ := sumSamples(samples, "metership_tail_truncations_total"); int(n) < w.truncations {
		return -1 // the agent still reads the previous generation
	}
	v, ok := sumSamples(samples, "metership_tail_file_offset_bytes", "inode", strconv.FormatUint(w.ino, 10))
	if !ok {
		return -1
	}
	return int64(v)
}

// waitDurable waits until the agent has the current file's first line.
func (w *seqWriter) waitDurable() {
	if w.size == 0 {
		w.line() // the agent can only prove it opened a file with a line
	}
	waitUntil(w.t, 20*time.Second, func() string {
		return fmt.Sprintf("the agent to open %s (inode %d)\n%s", w.path, w.ino, w.agent.out.String())
	},
		func() bool { return w.offset() > 0 })
	w.durable = true
}

// waitCaughtUp waits until the agent has the whole current file durable.
func (w *seqWriter) waitCaughtUp() {
	waitUntil(w.t, 20*time.Second, func() string {
		return fmt.Sprintf("the agent to catch up with %s (inode %d, %d bytes, at %d)\n%s", w.path, w.ino, w.size, w.offset(), w.agent.out.String())
	}, func() bool { return w.offset() == w.size })
	w.durable = w.size > 0
}

// rotate rotates the file. With the agent down (w.agent nil) only a
// checkpointed file is renamed; otherwise nothing happens.
func (w *seqWriter) rotate() {
	op := []string{"rename", "copytruncate", "delete"}[w.rng.IntN(3)]
	switch {
	case w.agent == nil && !w.durable:
		return
	case w.agent == nil:
		op = "rename"
	case op == "rename" || !w.crash && op == "delete":
		w.waitDurable()
	default:
		w.waitCaughtUp()
	}
	w.ops[op]++
	w.rotated++
	switch op {
	case "copytruncate":
		rotate.CopyTruncate(w.t, w.f, w.path, filepath.Join(w.copies, fmt.Sprintf("app.log.ct%d", w.rotated)))
		w.size, w.durable = 0, false
		if w.agent != nil {
			w.truncations++
		}
		return
	case "rename":
		if err := os.Rename(w.path, fmt.Sprintf("%s.%d", w.path, w.rotated)); err != nil {
			w.t.Fatal(err)
		}
	case "delete":
		if err := os.Remove(w.path); err != nil {
			w.t.Fatal(err)
		}
	}
	// A writer that has not reopened yet still writes to the old file;
	// after a crash only a renamed file can be found again to read them.
	if op == "rename" || !w.crash {
		for range w.rng.IntN(4) {
			w.line()
		}
	}
	if err := w.f.Close(); err != nil {
		w.t.Fatal(err)
	}
	w.open()
}

// write appends n records, rotating after one line in every, on average.
func (w *seqWriter) write(n, every int, pause time.Duration) {
	for i := range n {
		w.line()
		if every > 0 && w.rng.IntN(every) == 0 {
			w.rotate()
		}
		if pause > 0 && i%20 == 19 {
			time.Sleep(pause)
		}
	}
}

// attach points the writer at a (re)started agent, or at none (nil).
func (w *seqWriter) attach(p *runProc) {
	w.agent, w.truncations = p, 0
}

// assertSeqOnce checks that the bucket holds records 0..n-1 exactly once,
// byte for byte as written (the uniqueId added), and nothing else.
func assertSeqOnce(t *testing.T, srv *s3server.Server, n int) {
	t.Helper()
	got := readBucket(t, srv)
	if len(got.deadLetters) != 0 {
		t.Fatalf("%d unexpected dead-letter objects", len(got.deadLetters))
	}
	checkSeqRecords(t, got, n)
}

// checkSeqRecords is assertSeqOnce on the record objects of s.
func checkSeqRecords(t *testing.T, s shipped, n int) {
	t.Helper()
	byID := checkRecordObjects(t, s) // fails on a duplicate uniqueId
	seen := make([]int, n)
	for _, r := range byID {
		id, _ := r["customerId"].(string)
		seq, err := strconv.Atoi(strings.TrimPrefix(id, "seq-"))
		if err != nil || seq < 0 || seq >= n {
			t.Fatalf("unexpected record %v", r)
		}
		seen[seq]++
		pad := strings.TrimPrefix(r["dimensions"].(map[string]any)["pad"].(string), "p")
		var want map[string]any
		dec := json.NewDecoder(strings.NewReader(string(seqLine(nil, seq, []byte(pad)))))
		dec.UseNumber()
		if err := dec.Decode(&want); err != nil {
			t.Fatal(err)
		}
		want["uniqueId"] = r["uniqueId"]
		if fmt.Sprint(want) != fmt.Sprint(r) {
			t.Fatalf("record %d arrived as %v, want %v", seq, r, want)
		}
	}
	var gaps, dups []int
	for seq, c := range seen {
		switch {
		case c == 0:
			gaps = append(gaps, seq)
		case c > 1:
			dups = append(dups, seq)
		}
	}
	if len(gaps) != 0 || len(dups) != 0 {
		t.Fatalf("%d gaps (first %v), %d duplicates (first %v) among %d records", len(gaps), gaps[:min(len(gaps), 20)], len(dups), dups[:min(len(dups), 20)], n)
	}
}
