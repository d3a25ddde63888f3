package shared

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/metership/metership/buffer"
	"github.com/metership/metership/conf"
	"github.com/metership/metership/metering"
	"github.com/metership/metership/metering/emulator"
)

func batchConfig() conf.Metering {
	return conf.Metering{
		Mode: metering.ModeBatchMeterUsage, ProductCode: testProduct, Region: "us-east-1",
		Dimensions:     map[string]string{"api-calls": "api_calls", "storage": "storage_gb*0.001"},
		CustomerIDType: "customer_identifier",
		Lateness:       conf.Duration(5 * time.Minute), Window: conf.Duration(6 * time.Hour),
	}
}

// meterLines writes lines into a fresh buffer in dir (one segment per
// hour) and counts them into m, as the pipeline does.
func meterLines(t *testing.T, m *metering.Meter, dir string, lines map[int][]string) {
	t.Helper()
	buf, err := buffer.Open(buffer.Options{Dir: dir, AgentID: "agent-1", Sync: buffer.SyncNever})
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	var batch buffer.Batch
	for h := 0; h < 24; h++ {
		if len(lines[h]) == 0 {
			continue
		}
		batch.Reset()
		for _, l := range lines[h] {
			batch.AddRecord(hr(h).UnixMilli(), []byte(l))
		}
		if err := buf.Write(&batch); err != nil {
			t.Fatal(err)
		}
		if err := buf.Seal(); err != nil {
			t.Fatal(err)
		}
	}
	for buf.Stats().SegmentsPending > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		seg, err := buf.Next(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Count(context.Background(), seg); err != nil {
			t.Fatal(err)
		}
		if err := buf.Ack(seg); err != nil {
			t.Fatal(err)
		}
	}
}

func records(h int, customer, api, value string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf(`{"customerId":%q,"meterApiName":%q,"meterValue":%s,"meterTimeInMillis":%d,"uniqueId":"u-%d-%s-%s-%d"}`,
			customer, api, value, hr(h).Add(time.Duration(i)*time.Second).UnixMilli(), h, customer, api, i))
	}
	return out
}

// One replica through the ledger's seam (metering.Options.Shared) bills
// exactly what the single-agent ledger bills for the same records:
// same records, quantities, carries.
func TestOneReplicaMatchesSingleAgent(t *testing.T) {
	lines := map[int][]string{
		8:  append(records(8, "c1", "api-calls", "0.4", 3), records(8, "c2", "storage", "1500", 2)...),
		9:  append(records(9, "c1", "api-calls", "0.7", 2), records(9, "c3", "api-calls", "2", 1)...),
		10: records(10, "c1", "api-calls", "0.25", 4),
		11: append(records(11, "c2", "storage", "999.9", 1), records(11, "c1", "api-calls", "1", 1)...),
	}
	run := func(sharedState bool) emulator.State {
		w := newWorld(t)
		w.clk.Set(hr(8).Add(5 * time.Minute))
		client, tr := mmClient(w.emURL, "AKIDPOD")
		t.Cleanup(tr.CloseIdleConnections)
		dir := t.TempDir()
		opts := metering.Options{Dir: filepath.Join(dir, "metering"), InstanceID: "pod-a", Client: client, Now: w.clk.Now,
			Backoff: metering.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond}, MaxRetryElapsed: 10 * time.Second}
		var a *Agent
		if sharedState {
			a = w.agent("pod-a", opts.Dir)
			opts.Shared = a
		}
		m, err := metering.New(batchConfig(), opts)
		if err != nil {
			t.Fatal(err)
		}
		for h := 8; h <= 11; h++ {
			meterLines(t, m, filepath.Join(dir, fmt.Sprintf("buffer-%d", h)), map[int][]string{h: lines[h]})
			w.clk.Set(hr(h + 1).Add(6 * time.Minute))
			if err := m.ReportClosed(context.Background()); err != nil {
				t.Fatal(err)
			}
			if a != nil {
				steps(t, 1, a)
			}
		}
		if a != nil && !a.Settled() {
			t.Fatal("not settled")
		}
		return w.em.State()
	}
	alone, replica := run(false), run(true)
	if len(alone.Records) == 0 {
		t.Fatal("nothing billed")
	}
	want := accepted(t, alone)
	got := accepted(t, replica)
	if len(got) != len(want) {
		t.Fatalf("records: shared %v, single %v", got, want)
	}
	for k, q := range want {
		if got[k] != q {
			t.Errorf("%+v: shared %d, single agent %d", k, got[k], q)
		}
	}
}
