package observability

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
)

// healthySeries is one agent doing well for four hours, in promqltest's
// series notation (one sample a minute): the base every scenario changes.
var healthySeries = map[string]string{
	`metership_upload_failures_total{instance="a"}`:                               "0+0x240",
	`metership_uploads_total{instance="a"}`:                                       "0+10x240",
	`metership_oldest_pending_seconds{instance="a"}`:                              "5+0x240",
	`metership_tail_file_size_bytes{instance="a",path="/l/app.log",inode="1"}`:    "0+100000x240",
	`metership_tail_file_offset_bytes{instance="a",path="/l/app.log",inode="1"}`:  "0+100000x240",
	`metership_buffer_bytes{instance="a"}`:                                        "1000+0x240",
	`metership_buffer_max_bytes{instance="a"}`:                                    "10000+0x240",
	`metership_buffer_writes_failing{instance="a"}`:                               "0+0x240",
	`metership_buffer_segments_damaged_total{instance="a"}`:                       "0+0x240",
	`metership_metering_hours_conflicted_total{instance="a"}`:                     "0+0x240",
	`metership_metering_usage_unbilled_total{instance="a",reason="max_carry"}`:    "0+0x240",
	`metership_metering_records_unbillable_total{instance="a",reason="value"}`:    "0+0x240",
	`metership_metering_records_unbillable_total{instance="a",reason="customer"}`: "0+0x240",
	`metership_metering_dead_letters_total{instance="a"}`:                         "0+0x240",
	`metership_metering_oldest_pending_hour_seconds{instance="a"}`:                "1800+0x240",
	`metership_export_runs_total{instance="a",result="failure"}`:                  "0+0x240",
	`metership_metering_shared_replicas_stalled{instance="a"}`:                    "0+0x240",
	`metership_metering_shared_records_conflicted_total{instance="a"}`:            "0+0x240",
	`metership_metering_shared_hours_unsettled{instance="a"}`:                     "1+0x240",
	`metership_export_runs_total{instance="a",result="success"}`:                  "0+1x240",
}

// firingAt evaluates the alerts of alerts.yaml (loaded with Prometheus'
// rule-file loader) every minute over series with Prometheus' PromQL
// engine, as Prometheus' rule manager does: an alert's series is pending
// from the first evaluation that returns it and firing once it has been
// returned at every evaluation for its for: duration. It returns the
// alerts firing at each minute. (The rule manager itself, with its TSDB,
// would pull half of Prometheus' dependencies into this module.)
func firingAt(t *testing.T, series map[string]string, minutes int) [][]string {
	t.Helper()
	var stored []storage.Series
	for _, desc := range slices.Sorted(maps.Keys(series)) {
		ls, values, err := promParser.ParseSeriesDesc(desc + " " + series[desc])
		if err != nil {
			t.Fatalf("%s: %v", desc, err)
		}
		var samples []chunks.Sample
		for i, v := range values {
			if !v.Omitted {
				samples = append(samples, floatSample{t: int64(i) * time.Minute.Milliseconds(), f: v.Value})
			}
		}
		stored = append(stored, storage.NewListSeries(ls, samples))
	}
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1e6, Timeout: time.Minute, LookbackDelta: 5 * time.Minute,
		NoStepSubqueryIntervalFn: func(int64) int64 { return time.Minute.Milliseconds() }})
	type rule struct {
		name string
		hold time.Duration
		expr string
	}
	var alerts []rule
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, rule{r.Alert, time.Duration(r.For), r.Expr})
		}
	}
	activeAt := map[string]map[string]time.Time{} // alert -> series -> since
	out := make([][]string, minutes+1)
	for i := 0; i <= minutes; i++ {
		ts := time.UnixMilli(int64(i) * time.Minute.Milliseconds())
		for _, a := range alerts {
			q, err := engine.NewInstantQuery(context.Background(), memQueryable(stored), nil, a.expr, ts)
			if err != nil {
				t.Fatalf("%s: %v", a.name, err)
			}
			res := q.Exec(context.Background())
			if res.Err != nil {
				t.Fatalf("%s at %dm: %v", a.name, i, res.Err)
			}
			vec, err := res.Vector()
			if err != nil {
				t.Fatalf("%s at %dm: %v", a.name, i, err)
			}
			q.Close()
			seen := map[string]time.Time{}
			for _, s := range vec {
				key := s.Metric.DropReserved(func(n string) bool { return n == model.MetricNameLabel }).String()
				since, ok := activeAt[a.name][key]
				if !ok {
					since = ts
				}
				seen[key] = since
				if ts.Sub(since) >= a.hold && !slices.Contains(out[i], a.name) {
					out[i] = append(out[i], a.name)
				}
			}
			activeAt[a.name] = seen
		}
	}
	return out
}

// floatSample is one float sample of the in-memory series.
type floatSample struct {
	t int64
	f float64
}

func (s floatSample) T() int64                      { return s.t }
func (s floatSample) ST() int64                     { return 0 }
func (s floatSample) F() float64                    { return s.f }
func (s floatSample) H() *histogram.Histogram       { return nil }
func (s floatSample) FH() *histogram.FloatHistogram { return nil }
func (s floatSample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s floatSample) Copy() chunks.Sample           { return s }

// memQueryable serves the test's series to the engine.
type memQueryable []storage.Series

func (m memQueryable) Querier(_, _ int64) (storage.Querier, error) { return m, nil }

func (m memQueryable) Select(_ context.Context, _ bool, _ *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	out := &seriesSet{}
	for _, s := range m {
		ls := s.Labels()
		if slices.IndexFunc(ms, func(mt *labels.Matcher) bool { return !mt.Matches(ls.Get(mt.Name)) }) < 0 {
			out.series = append(out.series, s)
		}
	}
	slices.SortFunc(out.series, func(a, b storage.Series) int { return labels.Compare(a.Labels(), b.Labels()) })
	return out
}

