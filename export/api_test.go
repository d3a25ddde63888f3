package export_test

import (
	"encoding/json"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/metership/metership/export"
)

var t0 = time.Date(2026, 11, 20, 10, 20, 0, 0, time.UTC)

func valid() map[string]any {
	return map[string]any{
		"jobName": "Monthly usage (all), v-2", "s3Url": "file:///tmp/exports", "format": "csv",
		"aggregationBucket": "day", "range": "ago(7d)",
	}
}

func with(kv ...any) map[string]any {
	m := valid()
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(m, kv[i].(string))
			continue
		}
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

// TestValidation checks every rule through the HTTP API: the status and
// exactly the fields named in the error body.
func TestValidation(t *testing.T) {
	e := newEnv(t, fileConfig(t), t0, exportOptions())
	cases := []struct {
		name   string
		body   any
		status int
		fields []string
	}{
		{"valid", valid(), 201, nil},
		{"valid everything", with("jobName", "Everything", "description", "d", "endTimeOffset", "ago(1h)", "cron", "0 6 * * 1",
			"email", "finance@example.com", "enabled", false, "sparse", false, "minimizeFresh", true,
			"meterApiNames", []string{"api_calls"}, "groupBy", []string{"customerId", "region"},
			"filter", map[string][]string{"region": {"eu"}}, "rescaleFunction", map[string]any{"function": "multiply", "coefficient": 0.001}), 201, nil},
		{"bare bucket/path", with("jobName", "Bare", "s3Url", "my-bucket/exports/finance"), 201, nil},
		{"s3 scheme", with("jobName", "S3", "s3Url", "s3://my-bucket/exports"), 201, nil},
		{"everything missing", map[string]any{}, 400, []string{"aggregationBucket", "format", "jobName", "range", "s3Url"}},
		{"name characters", with("jobName", "bad/name!"), 400, []string{"jobName"}},
		{"name too long", with("jobName", strings.Repeat("a", 101)), 400, []string{"jobName"}},
		{"format", with("format", "xml"), 400, []string{"format"}},
		{"bucket", with("aggregationBucket", "year"), 400, []string{"aggregationBucket"}},
		{"range no ago", with("range", "7d"), 400, []string{"range"}},
		{"range zero", with("range", "ago(0d)"), 400, []string{"range"}},
		{"range unit", with("range", "ago(7w)"), 400, []string{"range"}},
		{"range too long", with("range", "ago(2000d)"), 400, []string{"range"}},
		{"endTimeOffset", with("endTimeOffset", "ago(x)"), 400, []string{"endTimeOffset"}},
		{"endTimeOffset past range", with("endTimeOffset", "ago(8d)"), 400, []string{"endTimeOffset"}},
		{"groupBy record field", with("groupBy", []string{"meterValue"}), 400, []string{"groupBy[0]"}},
		{"cron and scheduled", with("cron", "0 * * * *", "scheduledTimeInSeconds", 1790000000), 400, []string{"cron", "scheduledTimeInSeconds"}},
		{"bad cron", with("cron", "61 * * * *"), 400, []string{"cron"}},
		{"cron 4 fields", with("cron", "* * * *"), 400, []string{"cron"}},
		{"cron descriptor", with("cron", "@daily"), 400, []string{"cron"}},
		{"scheduled negative", with("scheduledTimeInSeconds", -5), 400, []string{"scheduledTimeInSeconds"}},
		{"scheduled not a number", with("scheduledTimeInSeconds", "soon"), 400, []string{"scheduledTimeInSeconds"}},
		{"email", with("email", "not-an-email"), 400, []string{"email"}},
		{"unknown function", with("rescaleFunction", map[string]any{"function": "divide", "coefficient": 2}), 400, []string{"rescaleFunction.function"}},
		{"negative coefficient", with("rescaleFunction", map[string]any{"function": "multiply", "coefficient": -2}), 400, []string{"rescaleFunction.coefficient"}},
		{"rescale unknown key", with("rescaleFunction", map[string]any{"function": "multiply", "coefficient": 2, "offset": 1}), 400, []string{"rescaleFunction"}},
		{"unknown field", with("sprase", true), 400, []string{"sprase"}},
		{"wrong types", with("sparse", "yes", "enabled", 1, "groupBy", "region"), 400, []string{"enabled", "groupBy", "sparse"}},
		{"groupBy reserved", with("groupBy", []string{"time"}), 400, []string{"groupBy[0]"}},
		{"groupBy twice", with("groupBy", []string{"region", "region"}), 400, []string{"groupBy[1]"}},
		{"filter empty", with("filter", map[string][]string{"region": {}}), 400, []string{"filter.region"}},
		{"s3Url scheme", with("s3Url", "gs://bucket/x"), 400, []string{"s3Url"}},
		{"s3Url bucket", with("s3Url", "Bad_Bucket/x"), 400, []string{"s3Url"}},
		{"many at once", map[string]any{"jobName": "x!", "s3Url": "s3://", "format": "xml", "aggregationBucket": "year", "range": "7d", "bogus": 1},
			400, []string{"aggregationBucket", "bogus", "format", "jobName", "range", "s3Url"}},
		{"not json", "{", 400, []string{"body"}},
		{"not an object", "[1]", 400, []string{"body"}},
		{"id on create", with("jobName", "With id", "id", "abc"), 400, []string{"id"}},
		{"duplicate name", valid(), 409, []string{"jobName"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, raw := e.do("POST", "/jobs", c.body, nil)
			if st != c.status {
				t.Fatalf("status %d, want %d: %s", st, c.status, raw)
			}
			if c.status < 300 {
				return
			}
			if got := errorFields(t, raw); !reflect.DeepEqual(got, c.fields) {
				t.Fatalf("fields %v, want %v: %s", got, c.fields, raw)
			}
		})
	}
	// The same rules hold for /jobs/check and PUT.
	if st, raw := e.do("POST", "/jobs/check", with("format", "xml", "sprase", 1), nil); st != 400 || !reflect.DeepEqual(errorFields(t, raw), []string{"format", "sprase"}) {
		t.Fatalf("check: %d %s", st, raw)
	}
	if st, raw := e.do("PUT", "/jobs", valid(), nil); st != 400 || !reflect.DeepEqual(errorFields(t, raw), []string{"id"}) {
		t.Fatalf("put without id: %d %s", st, raw)
	}
	if st, raw := e.do("PUT", "/jobs", with("id", "nonexistent"), nil); st != 404 {
		t.Fatalf("put unknown id: %d %s", st, raw)
	}
}

