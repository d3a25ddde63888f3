package observability

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/promslog"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/rules"
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
	`metership_metering_shared_hours_unsettled{instance="a"}`:                     "1+0x240",
	`metership_export_runs_total{instance="a",result="success"}`:                  "0+1x240",
}

// firingAt evaluates alerts.yaml, loaded by Prometheus' rule manager,
// every minute over series as Prometheus would (for: included) and
// returns the alerts firing at each minute.
func firingAt(t *testing.T, series map[string]string, minutes int) [][]string {
	t.Helper()
	var load strings.Builder
	load.WriteString("load 1m\n")
	for _, s := range slices.Sorted(maps.Keys(series)) {
		fmt.Fprintf(&load, "  %s %s\n", s, series[s])
	}
	suite, err := promqltest.NewLazyLoader(load.String(), promqltest.LazyLoaderOpts{EnableAtModifier: true, EnableNegativeOffset: true, Parser: promParser})
	if err != nil {
		t.Fatal(err)
	}
	defer suite.Close()
	suite.SubqueryInterval = time.Minute
	m := rules.NewManager(&rules.ManagerOptions{
		QueryFunc:    rules.EngineQueryFunc(suite.QueryEngine(), suite.Storage()),
		AppendableV2: suite.Storage(),
		Context:      context.Background(),
		NotifyFunc:   func(context.Context, string, ...*rules.Alert) {},
		Logger:       promslog.NewNopLogger(),
		Parser:       promParser,
	})
	groups, errs := m.LoadGroups(time.Minute, labels.EmptyLabels(), "", nil, false, alertsFile)
	if len(errs) > 0 {
		t.Fatalf("rule manager: %v", errs)
	}
	for _, g := range groups {
		for _, r := range g.Rules() {
			if ar, ok := r.(*rules.AlertingRule); ok {
				ar.SetRestored(true)
			}
		}
	}
	out := make([][]string, minutes+1)
	start := time.Unix(0, 0).UTC()
	for i := 0; i <= minutes; i++ {
		ts := start.Add(time.Duration(i) * time.Minute)
		suite.WithSamplesTill(ts, func(err error) {
			if err != nil {
				t.Fatal(err)
			}
			for _, g := range groups {
				g.Eval(suite.Context(), ts)
				for _, r := range g.Rules() {
					if err := r.LastError(); err != nil {
						t.Fatalf("%s at %dm: %v", r.Name(), i, err)
					}
					ar, ok := r.(*rules.AlertingRule)
					if !ok {
						continue
					}
					for _, a := range ar.ActiveAlerts() {
						if a.State == rules.StateFiring && !slices.Contains(out[i], ar.Name()) {
							out[i] = append(out[i], ar.Name())
						}
					}
				}
			}
		})
	}
	return out
}

// TestAlertsFire runs each alert's failure on the healthy agent through
// Prometheus' rule manager: the alert is not firing yet at quiet (its
// for: or the threshold not reached), fires at fire, and no other alert
// fires; the healthy agent fires nothing in two hours.
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
