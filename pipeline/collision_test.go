package pipeline

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/metership/metership/record"
)

// shipOne runs a pipeline on cfg that ships one record line.
func shipOne(t *testing.T, p *Pipeline, line string) {
	t.Helper()
	in, err := p.NewIngester("app")
	if err != nil {
		t.Fatal(err)
	}
	in.Add([]byte(line), record.Origin{ID: "s"}, "src")
	if err := in.Commit(); err != nil {
		t.Fatal(err)
	}
	stop := startRun(t, p)
	drain(t, p)
	stop()
}

// A buffer directory copied with its meta shares the original's instance
// id, so both write the same keys: the copy's object meets a key holding
// another object, is counted in metership_upload_key_collisions_total and
// lands under a fresh key; both records are in the output.
func TestKeyCollisionCountedAndRekeyed(t *testing.T) {
	root := t.TempDir()
	cfg := testConfig(t, filepath.Join(root, "ingest", "amberdata"))
	a, err := newTestPipeline(t, cfg, Options{}, testParts{})
	if err != nil {
		t.Fatal(err)
	}
	copyCfg := cfg
	copyCfg.Buffer.Dir = filepath.Join(t.TempDir(), "copy")
	if err := os.MkdirAll(copyCfg.Buffer.Dir, 0o750); err != nil {
		t.Fatal(err)
	}
	meta, err := os.ReadFile(filepath.Join(cfg.Buffer.Dir, "meta"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(copyCfg.Buffer.Dir, "meta"), meta, 0o640); err != nil {
		t.Fatal(err)
	}
	recA := `{"customerId":"c","meterApiName":"m","meterValue":1,"meterTimeInMillis":1654560000000,"uniqueId":"a"}`
	recB := `{"customerId":"c","meterApiName":"m","meterValue":2,"meterTimeInMillis":1654560000000,"uniqueId":"b"}`
	shipOne(t, a, recA)

	reg := prometheus.NewRegistry()
	b, err := newTestPipeline(t, copyCfg, Options{Registerer: reg}, testParts{})
	if err != nil {
		t.Fatal(err)
	}
	if b.Buffer().InstanceID() != a.Buffer().InstanceID() {
		t.Fatal("the copy should share the instance id")
	}
	shipOne(t, b, recB)
	if n := counterValue(t, reg, "metership_upload_key_collisions_total"); n != 1 {
		t.Fatalf("metership_upload_key_collisions_total = %v, want 1", n)
	}
	var bodies []string
	for _, body := range readObjects(t, root) {
		bodies = append(bodies, body)
	}
	slices.Sort(bodies)
	if want := []string{recA + "\n", recB + "\n"}; !slices.Equal(bodies, want) {
		t.Fatalf("objects hold %q, want %q", bodies, want)
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}
