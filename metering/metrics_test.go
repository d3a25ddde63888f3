package metering

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// samplesByLabels collects c's samples by their label values joined with ",".
func samplesByLabels(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 64)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	out := map[string]float64{}
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		key := ""
		for i, l := range pb.GetLabel() {
			if i > 0 {
				key += ","
			}
			key += l.GetValue()
		}
		switch {
		case pb.Counter != nil:
			out[key] = pb.Counter.GetValue()
		case pb.Gauge != nil:
			out[key] = pb.Gauge.GetValue()
		}
	}
	return out
}

// What the dashboard and alerts read: the age of the oldest hour AWS has
// not accepted (from its start, against metering.window), the quantity
// accepted per dimension, and the carried / unbillable / unbilled reasons
// at 0 before anything happened, so an alert's increase() sees the first.
func TestMetricsForOperators(t *testing.T) {
	clk := newClock(testNow)
	_, url := startEmulator(t, emulatorConfig(clk))
	m := podMeter(t, t.TempDir(), url, clk)

	if v := metricValue(m.metrics.oldestPending); v != 0 {
		t.Fatalf("oldest_pending_hour_seconds = %v with nothing counted, want 0", v)
	}
	if v := metricValue(m.metrics.window); v != (6 * time.Hour).Seconds() {
		t.Fatalf("window_seconds = %v, want 6h", v)
	}
	for name, c := range map[string]prometheus.Collector{"hours_carried_total": m.metrics.hoursCarried,
		"records_unbillable_total": m.metrics.recordsUnbilled, "usage_unbilled_total": m.metrics.usageUnbilled} {
		want := map[string]map[string]float64{
			"hours_carried_total":      {"window": 0, "late": 0, "out_of_bounds": 0},
			"records_unbillable_total": {"value": 0, "customer": 0},
			"usage_unbilled_total":     {"max_carry": 0},
		}[name]
		if got := samplesByLabels(t, c); len(got) != len(want) {
			t.Errorf("%s: series %v, want %v", name, got, want)
		}
	}

	from := testNow.Add(-4 * time.Hour).Truncate(time.Hour) // 08:00
	recs, totals := testRecords(from, testNow.Truncate(time.Hour).Add(time.Hour), 25)
	countRecords(t, m, recs, 30)
	if v, want := metricValue(m.metrics.oldestPending), testNow.Sub(from).Seconds(); v != want {
		t.Fatalf("oldest_pending_hour_seconds = %v before reporting, want %v (08:00 at 12:30)", v, want)
	}
	if err := m.ReportClosed(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if v, want := metricValue(m.metrics.oldestPending), testNow.Sub(testNow.Truncate(time.Hour)).Seconds(); v != want {
		t.Fatalf("oldest_pending_hour_seconds = %v after reporting, want %v (the open 12:00)", v, want)
	}
	want := map[string]float64{}
	for k, q := range expectedQuantities(totals) {
		if k.hour.Before(testNow.Truncate(time.Hour)) {
			want[k.dimension] += float64(q)
		}
	}
	got := samplesByLabels(t, m.metrics.quantities)
	if len(got) != len(want) || len(got) == 0 {
		t.Fatalf("quantity_reported_total %v, want %v", got, want)
	}
	for d, q := range want {
		if got[d] != q {
			t.Errorf("quantity_reported_total{dimension=%q} = %v, want %v", d, got[d], q)
		}
	}
}
