package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	fb "github.com/metership/metership/fluentbit/fbtest"
)

// BenchmarkHarnessFlush flushes 1,000-record chunks of typical meter
// records through the real .so, from the C harness (one thread, as a
// Fluent Bit output without Workers), and reports the harness's own
// timing as records/s plus the harness process's peak RSS. Shipping to a
// file:// output runs in the background meanwhile, as in production.
func BenchmarkHarnessFlush(b *testing.B) {
	for _, sync := range []string{"never", "always"} {
		for _, threads := range []int{1, 2} {
			b.Run(fmt.Sprintf("sync=%s/threads=%d", sync, threads), func(b *testing.B) {
				benchHarness(b, sync, threads)
			})
		}
	}
}

func benchHarness(b *testing.B, sync string, threads int) {
	const per = 1000
	h := startHarness(b)
	h.do("register")
	h.expect("init a rc=1", "init a %s", h.props("a.props", fileProps(b, b.TempDir(), map[string]string{
		"buffer_sync":            sync,
		"buffer_max_size":        "8GiB",
		"buffer_segment_size":    "16MiB",
		"buffer_flush_interval":  "1s",
		"agent_shutdown_timeout": "120s",
	})))
	chunk := fb.MeterChunk(0, per)
	file := h.file("bench.chunk", chunk)
	h.do("bench a usage %s 10 1", file)
	b.SetBytes(int64(len(chunk)))
	b.ResetTimer()
	got := h.do("bench a usage %s %d %d", file, b.N, threads)
	b.StopTimer()
	fields := map[string]string{}
	for _, f := range strings.Fields(got)[2:] {
		k, v, _ := strings.Cut(f, "=")
		fields[k] = v
	}
	seconds, err := strconv.ParseFloat(fields["seconds"], 64)
	if err != nil || fields["ok"] != strconv.Itoa(b.N) {
		b.Fatalf("bench answered %q for %d flushes", got, b.N)
	}
	b.ReportMetric(float64(b.N)*per/seconds, "records/s")
	b.ReportMetric(seconds*1e9/float64(b.N), "ns/chunk")
	if rss := peakRSS(h.cmd.Process.Pid); rss > 0 {
		b.ReportMetric(float64(rss)/(1<<20), "peak-RSS-MiB")
	}
	h.expect("exit a rc=1", "exit a")
}

// peakRSS reads VmHWM of a process, in bytes (0 if unknown).
func peakRSS(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