func errorFields(t *testing.T, raw []byte) []string {
	t.Helper()
	var body struct {
		Errors []struct{ Field, Message string }
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("error body %s: %v", raw, err)
	}
	var fields []string
	for _, e := range body.Errors {
		if e.Message == "" {
			t.Errorf("field %s without a message", e.Field)
		}
		fields = append(fields, e.Field)
	}
	sort.Strings(fields)
	return fields
}

// TestAuth: every route answers 401 without a key or with a wrong one,
// and works with the right one.
func TestAuth(t *testing.T) {
	e := newEnv(t, fileConfig(t), t0, exportOptions())
	j := e.create(valid())
	routes := []struct {
		method, path string
		body         any
		ok           int
	}{
		{"GET", "/jobs", nil, 200},
		{"GET", "/jobs/" + j.ID, nil, 200},
		{"POST", "/jobs/check", valid(), 200},
		{"PUT", "/jobs", with("id", j.ID, "description", "x"), 200},
		{"POST", "/jobs", with("jobName", "Another"), 201},
		{"DELETE", "/jobs/" + j.ID, nil, 204},
		{"GET", "/jobs/nothing-here", nil, 404},
		{"PATCH", "/jobs", nil, 405},
	}
	for _, r := range routes {
		for _, key := range []string{"", "wrong-key-0123456789", testKey + "x", testKey[:len(testKey)-1]} {
			st, raw := doKey(t, e.http.URL, key, r.method, r.path, r.body, nil)
			if st != http.StatusUnauthorized || !strings.Contains(string(raw), "X-API-Key") {
				t.Errorf("%s %s with key %q: %d %s, want 401", r.method, r.path, key, st, raw)
			}
		}
	}
	for _, r := range routes {
		if st, raw := e.do(r.method, r.path, r.body, nil); st != r.ok {
			t.Errorf("%s %s with the key: %d %s, want %d", r.method, r.path, st, raw, r.ok)
		}
	}
}

