package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/metership/metership/internal/testutil/s3server"
	"github.com/metership/metership/metering/emulator"
)

// writeMeterFile writes n meter records of about 140 bytes each, spread
// over 24 hours, 10 dimensions and 5 allocation-tag values.
func writeMeterFile(tb testing.TB, path string, n int) int64 {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	start := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	for i := 0; i < n; i++ {
		fmt.Fprintf(w, `{"customerId":"customer-%04d","meterApiName":"api-%d","meterValue":%d,"meterTimeInMillis":%d,"dimensions":{"team":"t%d"}}`+"\n",
			i%1000, i%10, i%100+1, start+int64(i)*86_400_000/int64(n), i%5)
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	st, _ := f.Stat()
	f.Close()
	return st.Size()
}

// BenchmarkShipEndToEnd ships 1,000,000 meter records (~140 MB) to
// versitygw with the real binary and fsync'd durability, reporting wall
// time, CPU seconds and peak RSS of the metership process.
func BenchmarkShipEndToEnd(b *testing.B) { benchShip(b, false) }

// BenchmarkShipEndToEndMetered is BenchmarkShipEndToEnd with metering on
// (meter_usage against the emulator; the records span 24 hours, 10
// dimensions and 5 allocation-tag values): the difference is what counting
// costs the pipeline.
func BenchmarkShipEndToEndMetered(b *testing.B) { benchShip(b, true) }

func benchShip(b *testing.B, metered bool) {
	n := 1_000_000
	if s := os.Getenv("METERSHIP_BENCH_RECORDS"); s != "" {
		fmt.Sscan(s, &n)
	}
	// METERSHIP_BENCH_SYNC=never shows what fsync costs; the target is
	// measured with the default, always.
	syncPolicy := "always"
	if s := os.Getenv("METERSHIP_BENCH_SYNC"); s != "" {
		syncPolicy = s
	}
	srv := s3server.Start(b)
	meteringCfg := ""
	if metered {
		ecfg := emulator.DefaultConfig()
		ecfg.Products = map[string]emulator.Product{"bench": {}}
		hs := httptest.NewServer(emulator.New(ecfg))
		defer hs.Close()
		var dims strings.Builder
		for d := 0; d < 10; d++ {
			fmt.Fprintf(&dims, "api-%d: dim_%d, ", d, d)
		}
		meteringCfg = fmt.Sprintf("metering:\n  mode: meter_usage\n  product_code: bench\n  endpoint: %s\n  dimensions: {%s}\n  allocation_tags: [team]\n", hs.URL, strings.TrimSuffix(dims.String(), ", "))
	}
	dir := b.TempDir()
	input := filepath.Join(dir, "records.ndjson")
	size := writeMeterFile(b, input, n)
	b.SetBytes(size)
	b.ResetTimer()
	var wall, cpu time.Duration
	var rss int64
	for i := 0; i < b.N; i++ {
		cfgPath := filepath.Join(dir, fmt.Sprintf("m%d.yaml", i))
		cfg := fmt.Sprintf("buffer:\n  dir: %s\n  sync: %s\noutput:\n  url: s3://%s/bench%d\n  endpoint: %s\n  force_path_style: true\nlog:\n  level: warn\n%s",
			filepath.Join(dir, fmt.Sprintf("buf%d", i)), syncPolicy, srv.Bucket(), i, srv.Endpoint(), meteringCfg)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			b.Fatal(err)
		}
		cmd := agentCmd(srv, "ship", "-c", cfgPath, input)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		if err := cmd.Run(); err != nil {
			b.Fatalf("ship: %v\n%s", err, out.String())
		}
		wall += time.Since(start)
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		cpu += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		rss = max(rss, ru.Maxrss*1024)
	}
	b.ReportMetric(float64(n)*float64(b.N)/wall.Seconds(), "records/s")
	b.ReportMetric(wall.Seconds()/float64(b.N), "wall-s/op")
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
	b.ReportMetric(float64(rss)/(1<<20), "peak-rss-MB")
}
