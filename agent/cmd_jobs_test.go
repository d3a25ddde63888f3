package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestJobsServe runs `metership jobs serve` as a process: the API answers
// 401 without the key and creates and runs a job with it, and SIGTERM
// stops it with exit 0. A config without api_keys is refused (exit 2).
func TestJobsServe(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	const key = "agent-test-key-0123456789"
	cfgPath := filepath.Join(dir, "m.yaml")
	writeCfg := func(keys string) {
		cfg := fmt.Sprintf("output:\n  url: file://%s/out/ingest/amberdata\njobs:\n  listen: %q\n  api_keys: %s\n  store: file://%s/jobs\n  tick: 100ms\nlog:\n  level: warn\n", dir, addr, keys, dir)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeCfg("[]")
	var stderr bytes.Buffer
	cmd := exec.Command(binPath, "jobs", "serve", "-c", cfgPath)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil || cmd.ProcessState.ExitCode() != exitConfig || !strings.Contains(stderr.String(), "jobs.api_keys") {
		t.Fatalf("no keys: %v %s", err, stderr.String())
	}

	writeCfg(fmt.Sprintf("[%q]", key))
	stderr.Reset()
	cmd = exec.Command(binPath, "jobs", "serve", "-c", cfgPath)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	base := "http://" + addr
	var resp *http.Response
	for i := 0; ; i++ {
		resp, err = http.Get(base + "/jobs")
		if err == nil {
			break
		}
		if i > 300 {
			t.Fatalf("jobs serve did not listen: %v\n%s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without key: %d", resp.StatusCode)
	}
	body := fmt.Sprintf(`{"jobName":"Agent test","s3Url":"file://%s/exports","format":"ndjson","aggregationBucket":"day","range":"ago(1d)"}`, dir)
	req, _ := http.NewRequest("POST", base+"/jobs", strings.NewReader(body))
	req.Header.Set("X-API-Key", key)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %s", resp.StatusCode, raw)
	}
	// The job runs (once, now) and writes its object.
	for i := 0; ; i++ {
		m, _ := filepath.Glob(filepath.Join(dir, "exports", "Agent test", "*.ndjson"))
		if len(m) == 1 {
			break
		}
		if i > 500 {
			t.Fatalf("no export written\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v\n%s", err, stderr.String())
	}
	if strings.Contains(stderr.String(), key) {
		t.Fatal("the API key was logged")
	}
}
