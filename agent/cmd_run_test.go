package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/metership/metership/agent/tail"
	"github.com/metership/metership/buffer"
	"github.com/metership/metership/internal/testutil/s3server"
)

// runDirs makes the tailed directory, the copies directory and the buffer
// directory of a run test.
func runDirs(t *testing.T) (logs, copies, buf string) {
	t.Helper()
	dir := t.TempDir()
	logs, copies, buf = filepath.Join(dir, "logs"), filepath.Join(dir, "copies"), filepath.Join(dir, "buf")
	for _, d := range []string{logs, copies} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return logs, copies, buf
}

// TestRunRotationStress is agent/tail's rotation stress test end to end
// (after grafana/alloy's rotation_stress_test.go): the real agent tails a
// file that a writer appends sequence-numbered records to and rotates at
// random by rename, copytruncate and delete+recreate; after SIGTERM every
// record is in versitygw exactly once.
func TestRunRotationStress(t *testing.T) {
	const total = 12000
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	srv := s3server.Start(t)
	logs, copies, buf := runDirs(t)
	cfg, listen := runConfig(t, srv, runOptions{BufferDir: buf, Sources: tailSource(filepath.Join(logs, "*.log"))})
	w := newSeqWriter(t, seed, filepath.Join(logs, "app.log"), copies, false)
	agent := startRun(t, srv, cfg, listen)
	w.attach(agent)
	w.write(total, 120, 0)

	waitUntil(t, 30*time.Second, func() string {
		return fmt.Sprintf("every line read: %v of %d\n%s", agent.counter("metership_tail_lines_read_total"), w.next, agent.out.String())
	}, func() bool { return agent.counter("metership_tail_lines_read_total") >= float64(w.next) })
	rotations, truncations := agent.counter("metership_tail_rotations_total"), agent.counter("metership_tail_truncations_total")
	if code := agent.stop(); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, agent.out.String())
	}
	assertSeqOnce(t, srv, w.next)
	t.Logf("%d records, rotations %v; rotated files left %v, truncations seen %v", w.next, w.ops, rotations, truncations)
	if w.ops["rename"] == 0 || w.ops["copytruncate"] == 0 || w.ops["delete"] == 0 {
		t.Fatalf("not every rotation was exercised: %v", w.ops)
	}
	if int(truncations) < w.ops["copytruncate"] {
		t.Fatalf("%v truncations seen, %d done", truncations, w.ops["copytruncate"])
	}
}

// TestRunSurvivesKill9 kills the real agent with SIGKILL at random points
// while the writer appends and rotates, restarts it on the same buffer
// directory each time (the writer goes on, renaming now and then, while
// it is down), and after a final SIGTERM finds every record in versitygw
// exactly once.
func TestRunSurvivesKill9(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	srv := s3server.Start(t)
	logs, copies, buf := runDirs(t)
	cfg, listen := runConfig(t, srv, runOptions{BufferDir: buf, Sources: tailSource(filepath.Join(logs, "*.log"))})
	w := newSeqWriter(t, seed, filepath.Join(logs, "app.log"), copies, true)
	const kills = 6
	recovered := 0
	for round := 0; round <= kills; round++ {
		agent := startRun(t, srv, cfg, listen)
		w.attach(agent)
		if round == kills {
			w.write(300, 60, time.Millisecond)
			// Rotated files are read to their end and left; then SIGTERM
			// drains the buffer.
			waitUntil(t, 30*time.Second, func() string {
				return fmt.Sprintf("the agent to finish: %v files, %d bytes of %d\n%s", agent.counter("metership_tail_files"), w.offset(), w.size, agent.out.String())
			}, func() bool { return agent.counter("metership_tail_files") == 1 && w.offset() == w.size })
			if code := agent.stop(); code != 0 {
				t.Fatalf("exit %d after SIGTERM\n%s", code, agent.out.String())
			}
			break
		}
		// Kill at a random line: mid-read, mid-commit, mid-upload, or
		// right after a rotation.
		w.write(200+rng.IntN(1500), 80, time.Millisecond)
		if round > 0 && strings.Contains(agent.out.String(), "buffer recovered") {
			recovered++
		}
		agent.kill()
		w.attach(nil)
		w.write(rng.IntN(300), 100, 0)
	}
	assertSeqOnce(t, srv, w.next)
	t.Logf("%d records, %d kills, %d restarts recovered a buffer, rotations %v", w.next, kills, recovered, w.ops)
	if w.ops["rename"] == 0 || w.ops["copytruncate"]+w.ops["delete"] == 0 {
		t.Fatalf("rotations not exercised: %v", w.ops)
	}
	if recovered == 0 {
		t.Fatal("no restart found a buffer to recover: the kills never landed mid-stream")
	}
}

