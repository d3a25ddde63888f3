package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metership/metership/internal/testutil/lineends"
	"github.com/metership/metership/internal/testutil/s3server"
)

// TestShipAgainOnGrownFile ships a small file, appends to it and ships it
// again, three times, the last growing it past the fingerprint window (1
// KiB): every record arrives exactly once, and a record shipped by an
// earlier run keeps its uniqueId (the file keeps its identity while it
// grows from 3 lines).
func TestShipAgainOnGrownFile(t *testing.T) {
	srv := s3server.Start(t)
	dir := t.TempDir()
	cfg := s3Config(t, srv, "", filepath.Join(dir, "buf"), "")
	input := filepath.Join(dir, "usage.ndjson")
	f, err := os.OpenFile(input, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	next := 0
	ids := map[int]string{} // seq -> uniqueId shipped
	for run, add := range []int{3, 1, 20} {
		for range add {
			if _, err := f.Write(seqLine(nil, next, []byte("grow"))); err != nil {
				t.Fatal(err)
			}
			next++
		}
		stdout, stderr, code := runAgent(t, srv, nil, "ship", "-c", cfg, input)
		if code != 0 {
			t.Fatalf("ship %d: exit %d\n%s\n%s", run, code, stdout, stderr)
		}
		mustContain(t, stdout, fmt.Sprintf("records accepted:   %d\n", add))
		got := readBucket(t, srv)
		checkSeqRecords(t, got, next) // each record exactly once
		for _, r := range checkRecordObjects(t, got) {
			var seq int
			fmt.Sscanf(r["customerId"].(string), "seq-%d", &seq)
			id := r["uniqueId"].(string)
			if old, ok := ids[seq]; ok && old != id {
				t.Fatalf("ship %d: record %d has uniqueId %s, shipped before as %s", run, seq, id, old)
			}
			ids[seq] = id
		}
	}
}

// TestRunOverlappingGlobs runs two sources whose globs both match app.log
// (*.log and app*): its 50 lines arrive as 50 records, once each; check
// accepts the config and warns about the overlap.
func TestRunOverlappingGlobs(t *testing.T) {
	srv := s3server.Start(t)
	logs, copies, buf := runDirs(t)
	sources := tailSource(filepath.Join(logs, "*.log")) + tailSource(filepath.Join(logs, "app*"))
	cfg, listen := runConfig(t, srv, runOptions{BufferDir: buf, Sources: sources})

	w := newSeqWriter(t, 1, filepath.Join(logs, "app.log"), copies, false)
	agent := startRun(t, srv, cfg, listen)
	w.attach(agent)
	w.write(50, 0, 0)
	w.waitCaughtUp()
	waitUntil(t, 20*time.Second, func() string { return "50 records shipped\n" + agent.out.String() }, func() bool {
		n, _ := agent.metric("metership_records_shipped_total")
		return n >= 50
	})
	if code := agent.stop(); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, agent.out.String())
	}
	assertSeqOnce(t, srv, 50)
	if n := strings.Count(agent.out.String(), "following file"); n != 1 {
		t.Fatalf("app.log followed %d times, want once\n%s", n, agent.out.String())
	}
	for _, l := range strings.Split(agent.out.String(), "\n") {
		if strings.Contains(l, "following file") && strings.Count(l, `"source":`) != 1 {
			t.Fatalf("the log line has the key source %d times: %s", strings.Count(l, `"source":`), l)
		}
	}
	_, stderr, code := runAgent(t, srv, nil, "check", "-c", cfg)
	if code != 0 {
		t.Fatalf("check: exit %d\n%s", code, stderr)
	}
	mustContain(t, stderr, fmt.Sprintf("warning: sources[0] %q and sources[1] %q can match the same file", filepath.Join(logs, "*.log"), filepath.Join(logs, "app*")))
}

// splitObjects returns the NDJSON lines of the record objects and of the
// dead-letter objects.
func splitObjects(s shipped) (records, deadLetters []string) {
	for key, lines := range s.rawLines {
		if deadKey.MatchString(key) {
			deadLetters = append(deadLetters, lines...)
		} else {
			records = append(records, lines...)
		}
	}
	return records, deadLetters
}

// TestLineEndingsShipAndTail sends one input, with LF and with CRLF
// endings, through `ship` and through a tailing `run`: each yields the same
// records and dead letters (lineends.Check; the Fluent Bit plugin's half
// is in plugin/). A '\r' does not count against records.max_line_size, and
// a too-long line is dead-lettered the same way by both.
func TestLineEndingsShipAndTail(t *testing.T) {
	extra := "records:\n  max_line_size: " + lineends.MaxLineSize + "\n"
	for _, crlf := range []bool{false, true} {
		name := map[bool]string{false: "LF", true: "CRLF"}[crlf]
		t.Run("ship/"+name, func(t *testing.T) {
			srv := s3server.Start(t)
			dir := t.TempDir()
			input := filepath.Join(dir, "usage.ndjson")
			if err := os.WriteFile(input, lineends.File(crlf), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := s3Config(t, srv, "", filepath.Join(dir, "buf"), extra)
			stdout, stderr, code := runAgent(t, srv, nil, "ship", "-c", cfg, input)
			if code != 0 {
				t.Fatalf("ship: exit %d\n%s\n%s", code, stdout, stderr)
			}
			recs, dead := splitObjects(readBucket(t, srv))
			lineends.Check(t, recs, dead)
		})
		t.Run("tail/"+name, func(t *testing.T) {
			srv := s3server.Start(t)
			logs, _, buf := runDirs(t)
			cfg, listen := runConfig(t, srv, runOptions{BufferDir: buf, Sources: tailSource(filepath.Join(logs, "*.log")), Extra: extra})
			agent := startRun(t, srv, cfg, listen)
			if err := os.WriteFile(filepath.Join(logs, "usage.log"), lineends.File(crlf), 0o600); err != nil {
				t.Fatal(err)
			}
			lines := float64(len(lineends.Lines()))
			waitUntil(t, 20*time.Second, func() string { return "every line read\n" + agent.out.String() }, func() bool {
				return agent.counter("metership_tail_lines_read_total") == lines
			})
			if code := agent.stop(); code != 0 {
				t.Fatalf("exit %d after SIGTERM\n%s", code, agent.out.String())
			}
			recs, dead := splitObjects(readBucket(t, srv))
			lineends.Check(t, recs, dead)
		})
	}
}
