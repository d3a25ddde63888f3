package engine

import (
	"context"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/metership/metership/conf"
	"github.com/metership/metership/metering"
	"github.com/metership/metership/metering/emulator"
	"github.com/metership/metership/record"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// ingest starts an engine on cfg, ingests lines and finishes, draining
// (shipping everything) or not (leaving it in the buffer).
func ingest(t *testing.T, cfg conf.Config, lines []string, drain bool) *Engine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := Start(ctx, cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	in, err := e.Pipeline().NewIngester("app")
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range lines {
		in.Add([]byte(l), record.Origin{ID: "test", Offset: int64(i)}, "test")
		if in.Full() || i%50 == 49 {
			if err := in.CommitWait(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := in.CommitWait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Finish(ctx, drain); err != nil {
		t.Fatal(err)
	}
	return e
}

// Records are counted as they are ingested: the segments' counts use the
// batches' aggregates and parse nothing again. A buffer filled while
// metering was off has no aggregates; metering turned on later counts it
// by parsing it, with the same totals.
func TestMeteringCountsAtIngest(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "a")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "b")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", "/dev/null")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
	hs := httptest.NewServer(emulator.New(emulator.DefaultConfig()))
	defer hs.Close()

	hour := time.Now().UTC().Truncate(time.Hour).Add(-3 * time.Hour)
	var lines []string
	var want int64
	for i := range 240 {
		at := hour.Add(time.Duration(i) * 15 * time.Second)
		lines = append(lines, fmt.Sprintf(`{"customerId":"c-%d","meterApiName":"api-calls","meterValue":%d,"meterTimeInMillis":%d,"dimensions":{"team":"t%d"}}`,
			i%7, i%5+1, at.UnixMilli(), i%3))
		want += int64(i%5 + 1)
	}
	config := func(dir string, metered bool) conf.Config {
		cfg := conf.Default()
		cfg.Buffer.Dir = filepath.Join(dir, "buffer")
		cfg.Buffer.SegmentSize = 64 << 10
		cfg.Output.URL = "file://" + filepath.Join(dir, "out")
		if metered {
			m := &cfg.Metering // the defaults, then this test's settings
			m.Mode, m.ProductCode, m.Region, m.Endpoint = metering.ModeMeterUsage, emulator.DemoProductCode, "us-east-1", hs.URL
			m.Dimensions, m.AllocationTags = map[string]string{"api-calls": "api_calls"}, []string{"team"}
			m.Lateness, m.Window = 0, conf.Duration(6*time.Hour)
		}
		return cfg
	}
	check := func(e *Engine, rescanned int64) {
		t.Helper()
		s := e.meter.meter.Summary()
		if s.RecordsCounted != int64(len(lines)) || s.RecordsRescanned != rescanned {
			t.Errorf("counted %d records, %d parsed again; want %d, %d", s.RecordsCounted, s.RecordsRescanned, len(lines), rescanned)
		}
		if s.Quantities["api_calls"] != want {
			t.Errorf("reported %d api_calls, want %d", s.Quantities["api_calls"], want)
		}
	}

	check(ingest(t, config(t.TempDir(), true), lines, true), 0)

	// Metering off while ingesting, and the output unwritable so that
	// nothing ships: the records stay in the buffer, and a metered run
	// then counts them from the records themselves.
	dir := t.TempDir()
	off := config(dir, false)
	off.Output.URL = "file:///proc/metership-unwritable/out"
	ingest(t, off, lines, false)
	check(ingest(t, config(dir, true), nil, true), int64(len(lines)))
}
