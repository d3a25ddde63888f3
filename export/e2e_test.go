package export_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/metership/metership/conf"
	"github.com/metership/metership/engine"
	"github.com/metership/metership/export"
	"github.com/metership/metership/internal/testutil/s3server"
	"github.com/metership/metership/record"
)

// e2eNow is the export's "now": Thursday 2026-12-03 10:20 UTC, so five
// days back cross a month and a week boundary.
var e2eNow = time.Date(2026, 12, 3, 10, 20, 0, 0, time.UTC)

// testRecord is one generated meter record, as the test knows it.
type testRecord struct {
	cust, meter, value, region string // region "" when absent
	millis                     int64
}

func (r testRecord) line() []byte {
	dims := ""
	if r.region != "" {
		dims = fmt.Sprintf(`,"dimensions":{"region":%q,"tier":"gold"}`, r.region)
	}
	return fmt.Appendf(nil, `{"customerId":%q,"meterApiName":%q,"meterValue":%s,"meterTimeInMillis":%d%s}`, r.cust, r.meter, r.value, r.millis, dims)
}

// genRecords spreads n records over the five days before now, plus a few
// from eight days back that no 5-day window may include.
func genRecords(n int) []testRecord {
	rng := rand.New(rand.NewPCG(7, 12))
	custs := []string{"cust-a", "cust-b", "cust-é", "cust-d"}
	meters := []string{"api_calls", "storage_gb", "ignored_meter"}
	regions := []string{"eu", "us", "ap", ""}
	span := int64(5 * 24 * time.Hour / time.Millisecond)
	var out []testRecord
	for i := range n {
		ms := e2eNow.UnixMilli() - 1 - rng.Int64N(span)
		if i%100 == 0 {
			ms = e2eNow.Add(-8 * 24 * time.Hour).UnixMilli()
		}
		v := fmt.Sprintf("%d.%03d", rng.IntN(50), rng.IntN(1000))
		if i%7 == 0 {
			v = fmt.Sprint(rng.IntN(1000)) // integers too
		}
		out = append(out, testRecord{
			cust: custs[rng.IntN(len(custs))], meter: meters[rng.IntN(len(meters))],
			value: v, region: regions[rng.IntN(len(regions))], millis: ms,
		})
	}
	return out
}