func (memQueryable) LabelValues(context.Context, string, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}

func (memQueryable) LabelNames(context.Context, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}

func (memQueryable) Close() error { return nil }

// seriesSet iterates the selected series.
type seriesSet struct {
	series []storage.Series
	next   int
}

func (s *seriesSet) Next() bool                        { s.next++; return s.next <= len(s.series) }
func (s *seriesSet) At() storage.Series                { return s.series[s.next-1] }
func (s *seriesSet) Err() error                        { return nil }
func (s *seriesSet) Warnings() annotations.Annotations { return nil }

// TestAlertsFire evaluates the alerts (firingAt) over each failure of the
// healthy agent: the alert is not firing yet at quiet (its for: or the
// threshold not reached), fires at fire, and no other alert fires; the
// healthy agent fires nothing.
func TestAlertsFire(t *testing.T) {
	for _, c := range []struct {
		alert       string // "" for none
		change      map[string]string
		quiet, fire int // minutes
	}{
		{"", nil, 0, 120},
		{"MetershipUploadsFailing", map[string]string{
			`metership_upload_failures_total{instance="a"}`: "0+2x240",
			`metership_uploads_total{instance="a"}`:         "50+0x240"}, 10, 20},
		// Some uploads still succeed: degraded, not failing.
		{"", map[string]string{`metership_upload_failures_total{instance="a"}`: "0+2x240", `metership_uploads_total{instance="a"}`: "0+1x240"}, 0, 60},
		{"MetershipLagGrowing", map[string]string{`metership_oldest_pending_seconds{instance="a"}`: "0+60x240"}, 20, 40},
		{"MetershipLagGrowing", map[string]string{`metership_tail_file_offset_bytes{instance="a",path="/l/app.log",inode="1"}`: "0+0x240",
			`metership_tail_file_size_bytes{instance="a",path="/l/app.log",inode="1"}`: "0+1048576x240"}, 25, 45},
		// Behind by a steady 20 MiB that does not grow: not lag growing.
		{"", map[string]string{`metership_tail_file_offset_bytes{instance="a",path="/l/app.log",inode="1"}`: "0+100000x240",
			`metership_tail_file_size_bytes{instance="a",path="/l/app.log",inode="1"}`: "20971520+100000x240"}, 0, 60},
		{"MetershipBufferNearlyFull", map[string]string{`metership_buffer_bytes{instance="a"}`: "9000+0x240"}, 3, 10},
		{"MetershipBufferDiskFailing", map[string]string{`metership_buffer_writes_failing{instance="a"}`: "1+0x240"}, 3, 10},
		{"MetershipSegmentDamaged", map[string]string{`metership_buffer_segments_damaged_total{instance="a"}`: "0 0 0 0 0 1+0x235"}, 4, 6},
		{"MetershipMeteringConflict", map[string]string{`metership_metering_hours_conflicted_total{instance="a"}`: "0 0 0 0 0 1+0x235"}, 4, 6},
		{"MetershipMeteringConflict", map[string]string{`metership_metering_shared_records_conflicted_total{instance="a"}`: "0 0 0 0 0 2+0x235"}, 4, 6},
		{"MetershipUsageUnbilled", map[string]string{`metership_metering_records_unbillable_total{instance="a",reason="value"}`: "0 0 0 0 0 3+0x235"}, 4, 6},
		{"MetershipUsageUnbilled", map[string]string{`metership_metering_usage_unbilled_total{instance="a",reason="max_carry"}`: "0 0 0 0 0 40+0x235"}, 4, 6},
		{"MetershipUsageUnbilled", map[string]string{`metership_metering_dead_letters_total{instance="a"}`: "0 0 0 0 0 1+0x235"}, 4, 6},
		// 4 h from the hour's start at 0, growing a minute a minute: 5 h at 60m.
		{"MetershipHourNotReported", map[string]string{`metership_metering_oldest_pending_hour_seconds{instance="a"}`: "14400+60x240"}, 59, 61},
		{"MetershipReplicaHeartbeatStopped", map[string]string{`metership_metering_shared_replicas_stalled{instance="a"}`: "0 0 0 0 0 1+0x235"}, 10, 20},
		{"MetershipReplicaHoursUnsettled", map[string]string{`metership_metering_shared_hours_unsettled{instance="a"}`: "3+0x240"}, 100, 130},
		{"MetershipExportFailed", map[string]string{`metership_export_runs_total{instance="a",result="failure"}`: "0 0 0 0 0 1+0x235"}, 4, 6},
	} {
		name := c.alert
		if name == "" {
			name = "none"
		}
		t.Run(name, func(t *testing.T) {
			series := maps.Clone(healthySeries)
			for k, v := range c.change {
				if _, ok := series[k]; !ok {
					t.Fatalf("scenario changes %s, not in healthySeries", k)
				}
				series[k] = v
			}
			firing := firingAt(t, series, c.fire)
			if c.alert == "" {
				for i, f := range firing {
					if len(f) > 0 {
						t.Fatalf("at %dm %v fire, want none", i, f)
					}
				}
				return
			}
			if slices.Contains(firing[c.quiet], c.alert) {
				t.Errorf("%s fires at %dm already", c.alert, c.quiet)
			}
			if got := firing[c.fire]; !slices.Equal(got, []string{c.alert}) {
				t.Errorf("at %dm firing %v, want [%s]", c.fire, got, c.alert)
			}
		})
	}
}
