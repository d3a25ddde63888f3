// Package sqltest runs the SQL that /jobs/check returns on a real SQL
// engine, DuckDB, over the objects metership shipped to a real S3 server,
// and compares every row with the export runner's. It is its own Go
// module so the agent stays free of cgo and of DuckDB.
//
// Dialect mapping (Trino/Athena -> DuckDB), done once per connection so
// the SELECT runs exactly as /jobs/check returns it:
//   - the table definition (CREATE EXTERNAL TABLE ... JsonSerDe) becomes a
//     view over read_json of the same gzipped NDJSON files, with the same
//     column types;
//   - four Trino functions DuckDB lacks or spells differently become
//     macros: from_unixtime -> to_timestamp, to_unixtime -> epoch,
//     format_datetime (the one RFC 3339 pattern the SQL uses) -> strftime,
//     element_at(map, key) -> map_extract(map, key)[1] (a value, not a
//     list);
//   - the session time zone is UTC, as Athena's is.
package sqltest

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/duckdb/duckdb-go/v2"

	"github.com/metership/metership/conf"
	"github.com/metership/metership/engine"
	"github.com/metership/metership/export"
	"github.com/metership/metership/internal/testutil/fakeclock"
	"github.com/metership/metership/internal/testutil/s3server"
	"github.com/metership/metership/record"
)

const apiKey = "sqltest-key-0123456789"

var now = time.Date(2026, 12, 3, 10, 20, 0, 0, time.UTC)

// duckdbSetup maps the Trino dialect onto DuckDB (see the package doc).
var duckdbSetup = []string{
	"SET TimeZone = 'UTC'",
	"CREATE MACRO from_unixtime(x) AS to_timestamp(x)",
	"CREATE MACRO to_unixtime(t) AS epoch(t)",
	"CREATE MACRO format_datetime(t, f) AS strftime(t, '%Y-%m-%dT%H:%M:%SZ')",
	"CREATE MACRO element_at(m, k) AS map_extract(m, k)[1]",
}

// duckdbView is the table definition's DuckDB form.
func duckdbView(dir string) string {
	return fmt.Sprintf(`CREATE VIEW %s AS SELECT * FROM read_json(%s, format = 'newline_delimited', compression = 'gzip',
  columns = {customerId: 'VARCHAR', meterApiName: 'VARCHAR', meterValue: 'DECIMAL(38,9)', meterTimeInMillis: 'BIGINT', dimensions: 'MAP(VARCHAR, VARCHAR)', uniqueId: 'VARCHAR'})`,
		export.SQLTable, "'"+filepath.Join(dir, "**", "*.gz")+"'")
}

func TestSQLMatchesRunner(t *testing.T) {
	srv := s3server.Start(t)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey())
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey())
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", "/dev/null")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
	cfg, err := conf.Parse([]byte(fmt.Sprintf(`
agent: {id: sqltest}
buffer: {dir: %s, segment_size: 64KiB, flush_interval: 100ms}
output: {url: "s3://%s/ingest/amberdata", endpoint: %s, force_path_style: true}
jobs: {api_keys: [%q], store: "file://%s/jobs"}
log: {level: warn}
`, t.TempDir(), srv.Bucket(), srv.Endpoint(), apiKey, t.TempDir())))
	if err != nil {
		t.Fatal(err)
	}
	if err := engine.Validate(cfg, nil, false); err != nil {
		t.Fatal(err)
	}
	ship(t, cfg, 5000)

	clock := fakeclock.New(now)
	svc, err := export.New(context.Background(), cfg, export.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(svc.Handler(nil))
	defer api.Close()

	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1) // the macros and the time zone are per connection
	// versitygw's posix backend keeps each object as a file under
	// <root>/<bucket>/<key>: the very bytes S3 serves.
	shipped := filepath.Join(srv.Root(), srv.Bucket(), "ingest", "amberdata")
	for _, q := range append(duckdbSetup, duckdbView(shipped)) {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}

	cases := []map[string]any{
		{"aggregationBucket": "hour", "groupBy": []string{"customerId", "region"}},
		{"aggregationBucket": "day", "groupBy": []string{"customerId", "region"}, "sparse": false, "filter": map[string][]string{"region": {"eu", "us"}}},
		{"aggregationBucket": "week", "groupBy": []string{"region", "bucket"}, "rescaleFunction": map[string]any{"function": "multiply", "coefficient": 0.001}},
		{"aggregationBucket": "month", "groupBy": []string{"customerId"}, "sparse": false, "meterApiNames": []string{"storage_gb"},
			"rescaleFunction": map[string]any{"function": "multiply", "coefficient": 2.5}},
		{"aggregationBucket": "day", "filter": map[string][]string{"customerId": {"cust-a", "cust-b"}}, "minimizeFresh": true},
	}
	for i, c := range cases {
		c["jobName"] = fmt.Sprintf("SQL %d", i)
		c["s3Url"] = srv.Bucket() + "/exports"
		c["format"] = "csv"
		c["range"] = "ago(5d)"
		var check struct {
			Plan  export.Plan
			Query export.Query
		}
		call(t, api.URL, "POST", "/jobs/check", c, http.StatusOK, &check)
		var created struct{ ID string }
		call(t, api.URL, "POST", "/jobs", c, http.StatusCreated, &created)
		if _, err := svc.Scheduler.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
		var view struct{ LastRun *export.Run }
		call(t, api.URL, "GET", "/jobs/"+created.ID, nil, http.StatusOK, &view)
		if view.LastRun == nil || view.LastRun.Result != export.ResultSuccess {
			t.Fatalf("case %d: run %+v", i, view.LastRun)
		}
		runner := readCSV(t, srv.GetObject(t, view.LastRun.Key))
		engineRows := query(t, db, check.Query.SQL)
		if len(runner) < 2 {
			t.Fatalf("case %d: the runner exported no rows", i)
		}
		if len(runner) != len(engineRows) {
			t.Fatalf("case %d: runner %d rows, DuckDB %d\nSQL:\n%s", i, len(runner), len(engineRows), check.Query.SQL)
		}
		for r := range runner {
			if !sameRow(runner[r], engineRows[r]) {
				t.Fatalf("case %d row %d: runner %v, DuckDB %v\nSQL:\n%s", i, r, runner[r], engineRows[r], check.Query.SQL)
			}
		}
		t.Logf("case %d: %d rows equal", i, len(runner))
	}
}

