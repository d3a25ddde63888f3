package fluentbit

import (
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// props is a property getter over a map, like Fluent Bit's
// output_get_property: "" for anything not set.
func props(m map[string]string) func(string) string {
	return func(name string) string { return m[name] }
}

// testOutput is a file:// destination in a temp dir: records land under
// Root/ingest/amberdata, dead letters under Root/failed-requests.
type testOutput struct {
	Root string
}

func (o testOutput) URL() string { return "file://" + filepath.Join(o.Root, "ingest", "amberdata") }

// baseProps are the properties of a fast test instance on file://.
func baseProps(t *testing.T, out testOutput, extra map[string]string) map[string]string {
	t.Helper()
	m := map[string]string{
		"output_url":             out.URL(),
		"buffer_dir":             filepath.Join(t.TempDir(), "buffer"),
		"buffer_flush_interval":  "100ms",
		"agent_shutdown_timeout": "20s",
		"agent_id":               "fbtest",
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

func startInstance(t *testing.T, m map[string]string) *Instance {
	t.Helper()
	x, err := NewInstance(props(m), testLogger(t))
	if err != nil {
		t.Fatalf("NewInstance: %v", err)
	}
	t.Cleanup(func() { x.Exit() })
	return x
}

func testLogger(t *testing.T) *zap.Logger {
	return zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
}