// TestCRUD: create, get, list, update with updateTime, check, delete.
func TestCRUD(t *testing.T) {
	e := newEnv(t, fileConfig(t), t0, exportOptions())
	j := e.create(with("groupBy", []string{"region", "customerId"}, "meterApiNames", []string{"b", "a", "b"}))
	if j.ID == "" || j.CreateTime != t0.UnixMilli() || j.UpdateTime != t0.UnixMilli() {
		t.Fatalf("create: %+v", j)
	}
	if !reflect.DeepEqual(j.MeterAPINames, []string{"a", "b"}) || !reflect.DeepEqual(j.GroupBy, []string{"region", "customerId"}) {
		t.Fatalf("not normalized: %+v", j)
	}
	got := e.get(j.ID)
	if got.JobName != j.JobName || got.LastRun != nil {
		t.Fatalf("get: %+v", got)
	}
	var list []jobView
	if st, _ := e.do("GET", "/jobs", nil, &list); st != 200 || len(list) != 1 {
		t.Fatalf("list: %d %+v", st, list)
	}
	// A GET body can be PUT back with a change; a stale updateTime is 409.
	e.clock.Set(t0.Add(time.Minute))
	body := map[string]any{}
	_, raw := e.do("GET", "/jobs/"+j.ID, nil, &body)
	_ = raw
	body["description"] = "changed"
	var upd jobView
	if st, raw := e.do("PUT", "/jobs", body, &upd); st != 200 || upd.Description != "changed" || upd.UpdateTime != t0.Add(time.Minute).UnixMilli() || upd.CreateTime != j.CreateTime {
		t.Fatalf("put: %d %s", st, raw)
	}
	body["description"] = "stale"
	if st, raw := e.do("PUT", "/jobs", body, nil); st != 409 {
		t.Fatalf("stale put: %d %s", st, raw)
	}
	var chk struct {
		Job   export.Job
		Plan  export.Plan
		Key   string
		Query struct{ Table, SQL string }
	}
	if st, raw := e.do("POST", "/jobs/check", with("aggregationBucket", "week", "range", "ago(3d)", "s3Url", "s3://bucket/exports"), &chk); st != 200 {
		t.Fatalf("check: %d %s", st, raw)
	}
	// t0 is Friday 2026-11-20 10:20: three days back is Tuesday the 17th,
	// widened to Monday the 16th; the end to next Monday.
	if chk.Plan.Start != "2026-11-16T00:00:00Z" || chk.Plan.End != "2026-11-23T00:00:00Z" || chk.Plan.StartTimeSeconds != 1794787200 {
		t.Fatalf("plan window: %+v", chk.Plan)
	}
	if chk.Key != "s3://bucket/exports/Monthly usage (all), v-2/20261116T000000Z_20261123T000000Z.csv" {
		t.Fatalf("key: %s", chk.Key)
	}
	if !strings.Contains(chk.Query.Table, "CREATE EXTERNAL TABLE") || !strings.Contains(chk.Query.SQL, "date_trunc('week'") {
		t.Fatalf("query: %+v", chk.Query)
	}
	if st, _ := e.do("DELETE", "/jobs/"+j.ID, nil, nil); st != 204 {
		t.Fatalf("delete: %d", st)
	}
	if st, _ := e.do("GET", "/jobs/"+j.ID, nil, nil); st != 404 {
		t.Fatalf("get after delete: %d", st)
	}
	if st, _ := e.do("DELETE", "/jobs/"+j.ID, nil, nil); st != 404 {
		t.Fatalf("delete twice: %d", st)
	}
}