// sameRow compares text columns exactly and the last (value) as numbers.
func sameRow(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if i == len(a)-1 {
			x, ok1 := new(big.Rat).SetString(a[i])
			y, ok2 := new(big.Rat).SetString(b[i])
			return ok1 && ok2 && x.Cmp(y) == 0
		}
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func readCSV(t *testing.T, body []byte) [][]string {
	t.Helper()
	recs, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return recs[1:]
}

func query(t *testing.T, db *sql.DB, q string) [][]string {
	t.Helper()
	rows, err := db.Query(q)
	if err != nil {
		t.Fatalf("DuckDB: %v\n%s", err, q)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		row := make([]string, len(cols))
		for i, v := range vals {
			switch x := v.(type) {
			case duckdb.Decimal:
				r := new(big.Rat).SetFrac(x.Value, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(x.Scale)), nil))
				row[i] = r.RatString()
			case nil:
				row[i] = ""
			default:
				row[i] = fmt.Sprint(x)
			}
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func call(t *testing.T, base, method, path string, body any, want int, out any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, base+path, rd)
	req.Header.Set("X-API-Key", apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatal(err)
		}
	}
}

// ship pushes n records over the five days before now through the real
// pipeline into the bucket.
func ship(t *testing.T, cfg conf.Config, n int) {
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
	rng := rand.New(rand.NewPCG(3, 4))
	custs := []string{"cust-a", "cust-b", `cust-\"q\"`, "cust-d"}
	meters := []string{"api_calls", "storage_gb"}
	regions := []string{"eu", "us", "ap", ""}
	span := int64(6 * 24 * time.Hour / time.Millisecond)
	for i := range n {
		dims := ""
		if r := regions[rng.IntN(len(regions))]; r != "" {
			dims = fmt.Sprintf(`,"dimensions":{"region":"%s"}`, r)
		}
		line := fmt.Sprintf(`{"customerId":"%s","meterApiName":"%s","meterValue":%d.%03d,"meterTimeInMillis":%d%s}`,
			custs[rng.IntN(len(custs))], meters[rng.IntN(len(meters))], rng.IntN(100), rng.IntN(1000),
			now.UnixMilli()-1-rng.Int64N(span), dims)
		in.Add([]byte(line), record.Origin{ID: "sqltest", Offset: int64(i)}, "sqltest")
		if in.Full() {
			if err := in.CommitWait(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := in.CommitWait(ctx); err != nil {
		t.Fatal(err)
	}
	if _, rj := in.Counts(); rj != 0 {
		t.Fatalf("%d records rejected", rj)
	}
	if err := rt.Finish(ctx, true); err != nil {
		t.Fatal(err)
	}
}
