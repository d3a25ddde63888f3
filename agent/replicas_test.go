package main

import (
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/metership/metership/internal/testutil/childproc"
	"github.com/metership/metership/internal/testutil/s3server"
	"github.com/metership/metership/metering/emulator"
)

// replicaKey is one BatchMeterUsage record: (customer, dimension, hour).
type replicaKey struct {
	customer, dim string
	hour          time.Time
}

// replicaFixtures are the usage of n replicas over the four hours before
// now: overlapping customers, values in tenths so fractions carry, and
// the merged tenths per key, for the model.
func replicaFixtures(now time.Time, n int) (lines []string, tenths map[replicaKey]int64) {
	tenths = map[replicaKey]int64{}
	start := now.Truncate(time.Hour).Add(-4 * time.Hour)
	for r := range n {
		var b strings.Builder
		i := 0
		for ts := start.Add(time.Duration(17*r+5) * time.Second); ts.Before(now.Truncate(time.Hour)); ts = ts.Add(71 * time.Second) {
			cust := fmt.Sprintf("cust-%d", (i+r)%4)
			v := int64(i%7 + 1)
			fmt.Fprintf(&b, `{"customerId":%q,"meterApiName":"api-calls","meterValue":%d.%d,"meterTimeInMillis":%d,"uniqueId":"r%d-%d"}`+"\n",
				cust, v/10, v%10, ts.UnixMilli(), r, i)
			tenths[replicaKey{cust, "api_calls", ts.Truncate(time.Hour)}] += v
			i++
		}
		lines = append(lines, b.String())
	}
	return lines, tenths
}

// replicaConfig is replica id's config: its own buffer, the shared state.
func replicaConfig(t *testing.T, srv *s3server.Server, id, bufDir, emuURL string) string {
	t.Helper()
	y := fmt.Sprintf(`agent:
  id: %s
buffer:
  dir: %s
  segment_size: 64KiB
  flush_interval: 200ms
output:
  url: s3://%s/ingest/amberdata
  endpoint: %s
  force_path_style: true
  region: us-east-1
server:
  listen: "127.0.0.1:0"
log:
  level: warn
metering:
  mode: batch_meter_usage
  product_code: %s
  endpoint: %s
  dimensions: {api-calls: api_calls}
  lateness: 0s
  state_url: s3://%s/metering-state
`, id, bufDir, srv.Bucket(), srv.Endpoint(), emulator.DemoProductCode, emuURL, srv.Bucket())
	path := filepath.Join(t.TempDir(), id+".yaml")
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// replicaShip is a `metership ship -` replica fed through a pipe.
type replicaShip struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *childproc.Output
	done  chan error
}

// startReplicas starts one `ship` per config, reading stdin, and returns
// once each has announced itself in the state (agents/<id>.json): a
// replica knows only the replicas whose heartbeat it can see, and these
// one-shot replicas must see each other before any claims an hour.
func startReplicas(t *testing.T, srv *s3server.Server, cfgs []string) []*replicaShip {
	t.Helper()
	var ships []*replicaShip
	for _, cfg := range cfgs {
		cmd := agentCmd(srv, "ship", "-c", cfg, "--timeout", "60s", "-")
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		rs := &replicaShip{cmd: cmd, stdin: stdin, out: &childproc.Output{}, done: make(chan error, 1)}
		cmd.Stdout, cmd.Stderr = rs.out, rs.out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { rs.done <- cmd.Wait() }()
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		ships = append(ships, rs)
	}
	waitUntil(t, 30*time.Second, func() string { return "every replica's heartbeat" }, func() bool {
		n := 0
		for _, o := range srv.ListObjects(t) {
			if strings.HasPrefix(o.Key, "metering-state/agents/") {
				n++
			}
		}
		return n == len(cfgs)
	})
	return ships
}