// shipRecords pushes the records through the real pipeline (record
// parsing, buffer, gzip NDJSON objects under dated keys) into the bucket.
func shipRecords(t *testing.T, cfg conf.Config, recs []testRecord) {
	t.Helper()
	ctx := context.Background()
	rt, err := engine.Start(ctx, cfg, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	in, err := rt.Pipeline().NewIngester("metership")
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		in.Add(r.line(), record.Origin{ID: "e2e", Offset: int64(i)}, "e2e")
		if in.Full() {
			if err := in.CommitWait(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := in.CommitWait(ctx); err != nil {
		t.Fatal(err)
	}
	if a, rj := in.Counts(); rj != 0 {
		t.Fatalf("rejected %d of %d", rj, a+rj)
	}
	if err := rt.Finish(ctx, true); err != nil {
		t.Fatal(err)
	}
}

func s3Config(t *testing.T, srv *s3server.Server, store string) conf.Config {
	t.Helper()
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey())
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey())
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", "/dev/null")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
	if store == "" {
		store = "file://" + t.TempDir() + "/jobs"
	}
	cfg, err := conf.Parse([]byte(fmt.Sprintf(`
agent:
  id: e2e-agent
buffer:
  dir: %s
  segment_size: 64KiB
  flush_interval: 100ms
output:
  url: s3://%s/ingest/amberdata
  endpoint: %s
  force_path_style: true
jobs:
  api_keys: [%q]
  store: %s
log:
  level: warn
`, t.TempDir(), srv.Bucket(), srv.Endpoint(), testKey, store)))
	if err != nil {
		t.Fatal(err)
	}
	if err := engine.Validate(cfg, nil, false); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestEndToEnd ships five days of records to a real S3 server, then runs
// one-off jobs for every format and bucket (groupBy customerId and a
// dimension; filters, rescales, sparse on and off) and compares every row
// with sums the test computes itself.
func TestEndToEnd(t *testing.T) {
	srv := s3server.Start(t)
	cfg := s3Config(t, srv, "")
	recs := genRecords(6000)
	shipRecords(t, cfg, recs)

	e := newEnv(t, cfg, e2eNow, exportOptions())
	type jobCase struct {
		id     string
		spec   expectSpec
		format string
	}
	var jobs []jobCase
	for fi, format := range []string{"csv", "json", "ndjson"} {
		for bi, bucket := range []string{"hour", "day", "week", "month"} {
			spec := expectSpec{bucket: bucket, rangeD: 5 * 24 * time.Hour, sparse: bi%2 == 0, meters: []string{"api_calls", "storage_gb"}}
			body := map[string]any{
				"jobName": fmt.Sprintf("Usage %s-%s", format, bucket), "s3Url": srv.Bucket() + "/exports/finance",
				"format": format, "aggregationBucket": bucket, "range": "ago(5d)",
				"meterApiNames": spec.meters, "groupBy": []string{"customerId", "region"},
				"sparse": spec.sparse,
			}
			if fi != 1 {
				spec.regions = []string{"eu", "us"}
				body["filter"] = map[string][]string{"region": spec.regions}
			}
			jc := jobCase{format: format}
			if (bi+fi)%2 == 1 {
				spec.coef = big.NewRat(5, 2)
				body["rescaleFunction"] = map[string]any{"function": "multiply", "coefficient": 2.5}
			}
			jc.spec = spec
			jc.id = e.create(body).ID
			jobs = append(jobs, jc)
		}
	}
	if n := e.tick(); n != len(jobs) {
		t.Fatalf("ran %d jobs, want %d", n, len(jobs))
	}
	before := len(srv.ListObjects(t))
	for _, jc := range jobs {
		v := e.get(jc.id)
		lr := v.LastRun
		if lr == nil || lr.Result != export.ResultSuccess {
			t.Fatalf("%s: lastRun %+v", v.JobName, lr)
		}
		body := srv.GetObject(t, lr.Key)
		got := parseOutput(t, jc.format, body)
		want := expectedRows(recs, jc.spec, e2eNow)
		compareRows(t, v.JobName, got, want)
		if lr.Rows != int64(len(want)) || lr.Bytes != int64(len(body)) {
			t.Errorf("%s: lastRun rows %d bytes %d, want %d and %d", v.JobName, lr.Rows, lr.Bytes, len(want), len(body))
		}
		checkManifest(t, srv, lr, body)
	}
	// Re-running a window writes no second object: the scheduler has
	// nothing due, and a forced re-run finds the object there.
	if n := e.tick(); n != 0 {
		t.Fatalf("second tick ran %d jobs", n)
	}
	j, _, err := e.svc.Store.Get(context.Background(), jobs[0].id)
	if err != nil {
		t.Fatal(err)
	}
	again := e.svc.Runner.Run(context.Background(), j, e2eNow)
	if again.Result != export.ResultExists || again.Key != e.get(jobs[0].id).LastRun.Key {
		t.Fatalf("re-run: %+v", again)
	}
	if after := len(srv.ListObjects(t)); after != before {
		t.Fatalf("re-run changed the bucket: %d objects, had %d", after, before)
	}
}

// checkManifest: the manifest beside the object matches it, and names
// only source objects of dates the window can hold.
func checkManifest(t *testing.T, srv *s3server.Server, lr *export.Run, body []byte) {
	t.Helper()
	var m export.Manifest
	if err := json.Unmarshal(srv.GetObject(t, lr.Key+".manifest.json"), &m); err != nil {
		t.Fatalf("manifest of %s: %v", lr.Key, err)
	}
	sum := sha256.Sum256(body)
	if m.SHA256 != hex.EncodeToString(sum[:]) || m.Bytes != int64(len(body)) || m.Rows != lr.Rows || len(m.SourceObjects) == 0 {
		t.Fatalf("manifest %+v does not match the object (%d bytes)", m, len(body))
	}
	// Objects are pruned by their dated keys: every object read has a
	// date the window overlaps.
	for _, k := range m.SourceObjects {
		day, err := time.Parse("01-02-2006", strings.Split(k, "/")[0])
		if err != nil {
			t.Fatalf("source %s: %v", k, err)
		}
		if !day.Before(time.Unix(lr.WindowEnd, 0)) || !day.Add(24*time.Hour).After(time.Unix(lr.WindowStart, 0)) {
			t.Errorf("%s: read %s, outside the window", lr.Key, k)
		}
	}
}

type expectSpec struct {
	bucket  string
	rangeD  time.Duration
	sparse  bool
	meters  []string
	regions []string // nil: no filter
	coef    *big.Rat
}

type outRow struct {
	time, meter, cust, region string
	value                     *big.Rat
}

// floorTo is the test's own bucket arithmetic.
func floorTo(bucket string, t time.Time) time.Time {
	y, m, d := t.Date()
	switch bucket {
	case "hour":
		return time.Date(y, m, d, t.Hour(), 0, 0, 0, time.UTC)
	case "day":
		return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	case "week":
		day := time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
		for day.Weekday() != time.Monday {
			day = day.Add(-24 * time.Hour)
		}
		return day
	}
	return time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
}

func nextOf(bucket string, t time.Time) time.Time {
	switch bucket {
	case "hour":
		return t.Add(time.Hour)
	case "day":
		return t.Add(24 * time.Hour)
	case "week":
		return t.Add(7 * 24 * time.Hour)
	}
	return time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
}

// expectedRows sums recs the way the issue describes an export.
func expectedRows(recs []testRecord, s expectSpec, now time.Time) []outRow {
	start := floorTo(s.bucket, now.Add(-s.rangeD))
	end := floorTo(s.bucket, now)
	if end.Before(now) {
		end = nextOf(s.bucket, end)
	}
	type key struct{ b, meter, cust, region string }
	sums := map[key]*big.Rat{}
	groups := map[[3]string]bool{}
	for _, r := range recs {
		ts := time.UnixMilli(r.millis).UTC()
		if ts.Before(start) || !ts.Before(end) || !contains(s.meters, r.meter) {
			continue
		}
		if s.regions != nil && !contains(s.regions, r.region) {
			continue
		}
		k := key{floorTo(s.bucket, ts).Format(time.RFC3339), r.meter, r.cust, r.region}
		v, _ := new(big.Rat).SetString(r.value)
		if sums[k] == nil {
			sums[k] = new(big.Rat)
		}
		sums[k].Add(sums[k], v)
		groups[[3]string{r.meter, r.cust, r.region}] = true
	}
	if !s.sparse {
		for b := start; b.Before(end); b = nextOf(s.bucket, b) {
			for g := range groups {
				k := key{b.Format(time.RFC3339), g[0], g[1], g[2]}
				if sums[k] == nil {
					sums[k] = new(big.Rat)
				}
			}
		}
	}
	var out []outRow
	for k, v := range sums {
		if s.coef != nil {
			v = new(big.Rat).Mul(v, s.coef)
		}
		out = append(out, outRow{k.b, k.meter, k.cust, k.region, v})
	}
	sortRows(out)
	return out
}

func sortRows(rows []outRow) {
	sort.Slice(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		return a.time+"\x00"+a.meter+"\x00"+a.cust+"\x00"+a.region < b.time+"\x00"+b.meter+"\x00"+b.cust+"\x00"+b.region
	})
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func ratOf(t *testing.T, s string) *big.Rat {
	t.Helper()
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		t.Fatalf("value %q is not a number", s)
	}
	return r
}

// parseOutput reads an export in any format into rows, checking the
// format's shape (CSV header, JSON array, one object per NDJSON line).
func parseOutput(t *testing.T, format string, body []byte) []outRow {
	t.Helper()
	var rows []outRow
	switch format {
	case "csv":
		recs, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(recs[0], ",") != "time,meterApiName,customerId,region,value" {
			t.Fatalf("csv header %v", recs[0])
		}
		for _, r := range recs[1:] {
			rows = append(rows, outRow{r[0], r[1], r[2], r[3], ratOf(t, r[4])})
		}
	case "json", "ndjson":
		var objs []map[string]json.RawMessage
		if format == "json" {
			if err := json.Unmarshal(body, &objs); err != nil {
				t.Fatalf("json: %v", err)
			}
		} else {
			for _, line := range bytes.Split(bytes.TrimSuffix(body, []byte("\n")), []byte("\n")) {
				if len(line) == 0 {
					continue
				}
				var o map[string]json.RawMessage
				if err := json.Unmarshal(line, &o); err != nil {
					t.Fatalf("ndjson line %s: %v", line, err)
				}
				objs = append(objs, o)
			}
		}
		str := func(o map[string]json.RawMessage, k string) string {
			var s string
			if err := json.Unmarshal(o[k], &s); err != nil {
				t.Fatalf("%s in %v: %v", k, o, err)
			}
			return s
		}
		for _, o := range objs {
			if len(o) != 5 {
				t.Fatalf("keys of %v", o)
			}
			rows = append(rows, outRow{str(o, "time"), str(o, "meterApiName"), str(o, "customerId"), str(o, "region"), ratOf(t, string(o["value"]))})
		}
	}
	return rows
}

func compareRows(t *testing.T, name string, got, want []outRow) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d rows, want %d", name, len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		g, w := got[i], want[i]
		if g.time != w.time || g.meter != w.meter || g.cust != w.cust || g.region != w.region || g.value.Cmp(w.value) != 0 {
			t.Errorf("%s row %d: got %v %s, want %v %s", name, i, g, g.value.FloatString(9), w, w.value.FloatString(9))
			return
		}
	}
}

