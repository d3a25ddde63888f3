package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/metership/metership/internal/testutil/childproc"
)

// The plugin .so and the C harness, built once by TestMain.
var artifacts struct {
	so, harness string
	err         error
}

// TestMain builds the plugin exactly as `make plugin` does
// (-buildmode=c-shared) and the C harness that loads it like Fluent Bit.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "metership-plugin-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	artifacts.so, artifacts.harness, artifacts.err = build(dir)
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func build(dir string) (so, harness string, err error) {
	so = filepath.Join(dir, "out_metership.so")
	cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", so, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("go build -buildmode=c-shared: %w\n%s", err, out)
	}
	harness = filepath.Join(dir, "harness")
	cmd = exec.Command("gcc", "-O2", "-Wall", "-Werror", "-pthread", "-o", harness, filepath.Join("testdata", "harness.c"), "-ldl")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("gcc harness.c: %w\n%s", err, out)
	}
	return so, harness, nil
}

// harness is a running C harness process with the plugin loaded.
type harness struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *childproc.Output
	dir    string
}

// startHarness runs the harness with extra environment variables (the
// plugin reads AWS credentials from its process environment).
func startHarness(t testing.TB, env ...string) *harness {
	t.Helper()
	if artifacts.err != nil {
		t.Fatal(artifacts.err)
	}
	h := &harness{t: t, stderr: &childproc.Output{}, lines: make(chan string, 16), dir: t.TempDir()}
	h.cmd = exec.Command(artifacts.harness, artifacts.so)
	h.cmd.Env = append(os.Environ(), env...)
	h.cmd.Stderr = h.stderr
	var err error
	if h.stdin, err = h.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(h.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
	}()
	t.Cleanup(h.stop)
	if got := h.read(); got != "ready" {
		t.Fatalf("harness: %q\nstderr:\n%s", got, h.stderr.String())
	}
	return h
}

// read returns the next line the harness prints.
func (h *harness) read() string {
	h.t.Helper()
	select {
	case l, ok := <-h.lines:
		if !ok {
			h.t.Fatalf("harness exited: %v\nstderr:\n%s", h.cmd.Wait(), h.stderr.String())
		}
		return l
	case <-time.After(2 * time.Minute):
		h.t.Fatalf("harness did not answer\nstderr:\n%s", h.stderr.String())
	}
	return ""
}

// do sends one command and returns the answer, failing on "error ...".
func (h *harness) do(format string, args ...any) string {
	h.t.Helper()
	cmd := fmt.Sprintf(format, args...)
	if _, err := io.WriteString(h.stdin, cmd+"\n"); err != nil {
		h.t.Fatalf("harness %q: %v\nstderr:\n%s", cmd, err, h.stderr.String())
	}
	got := h.read()
	if strings.HasPrefix(got, "error") {
		h.t.Fatalf("harness %q: %s\nstderr:\n%s", cmd, got, h.stderr.String())
	}
	return got
}

// expect sends a command and fails unless the answer is want.
func (h *harness) expect(want, format string, args ...any) {
	h.t.Helper()
	if got := h.do(format, args...); got != want {
		h.t.Fatalf("%s: got %q, want %q\nstderr:\n%s", fmt.Sprintf(format, args...), got, want, h.stderr.String())
	}
}

func (h *harness) stop() {
	io.WriteString(h.stdin, "quit\n")
	h.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- h.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		h.cmd.Process.Kill()
		<-done
	}
	for range h.lines {
	}
}

// waitStderr waits until the harness's stderr (where the plugin logs)
// contains s; the copy from the pipe may lag the answer on stdout.
func (h *harness) waitStderr(s string) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(h.stderr.String(), s) {
		if time.Now().After(deadline) {
			h.t.Fatalf("stderr has no %q:\n%s", s, h.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// file writes data to a new file in the harness's temp dir.
func (h *harness) file(name string, data []byte) string {
	h.t.Helper()
	path := filepath.Join(h.dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		h.t.Fatal(err)
	}
	return path
}

// props writes a property file ("name value" lines).
func (h *harness) props(name string, m map[string]string) string {
	var b strings.Builder
	for k, v := range m {
		fmt.Fprintf(&b, "%s %s\n", k, v)
	}
	return h.file(name, []byte(b.String()))
}

// fileProps are the properties of an instance on a file:// output under
// root (records in root/ingest/amberdata, dead letters in
// root/failed-requests).
func fileProps(t testing.TB, root string, extra map[string]string) map[string]string {
	m := map[string]string{
		"output_url":             "file://" + filepath.Join(root, "ingest", "amberdata"),
		"buffer_dir":             filepath.Join(t.TempDir(), "buffer"),
		"buffer_flush_interval":  "100ms",
		"agent_shutdown_timeout": "20s",
		"log_level":              "warn",
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}
