package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/metership/metership/internal/testutil/s3server"
)

// genRecords writes n valid meter records spread over days (crossing UTC
// midnights) and returns the file and the records' customer+value
// signature -> count, to compare with what arrives.
func genRecords(t *testing.T, dir string, n int, start time.Time, span time.Duration) (string, map[string]int) {
	t.Helper()
	var b strings.Builder
	want := map[string]int{}
	for i := 0; i < n; i++ {
		ts := start.Add(time.Duration(int64(span) / int64(n) * int64(i)))
		dims := ""
		if i%3 == 0 {
			dims = fmt.Sprintf(`,"dimensions":{"region":"r%d","tier":"gold"}`, i%4)
		}
		fmt.Fprintf(&b, `{"customerId":"cust-%d","meterApiName":"api-calls","meterValue":%d.5,"meterTimeInMillis":%d%s}`+"\n", i%7, i, ts.UnixMilli(), dims)
		want[fmt.Sprintf("cust-%d/%d.5/%d", i%7, i, ts.UnixMilli())]++
	}
	path := filepath.Join(dir, "records.ndjson")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, want
}

func signature(r map[string]any) string {
	return fmt.Sprintf("%v/%v/%v", r["customerId"], r["meterValue"], r["meterTimeInMillis"])
}

// badLines are one of every kind of input the pipeline must dead-letter,
// with a fragment of the reason each must carry.
var badLines = []struct{ line, reason string }{
	{`{"customerId":"c","meterApiName":"m","meterValue":1,`, "malformed JSON"},
	{`not json at all`, "not a JSON object"},
	{`[1,2,3]`, "not a JSON object"},
	{`{"meterApiName":"m","meterValue":1,"meterTimeInMillis":1654560000000}`, "customerId: missing"},
	{`{"customerId":"c","meterValue":1,"meterTimeInMillis":1654560000000}`, "meterApiName: missing"},
	{`{"customerId":"c","meterApiName":"m","meterTimeInMillis":1654560000000}`, "meterValue: missing"},
	{`{"customerId":"c","meterApiName":"m","meterValue":1}`, "meterTimeInMillis: missing"},
	{`{"customerId":7,"meterApiName":"m","meterValue":1,"meterTimeInMillis":1654560000000}`, "customerId: must be a string"},
	{`{"customerId":"c","meterApiName":"m","meterValue":"1","meterTimeInMillis":1654560000000}`, "meterValue: must be a number"},
	{`{"customerId":"c","meterApiName":"m","meterValue":-3,"meterTimeInMillis":1654560000000}`, "must not be negative"},
	{`{"customerId":"c","meterApiName":"m","meterValue":1e400,"meterTimeInMillis":1654560000000}`, "not a finite number"},
	{`{"customerId":"c","meterApiName":"m","meterValue":1,"meterTimeInMillis":"yesterday"}`, "meterTimeInMillis: must be an integer"},
	{`{"customerId":"c","meterApiName":"m","meterValue":1,"meterTimeInMillis":1654560000}`, "outside 2000-01-01..2100-01-01"},
	{`{"customerId":"c","meterApiName":"m","meterValue":1,"meterTimeInMillis":1654560000000,"dimensions":{"a":1}}`, "dimensions.a: must be a string"},
	{`{"customerId":"","meterApiName":"m","meterValue":1,"meterTimeInMillis":1654560000000}`, "customerId: must not be empty"},
}

