package main

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/metership/metership/internal/testutil/faultproxy"
	"github.com/metership/metership/internal/testutil/s3server"
	"github.com/metership/metership/metering/emulator"
)

// assertAllOnce checks that the bucket holds exactly the generated records.
func assertAllOnce(t *testing.T, srv *s3server.Server, want map[string]int) {
	t.Helper()
	byID := checkRecordObjects(t, readBucket(t, srv))
	seen := map[string]int{}
	for _, r := range byID {
		seen[signature(r)]++
	}
	total := 0
	for sig, n := range want {
		total += n
		if seen[sig] != n {
			t.Fatalf("record %s arrived %d times, want %d", sig, seen[sig], n)
		}
	}
	if len(byID) != total {
		t.Fatalf("bucket holds %d records, want %d", len(byID), total)
	}
}

func TestShipWaitsForS3DownAtStart(t *testing.T) {
	srv := s3server.Start(t)
	dir := t.TempDir()
	input, want := genRecords(t, dir, 2000, time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC), 36*time.Hour)
	cfg := s3Config(t, srv, "", filepath.Join(dir, "buf"), "")
	srv.Stop()

	cmd, out, done := startAgent(t, srv, nil, "ship", "-c", cfg, input)
	select {
	case err := <-done:
		t.Fatalf("ship finished while S3 was down (%v):\n%s", err, out.String())
	case <-time.After(1500 * time.Millisecond):
	}
	srv.Restart()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ship: %v\n%s", err, out.String())
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("ship did not finish after S3 came back:\n%s", out.String())
	}
	assertAllOnce(t, srv, want)
}

func TestShipThroughServerErrorsAndLatency(t *testing.T) {
	srv := s3server.Start(t)
	proxy := faultproxy.Start(t, srv.Endpoint())
	dir := t.TempDir()
	input, want := genRecords(t, dir, 3000, time.Date(2023, 3, 1, 0, 0, 0, 0, time.UTC), 48*time.Hour)
	cfg := s3Config(t, srv, proxy.URL(), filepath.Join(dir, "buf"), "")
	proxy.Fail(6, 500)
	proxy.SetLatency(50 * time.Millisecond)
	stdout, stderr, code := runAgent(t, srv, nil, "ship", "-c", cfg, input)
	if code != 0 {
		t.Fatalf("ship exit %d\n%s\n%s", code, stdout, stderr)
	}
	if n := proxy.Counts().Injected; n != 6 {
		t.Fatalf("the proxy injected %d 500s, want 6; the test did not exercise retries", n)
	}
	assertAllOnce(t, srv, want)
}

// TestShipSurvivesKill9 kills the real ship process with SIGKILL at random
// moments (mid-append, mid-upload), restarts it each time, and finally lets
// it finish: every record arrives exactly once.
func TestShipSurvivesKill9(t *testing.T) {
	srv := s3server.Start(t)
	proxy := faultproxy.Start(t, srv.Endpoint())
	proxy.SetLatency(20 * time.Millisecond) // keep uploads in flight when the kill lands
	dir := t.TempDir()
	input, want := genRecords(t, dir, 60000, time.Date(2024, 2, 28, 12, 0, 0, 0, time.UTC), 72*time.Hour)
	cfg := s3Config(t, srv, proxy.URL(), filepath.Join(dir, "buf"), "")
	killShips(t, srv, cfg, input, rand.New(rand.NewPCG(1, 2)), 50*time.Millisecond)
	stdout, stderr, code := runAgent(t, srv, nil, "ship", "-c", cfg, input)
	if code != 0 {
		t.Fatalf("final ship exit %d\n%s\n%s", code, stdout, stderr)
	}
	assertAllOnce(t, srv, want)
}

// killShips starts `ship` six times and SIGKILLs each after at least
// minWait (plus up to 400 ms drawn from rng); it returns how many died
// before they finished.
func killShips(t *testing.T, srv *s3server.Server, cfg, input string, rng *rand.Rand, minWait time.Duration) int {
	t.Helper()
	killed := 0
	for range 6 {
		cmd := agentCmd(srv, "ship", "-c", cfg, input)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(minWait + time.Duration(rng.IntN(400))*time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		if err := cmd.Wait(); err != nil {
			killed++
		}
	}
	return killed
}

// TestMeteredShipSurvivesKill9 is TestShipSurvivesKill9 with metering on:
// segments' counts are written to the ledger in groups and the segments
// acknowledged after, so a kill lands between counts merged in memory,
// ledger writes, uploads, Acks and MeterUsage calls. After the last ship
// the emulator holds exactly what the records add up to: no hour counted
// twice or skipped, no conflicting call.
func TestMeteredShipSurvivesKill9(t *testing.T) {
	srv := s3server.Start(t)
	proxy := faultproxy.Start(t, srv.Endpoint())
	proxy.SetLatency(20 * time.Millisecond) // keep uploads in flight when the kill lands
	emu := emulator.New(emulator.DefaultConfig())
	hs := httptest.NewServer(emu)
	defer hs.Close()
	fx := newUsageFixture(hourSafeNow(), 300*time.Millisecond) // ~48,000 records
	dir := t.TempDir()
	input := filepath.Join(dir, "usage.ndjson")
	if err := os.WriteFile(input, []byte(fx.lines), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := s3Config(t, srv, proxy.URL(), filepath.Join(dir, "buf"), meteringYAML(hs.URL))
	if killShips(t, srv, cfg, input, rand.New(rand.NewPCG(3, 4)), 100*time.Millisecond) == 0 {
		t.Fatal("no ship was killed before it finished")
	}
	stdout, stderr, code := runAgent(t, srv, nil, "ship", "-c", cfg, input)
	if code != 0 {
		t.Fatalf("final ship exit %d\n%s\n%s", code, stdout, stderr)
	}
	fx.check(t, emu.State(), false)
	if byID := checkRecordObjects(t, readBucket(t, srv)); len(byID) != fx.records {
		t.Fatalf("%d records in S3, want %d", len(byID), fx.records)
	}
}

// startAgent starts the agent with stdin and returns it, its combined
// output (read it once done has answered) and its exit.
func startAgent(t *testing.T, srv *s3server.Server, stdin io.Reader, args ...string) (*exec.Cmd, *bytes.Buffer, <-chan error) {
	t.Helper()
	cmd := agentCmd(srv, args...)
	cmd.Stdin = stdin
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return cmd, out, done
}

// endlessLines is stdin that never ends: meter records as fast as they
// are read.
type endlessLines struct{ n int }

func (e *endlessLines) Read(p []byte) (int, error) {
	w := 0
	for w+256 <= len(p) {
		e.n++
		w += copy(p[w:], fmt.Sprintf(`{"customerId":"c","meterApiName":"api","meterValue":1,"meterTimeInMillis":1700000000000,"uniqueId":"u%d"}`+"\n", e.n))
	}
	return w, nil
}

// With the output down and the buffer full, `ship --timeout` gives up
// when its time is over, also on a stdin that never ends: once a commit
// has failed, the rest of the input is not read.
func TestShipTimeoutStopsReading(t *testing.T) {
	srv := s3server.Start(t)
	dir := t.TempDir()
	// Nothing listens on port 1: every upload fails and the buffer fills.
	cfg := s3Config(t, srv, "http://127.0.0.1:1", filepath.Join(dir, "buf"), "")
	cmd, out, done := startAgent(t, srv, &endlessLines{}, "ship", "-c", cfg, "--timeout", "2s", "-")
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("ship succeeded with the output down:\n%s", out.String())
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("ship --timeout 2s still reading after 60 s:\n%.2000s", out.String())
	}
}
