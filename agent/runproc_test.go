package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/metership/metership/internal/testutil/childproc"
	"github.com/metership/metership/internal/testutil/s3server"
)

// runOptions shape the config of a `metership run` test.
type runOptions struct {
	// Endpoint overrides the S3 endpoint (a fault proxy); default the server.
	Endpoint  string
	BufferDir string
	// MaxSize and SegmentSize default to 64MiB and 64KiB.
	MaxSize, SegmentSize string
	// Listen is server.listen; default a free loopback port.
	Listen       string
	UnreadyAfter string
	// FlushInterval is buffer.flush_interval; default 200ms.
	FlushInterval string
	// Sources is the YAML list under sources:, indented by two spaces.
	Sources string
	// Extra is appended as is (other top-level sections).
	Extra string
	// ShutdownTimeout is agent.shutdown_timeout; default 60s.
	ShutdownTimeout string
}

// runConfig writes the config of a `metership run` test and returns its
// path and the HTTP address the agent will serve.
func runConfig(t testing.TB, srv *s3server.Server, o runOptions) (path, listen string) {
	t.Helper()
	if o.Endpoint == "" {
		o.Endpoint = srv.Endpoint()
	}
	if o.MaxSize == "" {
		o.MaxSize = "64MiB"
	}
	if o.SegmentSize == "" {
		o.SegmentSize = "64KiB"
	}
	if o.Listen == "" {
		o.Listen = freeListenAddr(t)
	}
	if o.UnreadyAfter == "" {
		o.UnreadyAfter = "5m"
	}
	if o.FlushInterval == "" {
		o.FlushInterval = "200ms"
	}
	if o.ShutdownTimeout == "" {
		o.ShutdownTimeout = "60s"
	}
	y := fmt.Sprintf(`agent:
  id: test-agent
  shutdown_timeout: %s
sources:
%s
buffer:
  dir: %s
  segment_size: %s
  max_size: %s
  flush_interval: %s
output:
  url: s3://%s/ingest/amberdata
  endpoint: %s
  force_path_style: true
  region: us-east-1
server:
  listen: %q
  unready_after: %s
log:
  level: info
%s`, o.ShutdownTimeout, o.Sources, o.BufferDir, o.SegmentSize, o.MaxSize, o.FlushInterval, srv.Bucket(), o.Endpoint, o.Listen, o.UnreadyAfter, o.Extra)
	path = filepath.Join(t.TempDir(), "metership.yaml")
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, o.Listen
}

// tailSource renders one tail source of the given globs with short
// intervals, so rotations are noticed and left quickly.
func tailSource(paths ...string) string {
	quoted := make([]string, len(paths))
	for i, p := range paths {
		quoted[i] = strconv.Quote(p)
	}
	return fmt.Sprintf("  - type: tail\n    paths: [%s]\n    refresh_interval: 100ms\n    rotate_wait: 300ms\n", strings.Join(quoted, ", "))
}

// freeListenAddr returns a loopback address nothing listens on now.
func freeListenAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// runProc is a `metership run` child process.
type runProc struct {
	t      testing.TB
	cmd    *exec.Cmd
	out    *childproc.Output
	base   string // http://listen
	exited chan struct{}
	hc     *http.Client
}

// startRun starts `metership run -c cfg` and waits until /healthz answers.
// The process is killed at cleanup if the test left it running.
func startRun(t testing.TB, srv *s3server.Server, cfg, listen string) *runProc {
	t.Helper()
	return startProc(t, agentCmd(srv, "run", "-c", cfg), listen)
}

// startProc starts cmd, a `metership run`, as startRun does.
func startProc(t testing.TB, cmd *exec.Cmd, listen string) *runProc {
	t.Helper()
	p := &runProc{
		t:      t,
		cmd:    cmd,
		out:    &childproc.Output{},
		base:   "http://" + listen,
		exited: make(chan struct{}),
		hc:     &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _, err := p.get("/healthz"); err == nil && code == http.StatusOK {
			return p
		}
		select {
		case <-p.exited:
			t.Fatalf("metership run exited at start (%v):\n%s", p.cmd.ProcessState, p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("metership run did not serve /healthz on %s:\n%s", p.base, p.out.String())
		}
	}
}

func (p *runProc) get(path string) (int, string, error) {
	resp, err := p.hc.Get(p.base + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// status returns the HTTP status of path, failing the test if the agent
// does not answer.
func (p *runProc) status(path string) int {
	p.t.Helper()
	code, _, err := p.get(path)
	if err != nil {
		p.t.Fatalf("GET %s: %v\n%s", path, err, p.out.String())
	}
	return code
}

// stop sends SIGTERM and returns the exit code once the agent has drained.
func (p *runProc) stop() int {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(90 * time.Second):
		_ = p.cmd.Process.Kill()
		p.t.Fatalf("metership run did not exit after SIGTERM:\n%s", p.out.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *runProc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// sample is one series of a /metrics scrape.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// metrics scrapes /metrics (Prometheus text format).
func (p *runProc) metrics() []sample {
	p.t.Helper()
	code, body, err := p.get("/metrics")
	if err != nil || code != http.StatusOK {
		p.t.Fatalf("GET /metrics: %d %v\n%s", code, err, p.out.String())
	}
	var out []sample
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			p.t.Fatalf("metrics line %q: %v", line, err)
		}
		s := sample{name: line[:sp], labels: map[string]string{}, value: v}
		if i := strings.IndexByte(s.name, '{'); i >= 0 {
			for _, kv := range strings.Split(strings.TrimSuffix(s.name[i+1:], "}"), ",") {
				k, val, _ := strings.Cut(kv, "=")
				s.labels[k], _ = strconv.Unquote(val)
			}
			s.name = s.name[:i]
		}
		out = append(out, s)
	}
	return out
}

// metric returns the sum of the series of name whose labels include every
// pair of match (k1, v1, k2, v2, ...), and whether any series matched.
func (p *runProc) metric(name string, match ...string) (float64, bool) {
	p.t.Helper()
	return sumSamples(p.metrics(), name, match...)
}

func sumSamples(samples []sample, name string, match ...string) (float64, bool) {
	var sum float64
	found := false
next:
	for _, s := range samples {
		if s.name != name {
			continue
		}
		for i := 0; i+1 < len(match); i += 2 {
			if s.labels[match[i]] != match[i+1] {
				continue next
			}
		}
		sum += s.value
		found = true
	}
	return sum, found
}

// counter is metric for a series that must exist.
func (p *runProc) counter(name string, match ...string) float64 {
	p.t.Helper()
	v, ok := p.metric(name, match...)
	if !ok {
		p.t.Fatalf("no metric %s%v", name, match)
	}
	return v
}

// waitUntil polls cond until it holds, failing the test after timeout.
func waitUntil(t testing.TB, timeout time.Duration, what func() string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// inode returns the inode number of an open file.
func inode(t testing.TB, f *os.File) uint64 {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// dirSize is the total size of the regular files under dir.
func dirSize(t testing.TB, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil // removed by an Ack while walking
			}
			return err
		}
		if fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
