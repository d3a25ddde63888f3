package fluentbit

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zeebo/xxh3"

	"github.com/metership/metership/buffer"
	fb "github.com/metership/metership/fluentbit/fbtest"
	"github.com/metership/metership/record"
)

func TestFlushRecordsAndDeadLetters(t *testing.T) {
	out := testOutput{Root: t.TempDir()}
	x := startInstance(t, baseProps(t, out, nil))
	malformed := []byte{0x92, 0xd7, 0x00, 0x01, 0x02}
	et2 := fb.EventTime{Sec: sec + 1}
	chunk := new(fb.Chunk).
		GroupStart(rec("schema", "otlp"), rec("resource", "r")).
		V2(et, rec("stream", "stdout"), fb.MeterRecord("c1", "api-calls", 5, 0, rec("region", "us-east-1"))).
		V1(et2, fb.MeterRecord("c2", "api-calls", 1.5, 1654560001000, nil)).
		V1(et, rec("customerId", "c3", "meterApiName", "api-calls", "meterValue", 2, "uniqueId", "u-3")).
		V1(et, rec("log", `{"customerId":"c4","meterApiName":"api-calls","meterValue":7}`)).
		V1(et, rec("log", "GET /index.html 200")).
		V1(et, rec("meterApiName", "api-calls", "meterValue", 1)).
		GroupEnd().
		Raw(malformed).
		Bytes()

	if rc := x.Flush(chunk, "usage.api"); rc != FLBOK {
		t.Fatalf("Flush = %d, want FLBOK", rc)
	}
	if rc := x.Exit(); rc != FLBOK {
		t.Fatalf("Exit = %d", rc)
	}

	// Exact bytes: the record as the parser renders it from the JSON the
	// decoder produced, with the Fluent Bit identity tag@nanos + index.
	p, err := record.NewParser(record.Options{})
	if err != nil {
		t.Fatal(err)
	}
	canon := func(line string, idx int64, ts fb.EventTime) string {
		nanos := int64(ts.Sec)*1e9 + int64(ts.Nsec)
		src := record.Origin{ID: fmt.Sprintf("usage.api@%d", nanos), Offset: idx, TimeMillis: nanos / 1e6}
		b, _, err := p.Parse(nil, []byte(line), src)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	want := []string{
		canon(`{"customerId":"c1","meterApiName":"api-calls","meterValue":5,"dimensions":{"region":"us-east-1"}}`, 1, et),
		canon(`{"customerId":"c2","meterApiName":"api-calls","meterValue":1.5,"meterTimeInMillis":1654560001000}`, 2, et2),
		`{"customerId":"c3","meterApiName":"api-calls","meterValue":2,"meterTimeInMillis":1654560000250,"uniqueId":"u-3"}`,
		canon(`{"customerId":"c4","meterApiName":"api-calls","meterValue":7}`, 4, et),
	}
	got := fb.ReadDir(t, filepath.Join(out.Root, "ingest"))
	if strings.Join(got, "\n") != strings.Join(sortedCopy(want), "\n") {
		t.Fatalf("records:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(sortedCopy(want), "\n"))
	}
	if !strings.Contains(want[0], `"meterTimeInMillis":1654560000250,`) {
		t.Fatalf("event time not used as the record time: %s", want[0])
	}

	dls := fb.ParseDeadLetters(t, fb.ReadDir(t, filepath.Join(out.Root, "failed-requests")))
	if len(dls) != 3 {
		t.Fatalf("dead letters %+v, want 3", dls)
	}
	checks := []struct {
		offset int64
		line   string
		reason string
	}{
		{5, "GET /index.html 200", "not a JSON object"},
		{6, `{"meterApiName":"api-calls","meterValue":1}`, "customerId"},
		{8, base64.StdEncoding.EncodeToString(malformed), "malformed msgpack"},
	}
	for i, c := range checks {
		d := dls[i]
		if d.Source != "usage.api" || d.Offset != c.offset || d.Line != c.line || !strings.Contains(d.Reason, c.reason) {
			t.Errorf("dead letter %d = %+v, want offset %d line %q reason ~%q", i, d, c.offset, c.line, c.reason)
		}
	}
	st := x.Pipeline().Stats()
	if st.RecordsShipped.Load() != 4 || st.DeadLetters.Load() != 3 {
		t.Errorf("stats: shipped %d, dead letters %d", st.RecordsShipped.Load(), st.DeadLetters.Load())
	}
}

func sortedCopy(s []string) []string {
	c := append([]string(nil), s...)
	for i := 1; i < len(c); i++ {
		for j := i; j > 0 && c[j] < c[j-1]; j-- {
			c[j], c[j-1] = c[j-1], c[j]
		}
	}
	return c
}

// TestSameChunkSameIDs: the same chunk under the same tag yields the same
// records, uniqueIds included, in two independent instances; that is what
// makes a chunk re-sent after a crash deduplicable downstream.
func TestSameChunkSameIDs(t *testing.T) {
	chunk := fb.MeterChunk(0, 50)
	var runs [2][]string
	for i := range runs {
		out := testOutput{Root: t.TempDir()}
		x := startInstance(t, baseProps(t, out, nil))
		if rc := x.Flush(chunk, "usage"); rc != FLBOK {
			t.Fatalf("Flush = %d", rc)
		}
		x.Exit()
		runs[i] = fb.ReadDir(t, out.Root)
	}
	if len(runs[0]) != 50 || strings.Join(runs[0], "\n") != strings.Join(runs[1], "\n") {
		t.Fatalf("runs differ or are incomplete: %d vs %d lines", len(runs[0]), len(runs[1]))
	}
	if other := readAfterFlush(t, chunk, "other-tag"); other[0] == runs[0][0] {
		t.Fatalf("a different tag yields the same uniqueId")
	}
}

func readAfterFlush(t *testing.T, chunk []byte, tag string) []string {
	out := testOutput{Root: t.TempDir()}
	x := startInstance(t, baseProps(t, out, nil))
	if rc := x.Flush(chunk, tag); rc != FLBOK {
		t.Fatalf("Flush = %d", rc)
	}
	x.Exit()
	return fb.ReadDir(t, out.Root)
}

// blockOutput makes the file:// output unwritable (a regular file where its
// directory must go) until the returned function is called.
func blockOutput(t *testing.T, out testOutput) (unblock func()) {
	t.Helper()
	path := filepath.Join(out.Root, "ingest")
	if err := os.WriteFile(path, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}
}

// flushUntilOK re-sends a chunk like Fluent Bit's scheduler until FLBOK.
func flushUntilOK(t *testing.T, x *Instance, chunk []byte, tag string) (retries int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		switch rc := x.Flush(chunk, tag); rc {
		case FLBOK:
			return retries
		case FLBRetry:
			retries++
		default:
			t.Fatalf("Flush = %d", rc)
		}
		if time.Now().After(deadline) {
			t.Fatalf("chunk still not accepted after %d retries", retries)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestFlushRetryWhenBufferFull(t *testing.T) {
	out := testOutput{Root: t.TempDir()}
	unblock := blockOutput(t, out)
	// About 250 bytes a record: the first chunk fills most of the
	// buffer, the second does not fit beside it, and twice the second
	// would still fit in an empty buffer (so a batch kept by mistake
	// across a retry would be committed, and caught, after unblock).
	x := startInstance(t, baseProps(t, out, map[string]string{
		"buffer_segment_size": "64KiB",
		"buffer_max_size":     "256KiB",
	}))
	first, second := fb.MeterChunk(0, 800), fb.MeterChunk(800, 300)
	if rc := x.Flush(first, "usage"); rc != FLBOK {
		t.Fatalf("first Flush = %d, want FLBOK", rc)
	}
	// The second chunk is committed in pieces of a batch each (the
	// pipeline's split rule): those that fit are durable, with the chunk's
	// progress, and a retry adds nothing while nothing more fits.
	var accepted int64
	for i := 0; i < 3; i++ {
		if rc := x.Flush(second, "usage"); rc != FLBRetry {
			t.Fatalf("Flush into a full buffer = %d, want FLBRetry", rc)
		}
		n := x.Pipeline().Stats().RecordsAccepted.Load()
		if i > 0 && n != accepted || n < 800 || n >= 1100 {
			t.Fatalf("%d records accepted after retry %d (%d before), want the same each time, from 800 to 1099", n, i, accepted)
		}
		accepted = n
	}
	unblock()
	flushUntilOK(t, x, second, "usage")
	if rc := x.Exit(); rc != FLBOK {
		t.Fatalf("Exit = %d", rc)
	}
	fb.AssertCustomers(t, fb.ParseRecords(t, fb.ReadDir(t, out.Root)), 0, 1100)
}

// TestFlushLargeChunkInPieces: a chunk larger than the whole buffer is
// committed in pieces; when the buffer fills mid-chunk the flush is
// retried and the pieces already durable are not appended again.
func TestFlushLargeChunkInPieces(t *testing.T) {
	out := testOutput{Root: t.TempDir()}
	unblock := blockOutput(t, out)
	x := startInstance(t, baseProps(t, out, map[string]string{
		"buffer_segment_size": "64KiB",
		"buffer_max_size":     "128KiB",
	}))
	const n = 2000
	chunk := fb.MeterChunk(0, n)
	if rc := x.Flush(chunk, "usage"); rc != FLBRetry {
		t.Fatalf("Flush of a chunk larger than the blocked buffer = %d, want FLBRetry", rc)
	}
	partial := x.Pipeline().Stats().RecordsAccepted.Load()
	if partial == 0 || partial >= n {
		t.Fatalf("%d records durable after the first attempt; want some pieces, not all", partial)
	}
	unblock()
	retries := flushUntilOK(t, x, chunk, "usage")
	t.Logf("chunk of %d records accepted after %d more retries", n, retries)
	x.Exit()
	fb.AssertCustomers(t, fb.ParseRecords(t, fb.ReadDir(t, out.Root)), 0, n)
	if partialProgress(x, nil) > 0 {
		t.Fatalf("partial progress not forgotten after the chunk was accepted")
	}
}

// TestLargeChunkProgressSurvivesRestart: the pieces of a large chunk that
// are durable when the buffer fills are not appended again when Fluent
// Bit restarts before re-sending the chunk: the progress is a buffer
// checkpoint written with each piece, and dropped with the last one.
func TestLargeChunkProgressSurvivesRestart(t *testing.T) {
	out := testOutput{Root: t.TempDir()}
	unblock := blockOutput(t, out)
	props := baseProps(t, out, map[string]string{
		"buffer_segment_size":    "64KiB",
		"buffer_max_size":        "128KiB",
		"agent_shutdown_timeout": "200ms",
	})
	const n = 2000
	chunk := fb.MeterChunk(0, n)
	x := startInstance(t, props)
	if rc := x.Flush(chunk, "usage"); rc != FLBRetry {
		t.Fatalf("Flush of a chunk larger than the blocked buffer = %d, want FLBRetry", rc)
	}
	durable := x.Pipeline().Stats().RecordsAccepted.Load()
	if durable == 0 || durable >= n {
		t.Fatalf("%d records durable after the first attempt; want some pieces, not all", durable)
	}
	x.Exit() // Fluent Bit stops; the buffer keeps the pieces

	x = startInstance(t, props)
	if partialProgress(x, nil) == 0 {
		t.Fatal("the chunk's progress was not restored from the buffer")
	}
	unblock()
	flushUntilOK(t, x, chunk, "usage")
	if partialProgress(x, nil) > 0 {
		t.Fatal("partial progress not forgotten after the chunk was accepted")
	}
	for _, cp := range x.Pipeline().Buffer().Checkpoints() {
		if strings.HasPrefix(cp.Key, partialSourcePrefix) {
			t.Fatalf("checkpoint %s left in the buffer after the chunk was accepted", cp.Key)
		}
	}
	if rc := x.Exit(); rc != FLBOK {
		t.Fatalf("Exit = %d", rc)
	}
	fb.AssertCustomers(t, fb.ParseRecords(t, fb.ReadDir(t, out.Root)), 0, n)
}

// The buffer keeps no more chunk checkpoints than memory does: a chunk
// forgotten in memory loses its checkpoint with the next write, and a
// restart restores what memory held.
func TestForgottenChunksLeaveTheBuffer(t *testing.T) {
	out := testOutput{Root: t.TempDir()}
	props := baseProps(t, out, nil)
	x := startInstance(t, props)
	keys := make([]xxh3.Uint128, maxPartialChunks+1)
	for i := range keys {
		keys[i] = xxh3.Uint128{Hi: uint64(i + 1), Lo: 42}
		f, err := x.getFlusher()
		if err != nil {
			t.Fatal(err)
		}
		markProgress(f.in, keys[i], 5)
		if err := f.in.Commit(); err != nil {
			t.Fatal(err)
		}
		x.putFlusher(f)
		x.chunks.committed(keys[i], nil, 5)
	}
	// More whole chunks than are remembered: the first is forgotten when
	// the next-to-last commits, and its checkpoint dropped by the last.
	for i := range maxDoneChunks + 2 {
		if rc := x.Flush(fb.MeterChunk(i, 1), "usage"); rc != FLBOK {
			t.Fatalf("Flush = %d", rc)
		}
	}
	count := func(x *Instance, prefix string) map[string]bool {
		m := map[string]bool{}
		for _, cp := range x.Pipeline().Buffer().Checkpoints() {
			if strings.HasPrefix(cp.Key, prefix) {
				m[cp.Key] = true
			}
		}
		return m
	}
	partial := count(x, partialSourcePrefix)
	if len(partial) != maxPartialChunks || partial[chunkSource(partialSourcePrefix, keys[0])] {
		t.Fatalf("%d partial checkpoints (the forgotten one: %v), want the %d newest", len(partial), partial[chunkSource(partialSourcePrefix, keys[0])], maxPartialChunks)
	}
	first := chunkKey("usage", fb.MeterChunk(0, 1))
	done := count(x, doneSourcePrefix)
	// The last batch cannot drop the chunk its own commit made memory
	// forget: one done checkpoint more than memory holds.
	if len(done) != maxDoneChunks+1 || done[chunkSource(doneSourcePrefix, first)] {
		t.Fatalf("%d done checkpoints (the first chunk's: %v), want %d", len(done), done[chunkSource(doneSourcePrefix, first)], maxDoneChunks+1)
	}
	x.Exit()
	x = startInstance(t, props)
	for i, k := range keys {
		if want := i > 0; (partialProgress(x, &k) == 5) != want {
			t.Fatalf("partial chunk %d restored = %v, want %v", i, !want, want)
		}
	}
	second := chunkKey("usage", fb.MeterChunk(1, 1))
	if x.chunks.isDone(first) || x.chunks.isDone(second) || !x.chunks.isDone(chunkKey("usage", fb.MeterChunk(maxDoneChunks+1, 1))) {
		t.Fatal("done chunks not restored newest first, up to the limit")
	}
}

// TestChunkSentAgainAfterRestart: Fluent Bit deletes a chunk only after
// FLB_OK; if it dies in between it sends the chunk again after
// restarting. The chunk is then answered FLB_OK and not appended twice
// (nor counted twice by metering); another chunk still is.
func TestChunkSentAgainAfterRestart(t *testing.T) {
	out := testOutput{Root: t.TempDir()}
	props := baseProps(t, out, nil)
	x := startInstance(t, props)
	chunk := fb.MeterChunk(0, 100)
	if rc := x.Flush(chunk, "usage"); rc != FLBOK {
		t.Fatalf("Flush = %d", rc)
	}
	x.Exit()
	x = startInstance(t, props)
	if rc := x.Flush(chunk, "usage"); rc != FLBOK {
		t.Fatalf("Flush of the chunk sent again = %d, want FLBOK", rc)
	}
	if n := x.Pipeline().Stats().RecordsAccepted.Load(); n != 0 {
		t.Fatalf("the chunk sent again added %d records", n)
	}
	if rc := x.Flush(chunk, "other-tag"); rc != FLBOK {
		t.Fatalf("Flush = %d", rc)
	}
	if n := x.Pipeline().Stats().RecordsAccepted.Load(); n != 100 {
		t.Fatalf("the same events under another tag added %d records, want 100", n)
	}
	if rc := x.Exit(); rc != FLBOK {
		t.Fatalf("Exit = %d", rc)
	}
	recs := fb.ParseRecords(t, fb.ReadDir(t, out.Root))
	if len(recs) != 200 {
		t.Fatalf("%d records shipped, want 100 per tag", len(recs))
	}
}

func TestConcurrentFlushes(t *testing.T) {
	out := testOutput{Root: t.TempDir()}
	x := startInstance(t, baseProps(t, out, nil))
	const workers, chunks, per = 4, 10, 200
	var wg sync.WaitGroup
	errs := make(chan error, workers*chunks)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := 0; c < chunks; c++ {
				first := (w*chunks + c) * per
				if rc := x.Flush(fb.MeterChunk(first, per), fmt.Sprintf("usage.w%d", w)); rc != FLBOK {
					errs <- fmt.Errorf("worker %d chunk %d: Flush = %d", w, c, rc)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	x.Exit()
	fb.AssertCustomers(t, fb.ParseRecords(t, fb.ReadDir(t, out.Root)), 0, workers*chunks*per)
}

func TestFlushAfterExitRetries(t *testing.T) {
	out := testOutput{Root: t.TempDir()}
	x := startInstance(t, baseProps(t, out, nil))
	if rc := x.Exit(); rc != FLBOK {
		t.Fatalf("Exit = %d", rc)
	}
	if rc := x.Exit(); rc != FLBOK {
		t.Fatalf("second Exit = %d", rc)
	}
	if rc := x.Flush(fb.MeterChunk(0, 1), "usage"); rc != FLBRetry {
		t.Fatalf("Flush after Exit = %d, want FLBRetry (the chunk stays in Fluent Bit)", rc)
	}
}

func TestExitLeavesUnshippedDataOnDisk(t *testing.T) {
	out := testOutput{Root: t.TempDir()}
	unblock := blockOutput(t, out)
	m := baseProps(t, out, map[string]string{"agent_shutdown_timeout": "300ms"})
	x := startInstance(t, m)
	if rc := x.Flush(fb.MeterChunk(0, 100), "usage"); rc != FLBOK {
		t.Fatalf("Flush = %d", rc)
	}
	if rc := x.Exit(); rc != FLBOK {
		t.Fatalf("Exit = %d", rc)
	}
	unblock()
	// The next start ships what the first could not.
	m["agent_shutdown_timeout"] = "20s"
	y := startInstance(t, m)
	y.Exit()
	fb.AssertCustomers(t, fb.ParseRecords(t, fb.ReadDir(t, out.Root)), 0, 100)
}

func TestTwoInstancesOnOneBufferDir(t *testing.T) {
	out := testOutput{Root: t.TempDir()}
	m := baseProps(t, out, nil)
	startInstance(t, m)
	_, err := NewInstance(props(m), testLogger(t))
	if !errors.Is(err, buffer.ErrLocked) || !strings.Contains(err.Error(), "buffer_dir") {
		t.Fatalf("second instance on one buffer_dir: %v, want ErrLocked naming buffer_dir", err)
	}
	other := baseProps(t, testOutput{Root: t.TempDir()}, nil)
	startInstance(t, other)
}

func TestPluginRegistry(t *testing.T) {
	p := NewPlugin(testLogger(t))
	a, err := p.Init(props(baseProps(t, testOutput{Root: t.TempDir()}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if rc := p.FlushSole(fb.MeterChunk(0, 1), "usage"); rc != FLBOK {
		t.Fatalf("FlushSole with one instance = %d", rc)
	}
	b, err := p.Init(props(baseProps(t, testOutput{Root: t.TempDir()}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if a == 0 || b == 0 || a == b {
		t.Fatalf("ids %d, %d", a, b)
	}
	if _, err := p.Init(props(map[string]string{"output_url": "ftp://x"})); !errors.Is(err, ErrConfig) {
		t.Fatalf("Init with a bad property = %v, want ErrConfig", err)
	}
	// Which of two outputs a context-less chunk is for cannot be told:
	// Fluent Bit keeps it.
	if rc := p.FlushSole(fb.MeterChunk(0, 1), "usage"); rc != FLBRetry {
		t.Fatalf("FlushSole with two instances = %d, want FLBRetry", rc)
	}
	if rc := p.Flush(b, fb.MeterChunk(1, 1), "usage"); rc != FLBOK {
		t.Fatalf("Flush = %d", rc)
	}
	if rc := p.Flush(b+100, fb.MeterChunk(0, 1), "usage"); rc != FLBError {
		t.Fatalf("Flush to an unknown instance = %d, want FLBError", rc)
	}
	if _, err := p.Instance(b + 100); !errors.Is(err, ErrUnknownInstance) {
		t.Fatalf("Instance(unknown) = %v", err)
	}
	if rc := p.Exit(a); rc != FLBOK {
		t.Fatalf("Exit = %d", rc)
	}
	if rc := p.Exit(a); rc != FLBError {
		t.Fatalf("second Exit = %d, want FLBError", rc)
	}
	// A late flush is kept by Fluent Bit, not dropped.
	if rc := p.Flush(a, fb.MeterChunk(0, 1), "usage"); rc != FLBRetry {
		t.Fatalf("Flush after Exit = %d, want FLBRetry", rc)
	}
	if p.Len() != 1 {
		t.Fatalf("Len = %d", p.Len())
	}
	if rc := p.ExitAll(); rc != FLBOK || p.Len() != 0 {
		t.Fatalf("ExitAll = %d, Len %d", rc, p.Len())
	}
	if rc := p.FlushSole(fb.MeterChunk(0, 1), "usage"); rc != FLBRetry {
		t.Fatalf("FlushSole after every instance exited = %d, want FLBRetry", rc)
	}
	if rc := p.Flush(b, fb.MeterChunk(0, 1), "usage"); rc != FLBRetry {
		t.Fatalf("Flush after ExitAll = %d, want FLBRetry", rc)
	}
}

// TestFlushAllocations: a steady stream of chunks allocates per chunk, not
// per record.
func TestFlushAllocations(t *testing.T) {
	out := testOutput{Root: t.TempDir()}
	x := startInstance(t, baseProps(t, out, map[string]string{
		"buffer_sync":           "never",
		"buffer_segment_size":   "512MiB",
		"buffer_max_size":       "1GiB",
		"buffer_flush_interval": "1h",
	}))
	const n = 1000
	chunk := fb.MeterChunk(0, n)
	x.Flush(chunk, "usage")
	allocs := testing.AllocsPerRun(20, func() {
		if rc := x.Flush(chunk, "usage"); rc != FLBOK {
			t.Fatalf("Flush = %d", rc)
		}
	})
	t.Logf("%.1f allocations per %d-record chunk", allocs, n)
	if allocs > 5 {
		t.Fatalf("%.1f allocations per %d-record chunk: the record path allocates", allocs, n)
	}
}

// TestKeyFormatTag: $TAG in output_key_format renders the Fluent Bit tag of
// each flushed chunk, so chunks of two tags land under two prefixes.
func TestKeyFormatTag(t *testing.T) {
	out := testOutput{Root: t.TempDir()}
	x := startInstance(t, baseProps(t, out, map[string]string{"output_key_format": "$TAG/%Y/$UUID.gz"}))
	for _, tag := range []string{"usage.api", "usage.batch"} {
		chunk := new(fb.Chunk).V1(et, fb.MeterRecord("c-"+tag, "api-calls", 1, 1654560000000, nil)).Bytes()
		if rc := x.Flush(chunk, tag); rc != FLBOK {
			t.Fatalf("Flush(%s) = %d", tag, rc)
		}
	}
	if rc := x.Exit(); rc != FLBOK {
		t.Fatalf("Exit = %d", rc)
	}
	for _, tag := range []string{"usage.api", "usage.batch"} {
		got := fb.ReadDir(t, filepath.Join(out.Root, "ingest", "amberdata", tag, "2022"))
		if len(got) != 1 || !strings.Contains(got[0], `"customerId":"c-`+tag+`"`) {
			t.Fatalf("objects under %s/2022: %v", tag, got)
		}
	}
}

// partialProgress is the remembered progress of the chunk key, or with
// key nil the number of partly committed chunks remembered.
func partialProgress(x *Instance, key *xxh3.Uint128) int {
	x.chunks.mu.Lock()
	defer x.chunks.mu.Unlock()
	if key == nil {
		return len(x.chunks.partial)
	}
	return x.chunks.partial[*key]
}