// TestRunBackPressure fills a 1 MiB buffer while S3 is down: the readers
// pause (nothing is dropped), the buffer directory stays within max_size
// plus one batch, /metrics shows the back-pressure while it lasts, and
// once S3 is back every record arrives exactly once.
func TestRunBackPressure(t *testing.T) {
	const (
		maxSize = 1 << 20
		total   = 24000 // about 3.5 MiB of records
	)
	srv := s3server.Start(t)
	logs, copies, buf := runDirs(t)
	cfg, listen := runConfig(t, srv, runOptions{
		BufferDir: buf, MaxSize: "1MiB", SegmentSize: "64KiB",
		Sources: tailSource(filepath.Join(logs, "*.log")),
	})
	srv.Stop()
	w := newSeqWriter(t, 1, filepath.Join(logs, "app.log"), copies, false)
	agent := startRun(t, srv, cfg, listen)
	w.attach(agent)
	w.write(total, 0, 0)
	if w.size <= 3*maxSize {
		t.Fatalf("wrote only %d bytes", w.size)
	}

	waitUntil(t, 20*time.Second, func() string { return "the buffer to be full\n" + agent.out.String() }, func() bool {
		return agent.counter("metership_buffer_full_total") > 0
	})
	// One batch is one tail chunk: at most max_size/4 of lines, plus the
	// uniqueIds the records gain and the framing.
	const bound = maxSize + maxSize/4*3/2 + 64<<10
	var peak int64
	for range 40 {
		peak = max(peak, dirSize(t, buf))
		time.Sleep(25 * time.Millisecond)
	}
	if peak > bound {
		t.Fatalf("buffer directory reached %d bytes while S3 was down, bound %d", peak, bound)
	}
	read := agent.counter("metership_tail_lines_read_total")
	if read >= total {
		t.Fatalf("all %v lines were read while S3 was down and the buffer full", read)
	}
	if agent.counter("metership_tail_sink_full_total") == 0 {
		t.Fatal("metership_tail_sink_full_total is 0 while the tailer is paused")
	}
	// A pause shows in the metric while it lasts, not only once it ends.
	waitUntil(t, 10*time.Second, func() string { return "back-pressure seconds during the pause\n" + agent.out.String() }, func() bool {
		return agent.counter("metership_tail_backpressure_seconds_total") > 0
	})
	if code := agent.status("/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz %d during a short outage, unready_after is 5m", code)
	}
	t.Logf("S3 down: %v of %d lines read, buffer directory peak %d bytes (bound %d)", read, total, peak, bound)

	srv.Restart()
	waitUntil(t, 60*time.Second, func() string {
		return fmt.Sprintf("every record shipped: %v of %d\n%s", agent.counter("metership_records_shipped_total"), total, agent.out.String())
	}, func() bool { return agent.counter("metership_records_shipped_total") >= total })
	if v := agent.counter("metership_tail_backpressure_seconds_total"); v <= 0 {
		t.Fatalf("metership_tail_backpressure_seconds_total = %v after the pause", v)
	}
	if code := agent.stop(); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, agent.out.String())
	}
	assertSeqOnce(t, srv, total)
}

// badLineField is the metership_records_rejected_total label each of
// badLines is counted under.
var badLineField = []string{
	"line", "line", "line", "customerId", "meterApiName", "meterValue", "meterTimeInMillis", "customerId",
	"meterValue", "meterValue", "meterValue", "meterTimeInMillis", "meterTimeInMillis", "dimensions.a", "customerId",
}