// TestExportReadsJSONArraysUncompressed: objects shipped with
// output.format json and compression none (a plain JSON array each) to a
// file:// output are read back like gzipped NDJSON.
func TestExportReadsJSONArraysUncompressed(t *testing.T) {
	dir := t.TempDir()
	cfg, err := conf.Parse([]byte(fmt.Sprintf(`
agent: {id: json-agent}
buffer: {dir: %s/buf, segment_size: 64KiB, flush_interval: 100ms}
output: {url: "file://%s/out/ingest/amberdata", format: json, compression: none, key_format: "%%Y/%%m/%%d/$UUID.json"}
jobs: {api_keys: [%q], store: "file://%s/jobs"}
log: {level: warn}
`, dir, dir, testKey, dir)))
	if err != nil {
		t.Fatal(err)
	}
	if err := engine.Validate(cfg, nil, false); err != nil {
		t.Fatal(err)
	}
	recs := genRecords(1500)
	shipRecords(t, cfg, recs)
	shipped, _ := filepath.Glob(filepath.Join(dir, "out", "ingest", "amberdata", "2026", "*", "*", "*.json"))
	if len(shipped) == 0 {
		t.Fatal("nothing shipped")
	}
	if first, err := os.ReadFile(shipped[0]); err != nil || len(first) == 0 || first[0] != '[' {
		t.Fatalf("%s is not a plain JSON array: %.20q %v", shipped[0], first, err)
	}
	e := newEnv(t, cfg, e2eNow, exportOptions())
	j := e.create(map[string]any{"jobName": "From JSON", "s3Url": "file://" + dir + "/exports", "format": "ndjson",
		"aggregationBucket": "day", "range": "ago(5d)", "groupBy": []string{"customerId", "region"},
		"meterApiNames": []string{"api_calls", "storage_gb"}, "sparse": false})
	if n := e.tick(); n != 1 {
		t.Fatalf("ran %d", n)
	}
	lr := e.get(j.ID).LastRun
	if lr == nil || lr.Result != export.ResultSuccess || lr.Objects == 0 {
		t.Fatalf("lastRun %+v", lr)
	}
	body, err := os.ReadFile(filepath.Join(dir, "exports", filepath.FromSlash(lr.Key)))
	if err != nil {
		t.Fatal(err)
	}
	spec := expectSpec{bucket: "day", rangeD: 5 * 24 * time.Hour, sparse: false, meters: []string{"api_calls", "storage_gb"}}
	compareRows(t, "From JSON", parseOutput(t, "ndjson", body), expectedRows(recs, spec, e2eNow))
}
