package main

import (
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metership/metership/internal/testutil/diskfull"
	"github.com/metership/metership/internal/testutil/s3server"
)

// TestRunDiskFull runs the agent with its buffer on a 1 MiB tmpfs and
// fills that disk (a real ENOSPC): the agent keeps running and says so
// (/readyz 503 naming the disk error, /healthz 200 since it recovers by
// itself), the lines written meanwhile wait in the tailed file, and once
// space returns /readyz is 200 again and every record reaches S3 exactly
// once.
func TestRunDiskFull(t *testing.T) {
	mnt := diskfull.Mount(t, "1m")
	srv := s3server.Start(t)
	logs, copies, _ := runDirs(t)
	buf := filepath.Join(mnt, "buf")
	cfg, listen := runConfig(t, srv, runOptions{BufferDir: buf, Sources: tailSource(filepath.Join(logs, "*.log"))})
	w := newSeqWriter(t, 1, filepath.Join(logs, "app.log"), copies, false)
	agent := startRun(t, srv, cfg, listen)
	w.attach(agent)
	w.write(100, 0, 0)
	waitUntil(t, 30*time.Second, func() string { return "the first records shipped\n" + agent.out.String() }, func() bool {
		return agent.counter("metership_records_shipped_total") == 100
	})
	if code := agent.status("/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz %d before the disk filled", code)
	}

	filler := filepath.Join(mnt, "filler")
	diskfull.Fill(t, filler)
	w.write(400, 0, 0)
	var body string
	waitUntil(t, 30*time.Second, func() string { return "/readyz 503 while the buffer's disk is full\n" + agent.out.String() }, func() bool {
		var code int
		code, body, _ = agent.get("/readyz")
		return code == http.StatusServiceUnavailable
	})
	if !strings.Contains(body, "buffer writes failing") || !strings.Contains(body, "no space left on device") {
		t.Fatalf("/readyz says %q; want it to name the failing buffer writes and ENOSPC", body)
	}
	if code := agent.status("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz %d while the disk is full; the agent recovers by itself once space returns", code)
	}
	if n := agent.counter("metership_buffer_disk_errors_total"); n == 0 {
		t.Fatal("metership_buffer_disk_errors_total is 0 while writes fail")
	}
	if v := agent.counter("metership_buffer_writes_failing"); v != 1 {
		t.Fatalf("metership_buffer_writes_failing = %v, want 1", v)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, func() string { return "every record shipped once space returned\n" + agent.out.String() }, func() bool {
		return agent.counter("metership_records_shipped_total") == 500
	})
	waitUntil(t, 60*time.Second, func() string { return "/readyz 200 once space returned\n" + agent.out.String() }, func() bool {
		return agent.status("/readyz") == http.StatusOK
	})
	if code := agent.stop(); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, agent.out.String())
	}
	assertSeqOnce(t, srv, 500)
}

// faultBin is the agent built with -tags faultinject (faults_on.go), once.
var faultBin = sync.OnceValues(func() (string, error) {
	path := binPath + "-faultinject"
	out, err := exec.Command("go", "build", "-tags", "faultinject", "-o", path, ".").CombinedOutput()
	if err != nil {
		return "", errors.New("go build -tags faultinject: " + err.Error() + "\n" + string(out))
	}
	return path, nil
})

// TestRunFsyncFaults runs the agent built with fault injection: a failed
// fsync of the buffer is recovered from in place (the lines of the batch
// cut off are read again, nothing is lost or doubled, the agent stays up);
// a disk whose every fsync fails makes the agent exit 1 so its supervisor
// restarts it, and the restarted agent ships every line exactly once.
func TestRunFsyncFaults(t *testing.T) {
	bin, err := faultBin()
	if err != nil {
		t.Fatal(err)
	}
	srv := s3server.Start(t)
	logs, copies, buf := runDirs(t)
	cfg, listen := runConfig(t, srv, runOptions{BufferDir: buf, Sources: tailSource(filepath.Join(logs, "*.log"))})
	faults := filepath.Join(t.TempDir(), "faults")
	setFaults := func(s string) {
		if err := os.WriteFile(faults, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	setFaults("")
	cmd := agentCmd(srv, "run", "-c", cfg)
	cmd.Path = bin
	cmd.Env = append(cmd.Env, "METERSHIP_TEST_FSYNC_FAULTS="+faults)
	agent := startProc(t, cmd, listen)
	w := newSeqWriter(t, 1, filepath.Join(logs, "app.log"), copies, false)
	w.attach(agent)
	w.write(100, 0, 0)
	waitUntil(t, 30*time.Second, func() string { return "the first records shipped\n" + agent.out.String() }, func() bool {
		return agent.counter("metership_records_shipped_total") == 100
	})

	// One failed fsync: recovered in place.
	setFaults("once")
	w.write(100, 0, 0)
	waitUntil(t, 30*time.Second, func() string { return "every record shipped after one failed fsync\n" + agent.out.String() }, func() bool {
		return agent.counter("metership_records_shipped_total") == 200
	})
	if n := agent.counter("metership_buffer_recoveries_total"); n != 1 {
		t.Fatalf("metership_buffer_recoveries_total = %v, want 1\n%s", n, agent.out.String())
	}
	if code := agent.status("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz %d after an in-place recovery", code)
	}
	if code := agent.status("/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz %d once writes succeed again", code)
	}

	// Every fsync fails: the agent gives up and exits 1.
	setFaults("always")
	w.write(100, 0, 0)
	select {
	case <-agent.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("agent still running on a disk whose fsyncs all fail\n%s", agent.out.String())
	}
	if code := agent.cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("exit code %d, want 1\n%s", code, agent.out.String())
	}
	mustContain(t, agent.out.String(), "buffer failed; exiting to be restarted")

	// The supervisor restarts it on a healthy disk.
	setFaults("")
	agent = startRun(t, srv, cfg, listen)
	w.attach(agent)
	waitUntil(t, 30*time.Second, func() string { return "every record shipped after the restart\n" + agent.out.String() }, func() bool {
		return agent.counter("metership_records_shipped_total") >= 100 && w.offset() == w.size
	})
	if code := agent.stop(); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, agent.out.String())
	}
	assertSeqOnce(t, srv, 300)
}