// TestRunBadLinesAndMetrics writes every kind of line the core rejects and
// a 10 MiB line between good records: the bad ones are dead-lettered with
// their reasons (the long one cut to records.max_line_size), the good ones
// shipped, the agent keeps going, and /metrics agrees with the bucket.
func TestRunBadLinesAndMetrics(t *testing.T) {
	if len(badLineField) != len(badLines) {
		t.Fatalf("badLineField has %d entries for %d bad lines", len(badLineField), len(badLines))
	}
	srv := s3server.Start(t)
	logs, copies, buf := runDirs(t)
	cfg, listen := runConfig(t, srv, runOptions{BufferDir: buf, Sources: tailSource(filepath.Join(logs, "*.log"))})
	w := newSeqWriter(t, 1, filepath.Join(logs, "app.log"), copies, false)
	agent := startRun(t, srv, cfg, listen)
	if code := agent.status("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz %d", code)
	}
	if code := agent.status("/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz %d", code)
	}

	type bad struct {
		line, reason string
		offset       int64
	}
	var bads []bad
	writeBad := func(line, reason string) {
		bads = append(bads, bad{line, reason, w.size})
		if _, err := w.f.WriteString(line + "\n"); err != nil {
			t.Fatal(err)
		}
		w.size += int64(len(line)) + 1
	}
	for i, b := range badLines {
		w.write(7, 0, 0)
		writeBad(b.line, b.reason)
		if i == len(badLines)/2 {
			w.write(3, 0, 0)
			writeBad(`{"customerId":"`+strings.Repeat("x", 10<<20)+`"}`, "max_line_size")
		}
	}
	w.write(5, 0, 0)
	lines := w.next + len(bads)
	waitUntil(t, 30*time.Second, func() string { return "the first lines read\n" + agent.out.String() }, func() bool {
		return agent.counter("metership_tail_lines_read_total") == float64(lines)
	})
	// The agent keeps going after them.
	w.write(500, 0, 0)
	lines += 500
	waitUntil(t, 30*time.Second, func() string { return "every record shipped\n" + agent.out.String() }, func() bool {
		return agent.counter("metership_records_shipped_total") == float64(w.next)
	})
	waitUntil(t, 30*time.Second, func() string { return "every dead letter shipped\n" + agent.out.String() }, func() bool {
		return agent.counter("metership_dead_letters_shipped_total") == float64(len(bads))
	})
	// Shipped segments are acknowledged in groups, up to 100 ms later.
	waitUntil(t, 30*time.Second, func() string { return "every segment acknowledged\n" + agent.out.String() }, func() bool {
		return agent.counter("metership_segments_pending") == 0
	})

	m := agent.metrics()
	objects := len(readBucket(t, srv).records)
	for _, c := range []struct {
		name string
		want float64
	}{
		{"metership_records_accepted_total", float64(w.next)},
		{"metership_records_shipped_total", float64(w.next)},
		{"metership_objects_written_total", float64(objects)},
		{"metership_records_rejected_total", float64(len(bads))},
		{"metership_tail_lines_read_total", float64(lines)},
		{"metership_tail_lines_too_long_total", 1},
		{"metership_tail_bytes_read_total", float64(w.size)},
		{"metership_tail_files", 1},
		{"metership_tail_file_offset_bytes", float64(w.size)},
		{"metership_tail_file_size_bytes", float64(w.size)},
		{"metership_segments_pending", 0},
	} {
		if got, _ := sumSamples(m, c.name); got != c.want {
			t.Errorf("%s = %v, want %v", c.name, got, c.want)
		}
	}
	wantFields := map[string]float64{"line": 1} // the too-long line
	for _, f := range badLineField {
		wantFields[f]++
	}
	for f, n := range wantFields {
		if got, _ := sumSamples(m, "metership_records_rejected_total", "field", f); got != n {
			t.Errorf("metership_records_rejected_total{field=%q} = %v, want %v", f, got, n)
		}
	}
	// Record objects plus one dead-letter object per segment holding bad
	// lines.
	if got, _ := sumSamples(m, "metership_uploads_total"); got < float64(objects+1) {
		t.Errorf("metership_uploads_total = %v, want at least %d", got, objects+1)
	}
	if t.Failed() {
		t.FailNow()
	}

	if code := agent.stop(); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, agent.out.String())
	}
	assertSeqOnceAllowingDeadLetters(t, srv, w.next)

	got := readBucket(t, srv)
	var dead []map[string]any
	for _, d := range got.deadLetters {
		dead = append(dead, d...)
	}
	if len(dead) != len(bads) {
		t.Fatalf("%d dead letters, want %d", len(dead), len(bads))
	}
	byOffset := map[int64]map[string]any{}
	for _, d := range dead {
		off, err := d["offset"].(json.Number).Int64()
		if err != nil {
			t.Fatalf("dead letter without offset: %v", d)
		}
		if d["source"] != w.path {
			t.Fatalf("dead letter source %v, want %s", d["source"], w.path)
		}
		byOffset[off] = d
	}
	for _, b := range bads {
		d, ok := byOffset[b.offset]
		if !ok {
			t.Fatalf("no dead letter at offset %d (%.60q)", b.offset, b.line)
		}
		line := d["line"].(string)
		want := b.line
		if len(want) > 1<<20 {
			want = want[:1<<20] // records.max_line_size, the default 1 MiB
		}
		if line != want {
			t.Fatalf("dead letter at %d holds %d bytes %.60q, want %d bytes %.60q", b.offset, len(line), line, len(want), want)
		}
		if reason := d["reason"].(string); !strings.Contains(reason, b.reason) {
			t.Fatalf("dead letter for %.60q has reason %q, want %q", b.line, reason, b.reason)
		}
	}
}

