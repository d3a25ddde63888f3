package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/metership/metership/internal/testutil/s3server"
)

// BenchmarkRunTailEndToEnd tails a file of 1,000,000 meter records (~140
// MB) with the real agent into versitygw, with durable checkpoints (sync
// always) and buffer.flush_interval 1s, and reports the time from the
// agent's start until /metrics counts every record shipped (wall-s, which
// includes up to flush_interval for the last segment to come of age) and
// until every line is durable in the buffer (durable-s), plus the agent's
// CPU seconds and peak RSS (its whole life, SIGTERM included). /metrics
// is polled every 50ms, which costs the agent a little CPU.
// METERSHIP_BENCH_RECORDS changes the record count and
// METERSHIP_BENCH_FLUSH the flush interval.
func BenchmarkRunTailEndToEnd(b *testing.B) {
	n := 1_000_000
	if s := os.Getenv("METERSHIP_BENCH_RECORDS"); s != "" {
		fmt.Sscan(s, &n)
	}
	flush := "1s"
	if s := os.Getenv("METERSHIP_BENCH_FLUSH"); s != "" {
		flush = s
	}
	srv := s3server.Start(b)
	dir := b.TempDir()
	input := filepath.Join(dir, "records.ndjson")
	size := writeMeterFile(b, input, n)
	b.SetBytes(size)
	b.ResetTimer()
	var wall, durable, cpu time.Duration
	var rss int64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		logs := filepath.Join(dir, fmt.Sprintf("logs%d", i))
		if err := os.Mkdir(logs, 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.Link(input, filepath.Join(logs, "app.log")); err != nil {
			b.Fatal(err)
		}
		listen := freeListenAddr(b)
		cfgPath := filepath.Join(dir, fmt.Sprintf("m%d.yaml", i))
		cfg := fmt.Sprintf(`sources:
  - paths: [%q]
buffer:
  dir: %s
  flush_interval: %s
output:
  url: s3://%s/bench%d
  endpoint: %s
  force_path_style: true
server:
  listen: %q
log:
  level: warn
`, filepath.Join(logs, "*.log"), filepath.Join(dir, fmt.Sprintf("buf%d", i)), flush, srv.Bucket(), i, srv.Endpoint(), listen)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		agent := startRun(b, srv, cfgPath, listen)
		var read time.Duration
		for {
			m := agent.metrics()
			if v, _ := sumSamples(m, "metership_tail_lines_read_total"); v >= float64(n) && read == 0 {
				read = time.Since(start)
			}
			if v, _ := sumSamples(m, "metership_records_shipped_total"); v >= float64(n) {
				break
			}
			select {
			case <-agent.exited:
				b.Fatalf("agent exited:\n%s", agent.out.String())
			case <-time.After(50 * time.Millisecond):
			}
		}
		wall += time.Since(start)
		durable += read
		b.StopTimer()
		if code := agent.stop(); code != 0 {
			b.Fatalf("exit %d\n%s", code, agent.out.String())
		}
		ru := agent.cmd.ProcessState.SysUsage().(*syscall.Rusage)
		cpu += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		rss = max(rss, ru.Maxrss*1024)
		b.StartTimer()
	}
	b.ReportMetric(float64(n)*float64(b.N)/wall.Seconds(), "records/s")
	b.ReportMetric(wall.Seconds()/float64(b.N), "wall-s/op")
	b.ReportMetric(durable.Seconds()/float64(b.N), "durable-s/op")
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
	b.ReportMetric(float64(rss)/(1<<20), "peak-rss-MB")
}

// BenchmarkRunIdle runs the agent tailing an empty file with nothing to
// ship for METERSHIP_BENCH_IDLE (default 10s) and reports its CPU use over
// that time (after a second to settle from the start) and its RSS.
func BenchmarkRunIdle(b *testing.B) {
	idle := 10 * time.Second
	if s := os.Getenv("METERSHIP_BENCH_IDLE"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			b.Fatal(err)
		}
		idle = d
	}
	srv := s3server.Start(b)
	var cpuPct, rssMB, hwmMB float64
	for i := 0; i < b.N; i++ {
		dir := b.TempDir()
		logs := filepath.Join(dir, "logs")
		if err := os.Mkdir(logs, 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(logs, "app.log"), nil, 0o644); err != nil {
			b.Fatal(err)
		}
		cfg, listen := runConfig(b, srv, runOptions{
			BufferDir:     filepath.Join(dir, "buf"),
			FlushInterval: "60s", // the default
			Sources:       fmt.Sprintf("  - paths: [%q]\n", filepath.Join(logs, "*.log")),
		})
		agent := startRun(b, srv, cfg, listen)
		time.Sleep(time.Second)
		pid := agent.cmd.Process.Pid
		cpu0, start := procCPU(b, pid), time.Now()
		time.Sleep(idle)
		cpu1, elapsed := procCPU(b, pid), time.Since(start)
		cpuPct += 100 * (cpu1 - cpu0).Seconds() / elapsed.Seconds()
		rss, hwm := procMem(b, pid)
		rssMB += float64(rss) / (1 << 20)
		hwmMB = max(hwmMB, float64(hwm)/(1<<20))
		if code := agent.stop(); code != 0 {
			b.Fatalf("exit %d\n%s", code, agent.out.String())
		}
	}
	b.ReportMetric(cpuPct/float64(b.N), "cpu-percent")
	b.ReportMetric(rssMB/float64(b.N), "rss-MB")
	b.ReportMetric(hwmMB, "peak-rss-MB")
}

// procCPU is the CPU time of all of a process's threads, from their
// /proc/PID/task/TID/schedstat (nanoseconds, unlike the clock ticks of
// /proc/PID/stat, which charge a whole tick to whoever runs at it and so
// overstate a process that wakes briefly and often).
func procCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		tb.Skipf("no /proc/%d/task/*/schedstat: %v", pid, err)
	}
	var total time.Duration
	for _, path := range tasks {
		raw, err := os.ReadFile(path)
		if err != nil {
			continue // the thread exited
		}
		ns, _ := strconv.ParseInt(strings.Fields(string(raw))[0], 10, 64)
		total += time.Duration(ns)
	}
	return total
}

// procMem returns a process's resident set size and its peak, in bytes.
func procMem(tb testing.TB, pid int) (rss, hwm int64) {
	tb.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = kb << 10
		case "VmHWM":
			hwm = kb << 10
		}
	}
	return rss, hwm
}