func TestShipEndToEnd(t *testing.T) {
	srv := s3server.Start(t)
	dir := t.TempDir()
	start := time.Date(2022, 6, 6, 20, 0, 0, 0, time.UTC)
	good, want := genRecords(t, dir, 3000, start, 3*24*time.Hour)

	// Interleave the bad lines (and a 2 MiB line) with the good ones.
	content, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(content), "\n")
	var mixed strings.Builder
	for i, l := range lines {
		mixed.WriteString(l)
		if i < len(badLines) {
			mixed.WriteString(badLines[i].line + "\n")
		}
	}
	huge := `{"customerId":"` + strings.Repeat("x", 2<<20) + `"}`
	mixed.WriteString(huge + "\n")
	input := filepath.Join(dir, "mixed.ndjson")
	if err := os.WriteFile(input, []byte(mixed.String()), 0o600); err != nil {
		t.Fatal(err)
	}

	cfg := s3Config(t, srv, "", filepath.Join(dir, "buf"), "")
	stdout, stderr, code := runAgent(t, srv, nil, "ship", "-c", cfg, input)
	if code != 0 {
		t.Fatalf("ship exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	mustContain(t, stdout, "records accepted:   3000")
	mustContain(t, stdout, fmt.Sprintf("records rejected:   %d", len(badLines)+1))
	mustContain(t, stdout, "status:             complete")

	got := readBucket(t, srv)
	byID := checkRecordObjects(t, got)
	if len(byID) != 3000 {
		t.Fatalf("shipped %d records, want 3000", len(byID))
	}
	seen := map[string]int{}
	for _, r := range byID {
		seen[signature(r)]++
	}
	for sig, n := range want {
		if seen[sig] != n {
			t.Fatalf("record %s arrived %d times, want %d", sig, seen[sig], n)
		}
	}
	days := map[string]bool{}
	for key := range got.records {
		days[amberKey.FindStringSubmatch(key)[1]] = true
	}
	if len(days) != 4 {
		t.Fatalf("records span 06-06..06-09 but objects are dated %v", slices.Sorted(maps.Keys(days)))
	}

	// Every bad line is in a dead letter with its reason and offset.
	var dead []map[string]any
	for _, d := range got.deadLetters {
		dead = append(dead, d...)
	}
	if len(dead) != len(badLines)+1 {
		t.Fatalf("%d dead letters, want %d", len(dead), len(badLines)+1)
	}
	byLine := map[string]map[string]any{}
	for _, d := range dead {
		if d["source"] != input {
			t.Fatalf("dead letter source %v, want %s", d["source"], input)
		}
		if _, err := d["offset"].(json.Number).Int64(); err != nil {
			t.Fatalf("dead letter without offset: %v", d)
		}
		byLine[d["line"].(string)] = d
	}
	for _, b := range badLines {
		d, ok := byLine[b.line]
		if !ok {
			t.Fatalf("bad line %q not dead-lettered", b.line)
		}
		if !strings.Contains(d["reason"].(string), b.reason) {
			t.Fatalf("dead letter for %q has reason %q, want %q", b.line, d["reason"], b.reason)
		}
	}
	var tooLong bool
	for line, d := range byLine {
		if strings.HasPrefix(line, `{"customerId":"xxx`) && strings.Contains(d["reason"].(string), "max_line_size") {
			tooLong = len(line) <= 1<<20
		}
	}
	if !tooLong {
		t.Fatal("the 2 MiB line was not dead-lettered (truncated to max_line_size) with its reason")
	}

	// Shipping the same file again sends nothing twice: the checkpoint in
	// the buffer says it is done.
	before := srv.ListObjects(t)
	stdout, stderr, code = runAgent(t, srv, nil, "ship", "-c", cfg, input)
	if code != 0 {
		t.Fatalf("second ship exit %d: %s %s", code, stdout, stderr)
	}
	mustContain(t, stdout, "records accepted:   0")
	if after := srv.ListObjects(t); len(after) != len(before) {
		t.Fatalf("second ship of the same file wrote %d new objects", len(after)-len(before))
	}
}

func TestShipStdinAndFileOutput(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "m.yaml")
	out := filepath.Join(dir, "out", "ingest", "amberdata")
	y := fmt.Sprintf("buffer:\n  dir: %s\noutput:\n  url: file://%s\n  compression: none\nlog:\n  level: warn\n", filepath.Join(dir, "buf"), out)
	if err := os.WriteFile(cfgPath, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	in := `{"customerId":"c1","meterApiName":"m","meterValue":2,"meterTimeInMillis":1654560000000,"uniqueId":"keep-me"}` + "\n" + "oops\n"
	cmd := exec.Command(binPath, "ship", "-c", cfgPath, "-")
	cmd.Stdin = strings.NewReader(in)
	outb, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, outb)
	}
	files, _ := filepath.Glob(filepath.Join(out, "06-07-2022", "*.gz"))
	if len(files) != 1 {
		t.Fatalf("want one object under %s, got %v\n%s", out, files, outb)
	}
	body, _ := os.ReadFile(files[0])
	if string(body) != `{"customerId":"c1","meterApiName":"m","meterValue":2,"meterTimeInMillis":1654560000000,"uniqueId":"keep-me"}`+"\n" {
		t.Fatalf("object body %q", body)
	}
	dl, _ := filepath.Glob(filepath.Join(dir, "out", "failed-requests", "*", "*.gz"))
	if len(dl) != 1 {
		t.Fatalf("want one dead-letter object beside ingest/, got %v", dl)
	}
	body, _ = os.ReadFile(dl[0])
	if !strings.Contains(string(body), `"line":"oops"`) || !strings.Contains(string(body), `"source":"stdin"`) {
		t.Fatalf("dead letter %s", body)
	}
}

