package main

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	fb "github.com/metership/metership/fluentbit/fbtest"
	"github.com/metership/metership/internal/testutil/lineends"
	"github.com/metership/metership/internal/testutil/s3server"
)

var et = fb.EventTime{Sec: 1654560000, Nsec: 250_000_000}

var malformedTail = []byte{0x92, 0xd7, 0x00, 0x01}

// mixedChunk holds, in order: a group start, three valid records (a v2
// event, a v1 event with its own time, a {"log": meter JSON} record), two
// bad ones (plain text in "log", a record without customerId), a group end
// and a malformed tail. Its dead letters are at offsets 4, 5 and 7.
func mixedChunk() []byte {
	return new(fb.Chunk).
		GroupStart(fb.Map{{Key: "schema", Value: "otlp"}}, fb.Map{{Key: "resource", Value: "app"}}).
		V2(et, fb.Map{{Key: "stream", Value: "stdout"}}, fb.MeterRecord("mixed-1", "api-calls", 5, 0, fb.Map{{Key: "region", Value: "us-east-1"}})).
		V1(et, fb.MeterRecord("mixed-2", "api-calls", 1.5, 1654560001000, nil)).
		V1(et, fb.Map{{Key: "log", Value: `{"customerId":"mixed-3","meterApiName":"api-calls","meterValue":7}`}}).
		V1(et, fb.Map{{Key: "log", Value: "GET /index.html 200"}}).
		V1(et, fb.Map{{Key: "meterApiName", Value: "api-calls"}, {Key: "meterValue", Value: 1}}).
		GroupEnd().
		Raw(malformedTail).
		Bytes()
}

// checkMixed checks mixedChunk's records (removing them from recs) and
// its dead letters.
func checkMixed(t *testing.T, recs []fb.Record, dls []fb.DeadLetter, tag string) []fb.Record {
	t.Helper()
	var rest []fb.Record
	mixed := map[string]fb.Record{}
	for _, r := range recs {
		if strings.HasPrefix(r.CustomerID, "mixed-") {
			if _, dup := mixed[r.CustomerID]; dup {
				t.Errorf("%s shipped twice", r.CustomerID)
			}
			mixed[r.CustomerID] = r
			continue
		}
		rest = append(rest, r)
	}
	if len(mixed) != 3 {
		t.Errorf("mixed records shipped: %v, want mixed-1..3", mixed)
	}
	if r := mixed["mixed-1"]; r.Time != 1654560000250 || r.Dimensions["region"] != "us-east-1" || r.Value.String() != "5" {
		t.Errorf("mixed-1 = %+v: want the event time and its dimensions", r)
	}
	if r := mixed["mixed-2"]; r.Time != 1654560001000 || r.Value.String() != "1.5" {
		t.Errorf("mixed-2 = %+v: want its own time", r)
	}
	want := []struct {
		offset int64
		line   string
		reason string
	}{
		{4, "GET /index.html 200", "not a JSON object"},
		{5, `{"meterApiName":"api-calls","meterValue":1}`, "customerId"},
		{7, base64.StdEncoding.EncodeToString(malformedTail), "malformed msgpack"},
	}
	if len(dls) != len(want) {
		t.Fatalf("dead letters %+v, want %d", dls, len(want))
	}
	for i, w := range want {
		d := dls[i]
		if d.Source != tag || d.Offset != w.offset || d.Line != w.line || !strings.Contains(d.Reason, w.reason) {
			t.Errorf("dead letter %+v, want source %s offset %d line %q reason ~%q", d, tag, w.offset, w.line, w.reason)
		}
	}
	return rest
}