// Three `metership ship` processes, run at once with metering.state_url,
// each see part of overlapping customers' usage: AWS gets exactly one
// record per (customer, dimension, hour), whose quantity is the merged
// total with the carry, and no DuplicateRecord. `metering status` shows
// each hour's three partials and its claim.
func TestShipReplicasBillMergedTotals(t *testing.T) {
	srv := s3server.Start(t)
	emu := emulator.New(emulator.DefaultConfig())
	hs := httptest.NewServer(emu)
	defer hs.Close()
	now := hourSafeNow()
	lines, tenths := replicaFixtures(now, 3)

	cfgs := make([]string, 3)
	for r := range 3 {
		cfgs[r] = replicaConfig(t, srv, fmt.Sprintf("pod-%d", r), filepath.Join(t.TempDir(), "buf"), hs.URL)
	}
	ships := startReplicas(t, srv, cfgs)
	for r, rs := range ships {
		if _, err := io.WriteString(rs.stdin, lines[r]); err != nil {
			t.Fatal(err)
		}
		rs.stdin.Close()
	}
	for r, rs := range ships {
		if err := <-rs.done; err != nil {
			t.Fatalf("replica %d: %v\n%s", r, err, rs.out.String())
		}
		if !strings.Contains(rs.out.String(), "metering shared:   partials written ") {
			t.Errorf("replica %d: no shared summary:\n%s", r, rs.out.String())
		}
	}

	// The model: per (customer, dimension), hours in order, the merged
	// tenths plus the carry, integer part billed.
	want := map[replicaKey]int64{}
	carry := map[string]int64{}
	for h := now.Truncate(time.Hour).Add(-4 * time.Hour); h.Before(now.Truncate(time.Hour)); h = h.Add(time.Hour) {
		for c := range 4 {
			k := replicaKey{fmt.Sprintf("cust-%d", c), "api_calls", h}
			if v, ok := tenths[k]; ok {
				total := v + carry[k.customer]
				want[k], carry[k.customer] = total/10, total%10
			}
		}
	}
	st := emu.State()
	if len(st.Conflicts) > 0 || st.RecordStatuses[emulator.StatusDuplicateRecord] > 0 {
		t.Fatalf("conflicts %+v, statuses %v", st.Conflicts, st.RecordStatuses)
	}
	got := map[replicaKey]int64{}
	for _, r := range st.Records {
		k := replicaKey{r.CustomerIdentifier, r.Dimension, r.Hour.UTC()}
		if _, dup := got[k]; dup {
			t.Fatalf("two records accepted for %+v", k)
		}
		got[k] = r.Quantity
	}
	if len(got) != len(want) {
		t.Errorf("%d records accepted, want %d", len(got), len(want))
	}
	for k, q := range want {
		if got[k] != q {
			t.Errorf("%s %s: billed %d, want %d", k.customer, k.hour.Format(time.RFC3339), got[k], q)
		}
	}

	stdout, stderr, code := runAgent(t, srv, nil, "metering", "status", "-c", cfgs[0])
	if code != 0 {
		t.Fatalf("status exit %d\n%s", code, stderr)
	}
	h := now.Truncate(time.Hour).Add(-2 * time.Hour).Format("2006-01-02T15")
	// Replica ids are the agent id made unique by the buffer's instance id.
	pods := `\(pod-0\.[0-9a-f]{8}, pod-1\.[0-9a-f]{8}, pod-2\.[0-9a-f]{8}\)`
	for _, re := range []string{h + "  partials: 3 " + pods, "merged 3 " + pods, `this replica: agent pod-0\.[0-9a-f]{8}`} {
		if !regexp.MustCompile(re).MatchString(stdout) {
			t.Fatalf("output does not match %s:\n%s", re, stdout)
		}
	}
	mustContain(t, stdout, "answers:  sent by")
}

// The replica that claimed the hours is SIGKILLed while its
// BatchMeterUsage call hangs (and so is the other replica); restarted,
// the replicas finish every hour: nothing missing, nothing twice.
func TestShipReplicaKilledDuringReportCall(t *testing.T) {
	srv := s3server.Start(t)
	emu := emulator.New(emulator.DefaultConfig())
	hs := httptest.NewServer(emu)
	defer hs.Close()
	now := hourSafeNow()
	lines, tenths := replicaFixtures(now, 2)
	emu.InjectFaults(emulator.Faults{Latency: time.Hour})

	cfgs := make([]string, 2)
	for r := range 2 {
		cfgs[r] = replicaConfig(t, srv, fmt.Sprintf("pod-%d", r), filepath.Join(t.TempDir(), "buf"), hs.URL)
	}
	ships := startReplicas(t, srv, cfgs)
	for r, rs := range ships {
		if _, err := io.WriteString(rs.stdin, lines[r]); err != nil {
			t.Fatal(err)
		}
		rs.stdin.Close()
	}
	waitUntil(t, 30*time.Second, func() string { return "a BatchMeterUsage call in flight" }, func() bool {
		return emu.State().Requests[emulator.OpBatchMeterUsage] > 0
	})
	for _, rs := range ships {
		_ = rs.cmd.Process.Signal(syscall.SIGKILL)
		if err := <-rs.done; err == nil {
			t.Fatal("a replica exited 0 with its report call hanging")
		}
	}
	emu.InjectFaults(emulator.Faults{})
	if n := len(emu.State().Records); n != 0 {
		t.Fatalf("%d records accepted by a call that was cut", n)
	}
	// Both restart with no new input (the claim named both partials, so
	// all usage is in the state); the claimer sends its claims.
	var wg sync.WaitGroup
	for r := range 2 {
		wg.Go(func() {
			stdout, stderr, code := runAgent(t, srv, strings.NewReader(""), "ship", "-c", cfgs[r], "--timeout", "60s", "-")
			if code != 0 {
				t.Errorf("restarted replica %d: exit %d\n%s\n%s", r, code, stdout, stderr)
			}
		})
	}
	wg.Wait()
	st := emu.State()
	if len(st.Conflicts) > 0 {
		t.Fatalf("conflicts %+v", st.Conflicts)
	}
	var billed, total int64
	seen := map[replicaKey]bool{}
	for _, rec := range st.Records {
		k := replicaKey{rec.CustomerIdentifier, rec.Dimension, rec.Hour.UTC()}
		if seen[k] {
			t.Fatalf("two records for %+v", k)
		}
		seen[k] = true
		billed += rec.Quantity
	}
	for _, v := range tenths {
		total += v
	}
	for k := range tenths {
		if !seen[k] {
			t.Errorf("no record for %+v", k)
		}
	}
	// Every series billed floor(its total) over the hours, give or take
	// the fractions still carried (under one unit per customer).
	if billed > total/10 || billed < total/10-4 {
		out, _, _ := runAgent(t, srv, nil, "metering", "status", "-c", cfgs[0])
		t.Fatalf("billed %d units of %d tenths\n%s", billed, total, out)
	}
}