// TestRunOversizeLines runs a buffer of the smallest max_size (128 KiB)
// with records.max_line_size 1 MiB: a too-long line is dead-lettered cut
// to what the buffer can hold (and the reason says so), and a line whose dead letter alone would
// not fit in the buffer (control characters escape to six bytes each) is
// dead-lettered shortened instead of stalling the file; the records
// around them are shipped exactly once.
func TestRunOversizeLines(t *testing.T) {
	srv := s3server.Start(t)
	logs, copies, buf := runDirs(t)
	cfg, listen := runConfig(t, srv, runOptions{
		BufferDir: buf, MaxSize: "128KiB", SegmentSize: "64KiB",
		Sources: tailSource(filepath.Join(logs, "*.log")),
		Extra:   "records:\n  max_line_size: 1MiB\n",
	})
	w := newSeqWriter(t, 1, filepath.Join(logs, "app.log"), copies, false)
	agent := startRun(t, srv, cfg, listen)
	w.write(50, 0, 0)
	escaping, escapingAt := strings.Repeat("\x01", 30<<10), w.size
	long, longAt := `{"customerId":"`+strings.Repeat("y", 2<<20)+`"}`, w.size+int64(len(escaping))+1
	for _, l := range []string{escaping, long} {
		if _, err := w.f.WriteString(l + "\n"); err != nil {
			t.Fatal(err)
		}
		w.size += int64(len(l)) + 1
	}
	w.write(50, 0, 0)
	waitUntil(t, 30*time.Second, func() string { return "every record and dead letter shipped\n" + agent.out.String() }, func() bool {
		m := agent.metrics()
		shipped, _ := sumSamples(m, "metership_records_shipped_total")
		dead, _ := sumSamples(m, "metership_dead_letters_shipped_total")
		return shipped == float64(w.next) && dead == 2
	})
	if code := agent.stop(); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, agent.out.String())
	}
	assertSeqOnceAllowingDeadLetters(t, srv, w.next)
	byOffset := map[int64]map[string]any{}
	for _, ds := range readBucket(t, srv).deadLetters {
		for _, d := range ds {
			off, _ := d["offset"].(json.Number).Int64()
			byOffset[off] = d
		}
	}
	for _, c := range []struct {
		at           int64
		line, reason string
		prefix       bool // the dead letter holds a non-empty prefix of line
		max          int  // of at most this many bytes
	}{
		// Escaped, its entry would be 180 KiB: shortened to fit half the buffer
		// (max_size / 2).
		{escapingAt, escaping, "line shortened to its first", true, 64 << 10 / 6},
		// Cut to what fits in half the buffer (max_size / 2, less the
		// entry's overhead).
		{longAt, long, "bytes are kept here, to fit buffer.max_size", true, 64 << 10},
	} {
		d, ok := byOffset[c.at]
		if !ok {
			t.Fatalf("no dead letter at offset %d: %v", c.at, byOffset)
		}
		got, _ := d["line"].(string)
		if c.prefix && got != "" && strings.HasPrefix(c.line, got) && len(got) <= c.max {
			got = c.line
		}
		if got != c.line || !strings.Contains(d["reason"].(string), c.reason) {
			t.Fatalf("dead letter at %d: %d bytes, reason %q; want %d bytes, reason with %q", c.at, len(d["line"].(string)), d["reason"], len(c.line), c.reason)
		}
	}
}

// assertSeqOnceAllowingDeadLetters is assertSeqOnce for a bucket that also
// holds dead letters.
func assertSeqOnceAllowingDeadLetters(t *testing.T, srv *s3server.Server, n int) {
	t.Helper()
	got := readBucket(t, srv)
	got.deadLetters = nil
	checkSeqRecords(t, got, n)
}