// TestShipSmallBuffer: with the smallest buffer, lines whose dead letters
// would not fit (a long line of control characters escapes to six bytes a
// byte; a 2 MiB line) are dead-lettered shortened, and everything else
// ships: ship never fails for the size of an input line.
func TestShipSmallBuffer(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "m.yaml")
	out := filepath.Join(dir, "out", "ingest", "amberdata")
	y := fmt.Sprintf("buffer:\n  dir: %s\n  max_size: 128KiB\n  segment_size: 64KiB\noutput:\n  url: file://%s\nlog:\n  level: warn\n", filepath.Join(dir, "buf"), out)
	if err := os.WriteFile(cfgPath, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	var in strings.Builder
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&in, `{"customerId":"c%d","meterApiName":"m","meterValue":%d,"meterTimeInMillis":1654560000000}`+"\n", i, i)
		if i == 700 {
			in.WriteString(strings.Repeat("\x01", 30000) + "\n")
		}
		if i == 1400 {
			in.WriteString(`{"customerId":"` + strings.Repeat("y", 2<<20) + "\"}\n")
		}
	}
	cmd := exec.Command(binPath, "ship", "-c", cfgPath, "-")
	cmd.Stdin = strings.NewReader(in.String())
	outb, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, outb)
	}
	mustContain(t, string(outb), "records accepted:   2000")
	mustContain(t, string(outb), "records rejected:   2 (dead-lettered)")
	mustContain(t, string(outb), "status:             complete")
}

// TestShipUnreadableInputDoesNotStopTheOthers: a missing input is named on
// stderr and in the status, the exit code is 1, and the other inputs are
// shipped completely.
func TestShipUnreadableInputDoesNotStopTheOthers(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "m.yaml")
	out := filepath.Join(dir, "out", "ingest", "amberdata")
	y := fmt.Sprintf("buffer:\n  dir: %s\noutput:\n  url: file://%s\nlog:\n  level: warn\n", filepath.Join(dir, "buf"), out)
	if err := os.WriteFile(cfgPath, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.ndjson")
	if err := os.WriteFile(good, []byte(`{"customerId":"c","meterApiName":"m","meterValue":1,"meterTimeInMillis":1654560000000}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.ndjson")
	cmd := exec.Command(binPath, "ship", "-c", cfgPath, missing, good)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want 1\n%s%s", err, stdout.String(), stderr.String())
	}
	mustContain(t, stderr.String(), missing+": open "+missing+": no such file or directory")
	mustContain(t, stdout.String(), "records accepted:   1")
	mustContain(t, stdout.String(), "not read (fully): "+missing)
	if files, _ := filepath.Glob(filepath.Join(out, "06-07-2022", "*.gz")); len(files) != 1 {
		t.Fatalf("the readable input was not shipped: %v\n%s", files, stdout.String())
	}
}