// flushAll flushes chunk files from several threads, re-sending those
// answered FLB_RETRY like Fluent Bit's scheduler, until all are FLB_OK.
func flushAll(t *testing.T, h *harness, name, tag string, threads int, files []string) (retries int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for len(files) > 0 {
		got := h.do("parallel %s %d %s %s", name, threads, tag, strings.Join(files, " "))
		rcs := strings.Split(strings.TrimPrefix(got, "parallel "+name+" rc="), ",")
		if len(rcs) != len(files) {
			t.Fatalf("parallel answered %q for %d files", got, len(files))
		}
		var again []string
		for i, rc := range rcs {
			switch rc {
			case "1":
			case "2":
				again = append(again, files[i])
			default:
				t.Fatalf("flush of %s = %s, want FLB_OK or FLB_RETRY\nstderr:\n%s", files[i], rc, h.stderr.String())
			}
		}
		retries += len(again)
		files = again
		if len(files) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%d chunks still refused", len(files))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return retries
}

// flushUntilOK re-sends one chunk until FLB_OK.
func flushUntilOK(t *testing.T, h *harness, name, tag, file string) (retries int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		switch got := h.do("flush %s %s %s", name, tag, file); got {
		case "flush " + name + " rc=1":
			return retries
		case "flush " + name + " rc=2":
			retries++
		default:
			t.Fatalf("flush: %q\nstderr:\n%s", got, h.stderr.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("chunk still refused after %d retries", retries)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func chunkFiles(h *harness, prefix string, chunks, per int) []string {
	files := make([]string, chunks)
	for i := range files {
		files[i] = h.file(fmt.Sprintf("%s-%d.chunk", prefix, i), fb.MeterChunk(i*per, per))
	}
	return files
}

func TestHarnessFileOutput(t *testing.T) {
	h := startHarness(t)
	h.expect("register rc=0 type=2 proxy=11 flags=0 name=metership", "register")
	root := t.TempDir()
	h.expect("init a rc=1", "init a %s", h.props("a.props", fileProps(t, root, nil)))
	h.expect("flush a rc=1", "flush a usage.mixed %s", h.file("mixed.chunk", mixedChunk()))
	const chunks, per = 12, 100
	flushAll(t, h, "a", "usage.app", 4, chunkFiles(h, "app", chunks, per))
	h.expect("exit a rc=1", "exit a")
	h.expect("unregister", "unregister")

	recs := fb.ParseRecords(t, fb.ReadDir(t, filepath.Join(root, "ingest")))
	dls := fb.ParseDeadLetters(t, fb.ReadDir(t, filepath.Join(root, "failed-requests")))
	rest := checkMixed(t, recs, dls, "usage.mixed")
	fb.AssertCustomers(t, rest, 0, chunks*per)
}

func TestHarnessInitErrorsAndInstances(t *testing.T) {
	h := startHarness(t)
	h.expect("register rc=0 type=2 proxy=11 flags=0 name=metership", "register")

	h.expect("init bad rc=0", "init bad %s", h.props("bad.props", map[string]string{"buffer_sync": "sometimes", "buffer_dir": t.TempDir()}))
	h.waitStderr(`"property":"buffer_sync"`)

	rootA, rootB := t.TempDir(), t.TempDir()
	propsA := fileProps(t, rootA, nil)
	h.expect("init a rc=1", "init a %s", h.props("a.props", propsA))
	h.expect("init b rc=1", "init b %s", h.props("b.props", fileProps(t, rootB, nil)))
	sameDir := fileProps(t, t.TempDir(), map[string]string{"buffer_dir": propsA["buffer_dir"]})
	h.expect("init c rc=0", "init c %s", h.props("c.props", sameDir))
	h.waitStderr("already used by another metership output")

	h.expect("flush a rc=1", "flush a usage %s", h.file("a.chunk", fb.MeterChunk(0, 100)))
	h.expect("flush b rc=1", "flush b usage %s", h.file("b.chunk", fb.MeterChunk(100, 50)))
	legacy := h.file("legacy.chunk", fb.MeterChunk(150, 10))
	// The context-less flush cannot tell which of two instances the chunk
	// is for: Fluent Bit keeps it (FLB_RETRY), never drops it.
	h.expect("flushlegacy rc=2", "flushlegacy usage %s", legacy)
	h.expect("exit a rc=1", "exit a")
	// One instance left: it takes the chunk.
	h.expect("flushlegacy rc=1", "flushlegacy usage %s", legacy)
	h.expect("exitlegacy rc=1", "exitlegacy")
	// Every instance exited: a late chunk is kept by Fluent Bit too.
	h.expect("flushlegacy rc=2", "flushlegacy usage %s", legacy)
	h.expect("unregister", "unregister")

	fb.AssertCustomers(t, fb.ParseRecords(t, fb.ReadDir(t, rootA)), 0, 100)
	fb.AssertCustomers(t, fb.ParseRecords(t, fb.ReadDir(t, rootB)), 100, 60)
}

func TestHarnessBufferFullRetry(t *testing.T) {
	h := startHarness(t)
	h.expect("register rc=0 type=2 proxy=11 flags=0 name=metership", "register")
	root := t.TempDir()
	// A regular file where the output directory must go: uploads fail
	// until it is removed, so the buffer fills up.
	blocker := filepath.Join(root, "ingest")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	h.expect("init a rc=1", "init a %s", h.props("a.props", fileProps(t, root, map[string]string{
		"buffer_segment_size": "64KiB",
		"buffer_max_size":     "256KiB",
	})))
	first := h.file("first.chunk", fb.MeterChunk(0, 800))
	second := h.file("second.chunk", fb.MeterChunk(800, 300))
	h.expect("flush a rc=1", "flush a usage %s", first)
	for i := 0; i < 3; i++ {
		h.expect("flush a rc=2", "flush a usage %s", second)
	}
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	flushUntilOK(t, h, "a", "usage", second)
	h.expect("exit a rc=1", "exit a")
	fb.AssertCustomers(t, fb.ParseRecords(t, fb.ReadDir(t, root)), 0, 1100)
}

// TestHarnessFlushRacingExit: flushes that arrive while an instance exits
// (Fluent Bit shutting down with chunks still in flight) and after it has
// exited are answered FLB_RETRY, never FLB_ERROR (which makes Fluent Bit
// drop the chunk). Uploads fail during the exit, so its drain lasts
// agent_shutdown_timeout; a second run of the plugin then takes every
// chunk Fluent Bit kept, and every record arrives exactly once.
func TestHarnessFlushRacingExit(t *testing.T) {
	root := t.TempDir()
	blocker := filepath.Join(root, "ingest")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	props := fileProps(t, root, map[string]string{"agent_shutdown_timeout": "1s"})
	h := startHarness(t)
	h.expect("register rc=0 type=2 proxy=11 flags=0 name=metership", "register")
	h.expect("init a rc=1", "init a %s", h.props("a.props", props))
	const chunks, per = 8, 50
	files := chunkFiles(h, "race", chunks, per)
	got := h.do("exitrace a usage %s", strings.Join(files, " "))
	var exit, ok, retry, errs, late int
	if _, err := fmt.Sscanf(got, "exitrace a exit=%d ok=%d retry=%d error=%d late=%d", &exit, &ok, &retry, &errs, &late); err != nil {
		t.Fatalf("exitrace answered %q: %v", got, err)
	}
	if exit != 1 || errs != 0 || retry == 0 || late != 2 {
		t.Fatalf("%s: want exit=1, no FLB_ERROR, flushes during the exit retried (retry>0) and late=2 (FLB_RETRY)\nstderr:\n%s", got, h.stderr.String())
	}
	h.stop()

	// Fluent Bit restarts and sends every chunk it kept; resending the
	// ones already answered FLB_OK is harmless (recognised, not appended).
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	h = startHarness(t)
	h.expect("register rc=0 type=2 proxy=11 flags=0 name=metership", "register")
	h.expect("init a rc=1", "init a %s", h.props("a.props", props))
	flushAll(t, h, "a", "usage", 2, files)
	h.expect("exit a rc=1", "exit a")
	fb.AssertCustomers(t, fb.ParseRecords(t, fb.ReadDir(t, root)), 0, chunks*per)
}

// TestHarnessChunkSentAgainAfterRestart: Fluent Bit that died between a
// flush's FLB_OK and deleting the chunk sends it again from a new process;
// the plugin answers FLB_OK and the records are in the output once.
func TestHarnessChunkSentAgainAfterRestart(t *testing.T) {
	root := t.TempDir()
	props := fileProps(t, root, nil)
	chunk := fb.MeterChunk(0, 200)
	for round := range 2 {
		h := startHarness(t)
		h.expect("register rc=0 type=2 proxy=11 flags=0 name=metership", "register")
		h.expect("init a rc=1", "init a %s", h.props("a.props", props))
		h.expect("flush a rc=1", "flush a usage %s", h.file(fmt.Sprintf("chunk-%d", round), chunk))
		h.expect("exit a rc=1", "exit a")
		h.expect("unregister", "unregister")
	}
	fb.AssertCustomers(t, fb.ParseRecords(t, fb.ReadDir(t, root)), 0, 200)
}

// TestHarnessS3 drives the plugin against a real S3 server (versitygw):
// every record reaches the bucket once, bad ones are dead-lettered under
// failed-requests/, and a flush refused while S3 is down and the buffer
// full is accepted once later, without duplicates.
func TestHarnessS3(t *testing.T) {
	srv := s3server.Start(t)
	h := startHarness(t,
		"AWS_ACCESS_KEY_ID="+srv.AccessKey(),
		"AWS_SECRET_ACCESS_KEY="+srv.SecretKey(),
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null",
	)
	h.expect("register rc=0 type=2 proxy=11 flags=0 name=metership", "register")
	h.expect("init s3 rc=1", "init s3 %s", h.props("s3.props", map[string]string{
		"output_url":              "s3://" + srv.Bucket() + "/ingest/amberdata",
		"output_endpoint":         srv.Endpoint(),
		"output_force_path_style": "on",
		"output_region":           s3server.Region,
		"buffer_dir":              filepath.Join(t.TempDir(), "buffer"),
		"buffer_segment_size":     "64KiB",
		"buffer_max_size":         "256KiB",
		"buffer_flush_interval":   "100ms",
		"agent_shutdown_timeout":  "30s",
		"log_level":               "warn",
	}))

	h.expect("flush s3 rc=1", "flush s3 usage.mixed %s", h.file("mixed.chunk", mixedChunk()))
	const chunks, per = 8, 100
	retries := flushAll(t, h, "s3", "usage.app", 4, chunkFiles(h, "app", chunks, per))
	t.Logf("%d chunks re-sent while the buffer was full", retries)
	waitShipped(t, srv, chunks*per+3)

	// S3 down: the buffer fills and a flush is refused until S3 is back.
	srv.Stop()
	first := h.file("first.chunk", fb.MeterChunk(1000, 800))
	second := h.file("second.chunk", fb.MeterChunk(1800, 300))
	h.expect("flush s3 rc=1", "flush s3 usage.down %s", first)
	for i := 0; i < 3; i++ {
		h.expect("flush s3 rc=2", "flush s3 usage.down %s", second)
	}
	srv.Restart()
	flushUntilOK(t, h, "s3", "usage.down", second)
	h.expect("exit s3 rc=1", "exit s3")

	var recLines, dlLines []string
	for _, o := range srv.ListObjects(t) {
		lines := fb.Lines(t, o.Key, srv.GetObject(t, o.Key))
		switch {
		case strings.HasPrefix(o.Key, "ingest/amberdata/"):
			recLines = append(recLines, lines...)
		case strings.HasPrefix(o.Key, "failed-requests/"):
			dlLines = append(dlLines, lines...)
		default:
			t.Errorf("unexpected object %s", o.Key)
		}
	}
	rest := checkMixed(t, fb.ParseRecords(t, recLines), fb.ParseDeadLetters(t, dlLines), "usage.mixed")
	var early, late []fb.Record
	for _, r := range rest {
		if r.CustomerID < fb.CustomerName(1000) {
			early = append(early, r)
		} else {
			late = append(late, r)
		}
	}
	fb.AssertCustomers(t, early, 0, chunks*per)
	fb.AssertCustomers(t, late, 1000, 1100)
}

// waitShipped waits until the bucket holds n records (all objects).
func waitShipped(t *testing.T, srv *s3server.Server, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := 0
		for _, o := range srv.ListObjects(t) {
			if strings.HasPrefix(o.Key, "ingest/amberdata/") {
				got += len(fb.Lines(t, o.Key, srv.GetObject(t, o.Key)))
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d records in the bucket", got, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestHarnessLineEndings flushes lineends' input as Fluent Bit's tail
// input without a parser hands it over, one {"log": text} record a line,
// with LF endings (no '\r') and with CRLF endings (a '\r' ending each
// text): both give the records and dead letters the tailer and ship give
// (agent's TestLineEndingsShipAndTail).
func TestHarnessLineEndings(t *testing.T) {
	for _, crlf := range []bool{false, true} {
		t.Run(map[bool]string{false: "LF", true: "CRLF"}[crlf], func(t *testing.T) {
			h := startHarness(t)
			h.expect("register rc=0 type=2 proxy=11 flags=0 name=metership", "register")
			root := t.TempDir()
			h.expect("init a rc=1", "init a %s", h.props("a.props", fileProps(t, root, map[string]string{"records_max_line_size": lineends.MaxLineSize})))
			c := new(fb.Chunk)
			for _, l := range lineends.Lines() {
				if crlf {
					l += "\r"
				}
				c.V1(et, fb.Map{{Key: "log", Value: l}})
			}
			h.expect("flush a rc=1", "flush a usage.eol %s", h.file("eol.chunk", c.Bytes()))
			h.expect("exit a rc=1", "exit a")
			h.expect("unregister", "unregister")
			lineends.Check(t, fb.ReadDir(t, filepath.Join(root, "ingest")), fb.ReadDir(t, filepath.Join(root, "failed-requests")))
		})
	}
}