// TestRunReadyz checks /healthz and the /readyz transitions: ready while
// uploads work, 503 once they have failed for longer than
// server.unready_after, ready again once S3 is back; nothing is lost.
func TestRunReadyz(t *testing.T) {
	srv := s3server.Start(t)
	logs, copies, buf := runDirs(t)
	cfg, listen := runConfig(t, srv, runOptions{BufferDir: buf, UnreadyAfter: "1s", Sources: tailSource(filepath.Join(logs, "*.log"))})
	w := newSeqWriter(t, 1, filepath.Join(logs, "app.log"), copies, false)
	agent := startRun(t, srv, cfg, listen)
	w.write(100, 0, 0)
	waitUntil(t, 20*time.Second, func() string { return "the first records shipped\n" + agent.out.String() }, func() bool {
		return agent.counter("metership_records_shipped_total") == 100
	})
	if code := agent.status("/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz %d while uploads work", code)
	}
	// SIGHUP does not reload (documented) and must not stop the agent.
	if err := agent.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, func() string { return "SIGHUP answered with a log line\n" + agent.out.String() }, func() bool {
		return strings.Contains(agent.out.String(), "configuration reload is not supported")
	})
	if code := agent.status("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz %d after SIGHUP", code)
	}

	srv.Stop()
	w.write(100, 0, 0)
	waitUntil(t, 30*time.Second, func() string { return "/readyz 503 while S3 is down\n" + agent.out.String() }, func() bool {
		return agent.status("/readyz") == http.StatusServiceUnavailable
	})
	if failed := agent.counter("metership_upload_failures_total"); failed == 0 {
		t.Fatal("unready without a failed upload")
	}
	if code := agent.status("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz %d while S3 is down; the process is alive", code)
	}

	srv.Restart()
	waitUntil(t, 60*time.Second, func() string { return "/readyz 200 once S3 is back\n" + agent.out.String() }, func() bool {
		return agent.status("/readyz") == http.StatusOK
	})
	waitUntil(t, 30*time.Second, func() string { return "every record shipped\n" + agent.out.String() }, func() bool {
		return agent.counter("metership_records_shipped_total") == 200
	})
	if code := agent.stop(); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, agent.out.String())
	}
	assertSeqOnce(t, srv, 200)
}

// TestRunForgetsUnclaimedCheckpoints restarts the agent after a tailed
// file was deleted while it was down: once the grace period is over, the
// file's checkpoint is forgotten, and only it: the checkpoints of files
// that still exist, followed by either of two sources, stay.
func TestRunForgetsUnclaimedCheckpoints(t *testing.T) {
	srv := s3server.Start(t)
	dir := t.TempDir()
	a, b, buf := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "buf")
	for _, d := range []string{a, b} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := []string{filepath.Join(a, "kept.log"), filepath.Join(b, "kept.log"), filepath.Join(a, "gone.log")}
	for i, f := range files {
		content := seqLine(nil, i, nil)
		if err := os.WriteFile(f, content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg, listen := runConfig(t, srv, runOptions{BufferDir: buf, Sources: tailSource(filepath.Join(a, "*.log")) + tailSource(filepath.Join(b, "*.log"))})
	agent := startRun(t, srv, cfg, listen)
	waitUntil(t, 20*time.Second, func() string { return "three files read\n" + agent.out.String() }, func() bool {
		return agent.counter("metership_tail_lines_read_total") == 3
	})
	if code := agent.stop(); code != 0 {
		t.Fatalf("exit %d\n%s", code, agent.out.String())
	}
	before := bufferCheckpoints(t, buf)
	if len(before) != 3 {
		t.Fatalf("%d checkpoints after the first run, want 3: %v", len(before), before)
	}

	if err := os.Remove(files[2]); err != nil {
		t.Fatal(err)
	}
	agent = startRun(t, srv, cfg, listen)
	// The grace period is 2 x rotate_wait + refresh_interval = 700ms.
	waitUntil(t, 20*time.Second, func() string { return "the stale checkpoint forgotten\n" + agent.out.String() }, func() bool {
		return agent.counter("metership_tail_checkpoints_forgotten_total") > 0
	})
	time.Sleep(300 * time.Millisecond)
	if n := agent.counter("metership_tail_checkpoints_forgotten_total"); n != 1 {
		t.Fatalf("%v checkpoints forgotten, want 1", n)
	}
	if code := agent.stop(); code != 0 {
		t.Fatalf("exit %d\n%s", code, agent.out.String())
	}
	after := bufferCheckpoints(t, buf)
	want := map[string]bool{}
	for _, cp := range before {
		id, err := tail.DecodeMeta(cp.Meta)
		if err != nil {
			t.Fatal(err)
		}
		want[cp.Key] = id.Path != files[2]
	}
	if len(after) != 2 {
		t.Fatalf("checkpoints after the second run: %v", after)
	}
	for _, cp := range after {
		if !want[cp.Key] {
			t.Fatalf("checkpoint %s kept; the deleted file's should be gone, the others kept: %v", cp.Key, after)
		}
	}
	assertSeqOnce(t, srv, 3)
}

// bufferCheckpoints opens a stopped agent's buffer and returns its
// checkpoints.
func bufferCheckpoints(t *testing.T, dir string) []buffer.Checkpoint {
	t.Helper()
	b, err := buffer.Open(buffer.Options{Dir: dir, AgentID: "test-agent"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	return b.Checkpoints()
}
