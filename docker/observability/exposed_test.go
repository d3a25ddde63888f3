package observability

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/metership/metership/internal/testutil/childproc"
	"github.com/metership/metership/internal/testutil/s3server"
	"github.com/metership/metership/metering/emulator"
)

// binPath is the metership binary, built from the main module once.
var binPath string

func TestMain(m *testing.M) {
	var dir string
	var err error
	if binPath, dir, err = childproc.BuildAgent("../../agent"); err != nil {
		fmt.Fprintln(os.Stderr, "building metership:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a metership child process serving /metrics on addr.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	out    *childproc.Output
	addr   string
	exited chan struct{}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// start runs metership with args and waits until /metrics on addr answers.
func start(t *testing.T, env []string, addr string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, cmd: exec.Command(binPath, args...), out: &childproc.Output{}, addr: addr, exited: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
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
	waitFor(t, 30*time.Second, func() string { return "/metrics of " + strings.Join(args, " ") + "\n" + p.out.String() }, func() bool {
		select {
		case <-p.exited:
			t.Fatalf("metership %s exited:\n%s", strings.Join(args, " "), p.out.String())
		default:
		}
		_, err := p.scrape()
		return err == nil
	})
	return p
}

// scrape reads /metrics with Prometheus' text parser.
func (p *proc) scrape() (map[string]*dto.MetricFamily, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + p.addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(resp.Body)
}

// value sums the samples of a counter or gauge family whose labels
// include match (name=value pairs); ok is false when there is none.
func (p *proc) value(name string, match ...string) (float64, bool) {
	mfs, err := p.scrape()
	if err != nil {
		return 0, false
	}
	mf, found := mfs[name]
	if !found {
		return 0, false
	}
	var sum float64
	n := 0
samples:
	for _, m := range mf.GetMetric() {
		ls := map[string]string{}
		for _, l := range m.GetLabel() {
			ls[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(match); i += 2 {
			if ls[match[i]] != match[i+1] {
				continue samples
			}
		}
		n++
		sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return sum, n > 0
}

func (p *proc) stop() {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(60 * time.Second):
		p.t.Fatalf("metership did not exit after SIGTERM:\n%s", p.out.String())
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		p.t.Fatalf("metership exited %d after SIGTERM:\n%s", code, p.out.String())
	}
}

func waitFor(t *testing.T, timeout time.Duration, what func() string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// addFamilies adds a scrape to e, histogram and summary samples under
// the names Prometheus stores them as (_bucket with le, _sum, _count).
func (e exposition) addFamilies(mfs map[string]*dto.MetricFamily) {
	for name, mf := range mfs {
		for _, m := range mf.GetMetric() {
			ls := map[string]string{}
			for _, l := range m.GetLabel() {
				ls[l.GetName()] = l.GetValue()
			}
			switch mf.GetType() {
			case dto.MetricType_HISTOGRAM:
				e.add(name+"_sum", ls)
				e.add(name+"_count", ls)
				for _, b := range m.GetHistogram().GetBucket() {
					bl := map[string]string{"le": fmt.Sprint(b.GetUpperBound())}
					for k, v := range ls {
						bl[k] = v
					}
					e.add(name+"_bucket", bl)
				}
				e.add(name+"_bucket", map[string]string{"le": "+Inf"})
			case dto.MetricType_SUMMARY:
				e.add(name+"_sum", ls)
				e.add(name+"_count", ls)
				e.add(name, map[string]string{"quantile": ""})
			default:
				e.add(name, ls)
			}
		}
	}
}

// usageLines are meter records over the last three hours (so that closed
// hours are reported at once with lateness 0s), one of an unmapped
// meterApiName and one line that is not JSON (dead-lettered).
func usageLines(now time.Time) (string, int) {
	var b strings.Builder
	n := 0
	for ts := now.Truncate(time.Hour).Add(-3 * time.Hour).Add(time.Minute); ts.Before(now.Add(-time.Second)); ts = ts.Add(7 * time.Minute) {
		fmt.Fprintf(&b, `{"customerId":"c%d","meterApiName":"api-calls","meterValue":%d,"meterTimeInMillis":%d,"dimensions":{"team":"t%d"}}`+"\n", n%3, n%5+1, ts.UnixMilli(), n%2)
		n++
	}
	fmt.Fprintf(&b, `{"customerId":"c1","meterApiName":"storage","meterValue":2.5,"meterTimeInMillis":%d}`+"\n", now.Add(-time.Hour).UnixMilli())
	fmt.Fprintf(&b, `{"customerId":"c1","meterApiName":"not-billed","meterValue":1,"meterTimeInMillis":%d}`+"\n", now.UnixMilli())
	b.WriteString("this line is not JSON\n")
	return b.String(), n + 2
}

// TestDashboardAndRulesReadExposedMetrics starts the real agent (`metership
// run` tailing a file, shipping to versitygw, metering to the emulator,
// which throttles its first calls), a replica billing through a shared
// state (metering.state_url) and the export jobs server, waits until
// records are shipped, hours reported, a call refused and an export run,
// scrapes both /metrics and checks that every metric, label and label
// value the dashboard's queries and the alert rules name is exposed.
func TestDashboardAndRulesReadExposedMetrics(t *testing.T) {
	srv := s3server.Start(t)
	emu := emulator.New(emulator.DefaultConfig())
	// The first run's calls are all throttled (it should make none), so
	// that the second reports the hours.
	emu.InjectFaults(emulator.Faults{Throttle: 1 << 30})
	hs := httptest.NewServer(emu)
	defer hs.Close()

	dir := t.TempDir()
	logs := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if left := now.Truncate(time.Hour).Add(time.Hour).Sub(now); left < time.Minute {
		time.Sleep(left + time.Second) // keep the usage's hours fixed while the test runs
		now = time.Now().UTC()
	}
	lines, records := usageLines(now)
	if err := os.WriteFile(filepath.Join(logs, "usage.log"), []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	runAddr := freeAddr(t)
	cfg := fmt.Sprintf(`agent:
  id: observability-test
  shutdown_timeout: 10s
sources:
  - type: tail
    paths: [%q]
    refresh_interval: 100ms
buffer:
  dir: %s
  segment_size: 64KiB
  max_size: 64MiB
  flush_interval: 200ms
output:
  url: s3://%s/ingest/amberdata
  endpoint: %s
  force_path_style: true
  region: us-east-1
server:
  listen: %q
log:
  level: info
metering:
  mode: meter_usage
  product_code: %s
  endpoint: %s
  dimensions: {api-calls: api_calls, storage: storage_gb}
  allocation_tags: [team]
  lateness: 0s
  report_on_stop: false
`, filepath.Join(logs, "*.log"), filepath.Join(dir, "buf"), srv.Bucket(), srv.Endpoint(), runAddr, emulator.DemoProductCode, hs.URL)
	cfgPath := filepath.Join(dir, "run.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"AWS_ACCESS_KEY_ID=" + srv.AccessKey(), "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey(),
		"AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
	}
	// Metering reports on a one-minute tick, after each hour closes and
	// at start: a first run counts the usage into the ledger (closed hours
	// wait for their segments to be counted, then for the tick), and a
	// second reports it at once.
	agent := start(t, env, runAddr, "run", "-c", cfgPath)
	waitFor(t, 30*time.Second, func() string { return "usage counted\n" + agent.out.String() }, func() bool {
		shipped, _ := agent.value("metership_records_shipped_total")
		counted, _ := agent.value("metership_metering_records_counted_total")
		return shipped >= float64(records-1) && counted > 0
	})
	agent.stop()
	// The SDK tries a call three times: twelve throttles make failed
	// calls the agent counts in metership_metering_report_errors_total.
	emu.InjectFaults(emulator.Faults{Throttle: 12})
	agent = start(t, env, runAddr, "run", "-c", cfgPath)
	f, err := os.OpenFile(filepath.Join(logs, "usage.log"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, `{"customerId":"c1","meterApiName":"api-calls","meterValue":1,"meterTimeInMillis":%d}`+"\nnot JSON either\n", now.UnixMilli())
	f.Close()

	// A replica of a SaaS product billing through the shared state
	// (metering.state_url): the metership_metering_shared_* series.
	replicaAddr := freeAddr(t)
	replicaCfg := strings.NewReplacer(
		"id: observability-test", "id: observability-replica",
		filepath.Join(dir, "buf"), filepath.Join(dir, "replica-buf"),
		filepath.Join(logs, "*.log"), filepath.Join(dir, "replica-logs", "*.log"),
		runAddr, replicaAddr,
		"mode: meter_usage", "mode: batch_meter_usage\n  state_url: file://"+filepath.Join(dir, "state"),
	).Replace(cfg)
	replicaPath := filepath.Join(dir, "replica.yaml")
	if err := os.WriteFile(replicaPath, []byte(replicaCfg), 0o600); err != nil {
		t.Fatal(err)
	}
	replica := start(t, env, replicaAddr, "run", "-c", replicaPath)
	waitFor(t, 30*time.Second, func() string { return "the replica's first step\n" + replica.out.String() }, func() bool {
		n, _ := replica.value("metership_metering_shared_replicas_live")
		return n >= 1
	})

	// The jobs server, with a one-off export job over what is shipped.
	jobsAddr := freeAddr(t)
	const key = "observability-test-key-0123456789"
	jobsCfg := fmt.Sprintf("output:\n  url: file://%s/out/ingest/amberdata\njobs:\n  listen: %q\n  api_keys: [%q]\n  store: file://%s/jobs\n  tick: 100ms\nlog:\n  level: warn\n", dir, jobsAddr, key, dir)
	jobsPath := filepath.Join(dir, "jobs.yaml")
	if err := os.WriteFile(jobsPath, []byte(jobsCfg), 0o600); err != nil {
		t.Fatal(err)
	}
	jobs := start(t, env, jobsAddr, "jobs", "serve", "-c", jobsPath)
	body := fmt.Sprintf(`{"jobName":"observability","s3Url":"file://%s/exports","format":"ndjson","aggregationBucket":"day","range":"ago(1d)"}`, dir)
	req, _ := http.NewRequest(http.MethodPost, "http://"+jobsAddr+"/jobs", strings.NewReader(body))
	req.Header.Set("X-API-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create job: %d %s", resp.StatusCode, raw)
	}

	var progress string
	waitFor(t, 60*time.Second, func() string { return progress + "\n" + agent.out.String() }, func() bool {
		shipped, _ := agent.value("metership_records_shipped_total")
		reported, _ := agent.value("metership_metering_hours_reported_total")
		_, refused := agent.value("metership_metering_report_errors_total")
		_, quantity := agent.value("metership_metering_quantity_reported_total", "dimension", "api_calls")
		_, tailing := agent.value("metership_tail_file_offset_bytes")
		_, rejected := agent.value("metership_records_rejected_total")
		progress = fmt.Sprintf("shipped %v records, %v hours reported, a refused call %v, quantity %v, tailing %v, rejected %v",
			shipped, reported, refused, quantity, tailing, rejected)
		return shipped >= 1 && reported > 0 && refused && quantity && tailing && rejected
	})
	waitFor(t, 30*time.Second, func() string { return "an export run\n" + jobs.out.String() }, func() bool {
		n, _ := jobs.value("metership_export_runs_total", "result", "success")
		return n >= 1
	})

	readme, err := os.ReadFile(readmeFile)
	if err != nil {
		t.Fatal(err)
	}
	e := exposition{}
	for _, p := range []*proc{agent, replica, jobs} {
		mfs, err := p.scrape()
		if err != nil {
			t.Fatal(err)
		}
		// The README's metrics table lists every family, with its type.
		for name, mf := range mfs {
			row := fmt.Sprintf("| `%s` | %s |", name, strings.ToLower(mf.GetType().String()))
			if strings.HasPrefix(name, "metership_") && !bytes.Contains(readme, []byte(row)) {
				t.Errorf("README's Monitoring / Metrics table has no row %q", row)
			}
		}
		if _, ok := mfs["metership_build_info"]; !ok {
			t.Errorf("%s serves no metership_build_info", strings.Join(p.cmd.Args[1:], " "))
		}
		e.addFamilies(mfs)
	}
	used := map[string]bool{}
	for _, q := range allQueries(t) {
		expr, err := promParser.ParseExpr(q.expr)
		if err != nil {
			t.Errorf("%s: %v", q.where, err)
			continue
		}
		for _, p := range e.check(expr, q.legend) {
			t.Errorf("%s: %s\n  %s", q.where, p, q.expr)
		}
		for _, n := range metricNames(expr) {
			used[n] = true
		}
	}
	var unused []string
	for n := range e {
		if strings.HasPrefix(n, "metership_") && !used[n] && !strings.HasSuffix(n, "_sum") && !strings.HasSuffix(n, "_count") {
			unused = append(unused, n)
		}
	}
	sort.Strings(unused)
	t.Logf("exposed, not on the dashboard nor in a rule: %s", strings.Join(unused, " "))

	agent.stop()
	replica.stop()
	jobs.stop()
}
