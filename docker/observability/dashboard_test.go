package observability

import (
	"encoding/json"
	"testing"
)

// wantPanelMetrics are the metrics the panels read: the dashboard
// must query each of them.
var wantPanelMetrics = []string{
	// records in / rejected / shipped
	"metership_records_accepted_total", "metership_records_rejected_total", "metership_records_shipped_total",
	// end-to-end lag
	"metership_oldest_pending_seconds", "metership_tail_file_size_bytes", "metership_tail_file_offset_bytes",
	// buffer fill against buffer.max_size
	"metership_buffer_bytes", "metership_buffer_max_bytes",
	// uploads, failures, duration, back-pressure, dead letters
	"metership_uploads_total", "metership_upload_failures_total", "metership_upload_duration_seconds_bucket",
	"metership_backpressure_seconds_total", "metership_dead_letters_shipped_total",
	// metering
	"metership_metering_hours_reported_total", "metership_metering_hours_pending", "metership_metering_hours_carried_total",
	"metership_metering_usage_unbilled_total", "metership_metering_hours_conflicted_total",
	"metership_metering_customers_not_subscribed", "metership_metering_quantity_reported_total",
	"metership_metering_oldest_pending_hour_seconds", "metership_metering_window_seconds",
	// export runs
	"metership_export_runs_total", "metership_export_run_duration_seconds_bucket",
	// replicas: partials, claims, late partials carried, heartbeats
	"metership_metering_shared_partials_written_total", "metership_metering_shared_hours_claimed_total",
	"metership_metering_shared_partials_late_total", "metership_metering_shared_replicas_stalled",
}

// TestDashboard checks the Grafana dashboard: a current schema version, a
// datasource variable every panel and query uses, a multi-valued
// instance variable every query filters on, unique panel ids, panels
// that do not overlap, and a query for each of the panels.
func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.SchemaVersion < 39 || d.UID == "" || d.Title == "" {
		t.Errorf("schemaVersion %d (want >= 39, Grafana 11+), uid %q, title %q", d.SchemaVersion, d.UID, d.Title)
	}
	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if ds, ok := vars["datasource"]; !ok || ds.Type != "datasource" || string(ds.Query) != `"prometheus"` {
		t.Errorf("want a variable datasource of type datasource, query prometheus: %+v", ds)
	}
	inst, ok := vars["instance"]
	if !ok || inst.Type != "query" || !inst.Multi || !inst.IncludeAll || inst.Datasource == nil || inst.Datasource.UID != "${datasource}" {
		t.Errorf("want a multi-valued instance query variable on ${datasource}: %+v", inst)
	}
	var q struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(inst.Query, &q); err != nil || q.Query != inst.Definition {
		t.Errorf("instance variable: query %s and definition %q differ (%v)", inst.Query, inst.Definition, err)
	}

	ids := map[int]bool{}
	type cell struct{ x, y int }
	used := map[cell]string{}
	read := map[string]bool{}
	for _, p := range d.allPanels() {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		for x := p.GridPos.X; x < p.GridPos.X+p.GridPos.W; x++ {
			for y := p.GridPos.Y; y < p.GridPos.Y+p.GridPos.H; y++ {
				if other, ok := used[cell{x, y}]; ok {
					t.Errorf("panels %q and %q overlap at %d,%d", other, p.Title, x, y)
				}
				used[cell{x, y}] = p.Title
			}
		}
		if p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q is wider than the grid", p.Title)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want ${datasource}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q target %s: datasource %+v, want ${datasource}", p.Title, tg.RefID, tg.Datasource)
			}
			expr, err := substitute(tg.Expr)
			if err != nil {
				t.Errorf("panel %q target %s: %v", p.Title, tg.RefID, err)
				continue
			}
			parsed, err := promParser.ParseExpr(expr)
			if err != nil {
				t.Errorf("panel %q target %s: %v", p.Title, tg.RefID, err)
				continue
			}
			for _, sel := range metricSelectors(parsed) {
				read[sel.name] = true
				if !sel.filtersInstance {
					t.Errorf("panel %q target %s: %s is not filtered by instance=~\"$instance\"", p.Title, tg.RefID, sel.name)
				}
			}
		}
	}
	for _, m := range wantPanelMetrics {
		if !read[m] {
			t.Errorf("no panel reads %s", m)
		}
	}
}
