package pipeline

import (
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/metership/metership/conf"
	"github.com/metership/metership/record"
)

// The buffer's fill can be read against its bound: metership_buffer_max_bytes
// is buffer.max_size, and metership_buffer_bytes grows below it as records
// are buffered (the dashboard's fill panel and the alert at 80 % divide them).
func TestBufferFillAgainstMaxSize(t *testing.T) {
	root := t.TempDir()
	cfg := testConfig(t, filepath.Join(root, "out"))
	cfg.Buffer.MaxSize = conf.Size(3 << 20)
	reg := prometheus.NewRegistry()
	p, err := newTestPipeline(t, cfg, Options{Registerer: reg}, testParts{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if v := gaugeValue(t, reg, "metership_buffer_max_bytes"); v != 3<<20 {
		t.Fatalf("metership_buffer_max_bytes = %v, want %d", v, 3<<20)
	}
	in, err := p.NewIngester("app")
	if err != nil {
		t.Fatal(err)
	}
	in.Add([]byte(`{"customerId":"c","meterApiName":"m","meterValue":1,"meterTimeInMillis":1654560000000}`), record.Origin{ID: "s"}, "src")
	if err := in.Commit(); err != nil {
		t.Fatal(err)
	}
	if v := gaugeValue(t, reg, "metership_buffer_bytes"); v <= 0 || v >= 3<<20 {
		t.Fatalf("metership_buffer_bytes = %v after one record, want between 0 and max_size", v)
	}
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}
