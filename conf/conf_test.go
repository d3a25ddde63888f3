package conf

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDefaultsAreValid(t *testing.T) {
	cfg, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Check(false); err != nil {
		t.Fatalf("embedded defaults invalid:\n%v", err)
	}
	if cfg.Output.URL != "file://./out/ingest/amberdata" || cfg.Output.KeyFormat != "%m-%d-%Y/$UUID.gz" {
		t.Fatalf("unexpected defaults %+v", cfg.Output)
	}
}

func TestParseFull(t *testing.T) {
	t.Setenv("MS_BUCKET", "billing")
	y := `
sources:
  - paths: ["/var/log/app/*.log"]
    start_at: end
records:
  format: json
  fields:
    customerId: tenant.id
    meterApiName: '"api-calls"'
buffer:
  dir: /var/lib/metership
  max_size: 2GiB
  segment_size: 4MiB
  flush_interval: 30s
output:
  url: s3://${MS_BUCKET}/ingest/amberdata
  region: ${MS_REGION:-eu-west-1}
  acl: bucket-owner-full-control
  tags: {team: billing}
metering:
  mode: batch_meter_usage
  product_code: prod-1
  dimensions: {api-calls: "api_calls*0.001"}
`
	cfg, err := Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Check(true); err != nil {
		t.Fatal(err)
	}
	if cfg.Output.URL != "s3://billing/ingest/amberdata" || cfg.Output.Region != "eu-west-1" {
		t.Fatalf("env not expanded: %+v", cfg.Output)
	}
	if cfg.Buffer.MaxSize != 2<<30 || cfg.Buffer.SegmentSize != 4<<20 || cfg.Buffer.FlushInterval.D().Seconds() != 30 {
		t.Fatalf("sizes/durations: %+v", cfg.Buffer)
	}
	s := cfg.Sources[0]
	if s.Type != "tail" || s.StartAt != "end" || s.Tag != "metership" {
		t.Fatalf("source defaults: %+v", s)
	}
	// 6h in batch mode too: BatchMeterUsage refuses records 6 hours or
	// more after the event, like MeterUsage.
	if cfg.Metering.Window.D().Hours() != 6 || cfg.Metering.Region != "eu-west-1" {
		t.Fatalf("metering derived defaults: %+v", cfg.Metering)
	}
	// The effective config renders and parses back to the same thing.
	again, err := Parse([]byte(cfg.YAML()))
	if err != nil {
		t.Fatalf("rendered config does not parse: %v\n%s", err, cfg.YAML())
	}
	if again.YAML() != cfg.YAML() {
		t.Fatalf("round trip differs:\n%s\n---\n%s", cfg.YAML(), again.YAML())
	}
}

// TestParseErrors: every key that is unknown or whose value does not
// parse is reported at once, each with its key path, line, what is wrong
// and what is accepted; the values that parse are kept.
func TestParseErrors(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"unknown section", "outptu:\n  url: x\n",
			"outptu (line 1): unknown key; use one of agent, sources, records, buffer, output, metering, jobs, server, log"},
		{"unknown key", "buffer:\n  dir: /d\n  segmnt_size: 8MiB\n",
			"buffer.segmnt_size (line 3): unknown key; use one of dir, max_size, segment_size, flush_interval, sync, sync_interval"},
		{"size", "buffer:\n  max_size: lots\n",
			`buffer.max_size (line 2): "lots" is not a size; use e.g. 8MiB, 1GiB, 1048576`},
		{"duration", "buffer:\n  flush_interval: soon\n",
			`buffer.flush_interval (line 2): "soon" is not a duration; use e.g. 60s, 5m, 1h`},
		{"integer", "output:\n  concurrency: two\n",
			`output.concurrency (line 2): "two" is not an integer`},
		{"boolean", "output:\n  force_path_style: maybe\n",
			`output.force_path_style (line 2): "maybe" is not a boolean (true or false)`},
		{"enum", "buffer:\n  sync: sometimes\nmetering:\n  mode: hourly\n",
			`buffer.sync (line 2): "sometimes" not supported; use always, interval, never` + "\n" +
				`metering.mode (line 4): "hourly" not supported; use off, meter_usage, batch_meter_usage`},
		{"section not a mapping", "buffer: [a]\n",
			"buffer (line 1): got a list; use a mapping of dir, max_size, segment_size, flush_interval, sync, sync_interval"},
		{"list expected", "sources:\n  - paths: /var/log/x.log\n",
			`sources[0].paths (line 2): got "/var/log/x.log"; use a list (e.g. [a, b])`},
		{"string expected", "output:\n  tags:\n    team: [a, b]\n",
			"output.tags.team (line 3): got a list; use a string"},
		{"key in a list entry", "sources:\n  - paths: [x]\n    tags: y\n",
			"sources[0].tags (line 3): unknown key; use one of type, paths, exclude, start_at, tag, refresh_interval, rotate_wait"},
		{"duplicate key", "log:\n  level: info\n  level: debug\n",
			"log.level (line 3): duplicate key; set it once"},
		{"not a mapping", "- a\n",
			"(top level) (line 1): the configuration is a list; use a mapping of sections (agent, sources, records, buffer, output, metering, jobs, server, log)"},
		{"all at once", "buffer:\n  max_size: lots\n  segmnt_size: 1\noutput:\n  concurrency: two\n",
			`buffer.max_size (line 2): "lots" is not a size; use e.g. 8MiB, 1GiB, 1048576` + "\n" +
				"buffer.segmnt_size (line 3): unknown key; use one of dir, max_size, segment_size, flush_interval, sync, sync_interval\n" +
				`output.concurrency (line 5): "two" is not an integer`},
		{"unset variable", "output:\n  url: s3://${NOPE_NOT_SET}/x\n",
			"environment variable(s) not set: NOPE_NOT_SET (use ${NAME:-default} for optional ones)"},
		{"syntax", "buffer:\n  dir: [x\n",
			"line 1: did not find expected ',' or ']'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil || err.Error() != tt.want {
				t.Errorf("err =\n%v\nwant\n%s", err, tt.want)
			}
		})
	}
}

// TestParseKeepsWhatParses: next to a value that does not parse, the
// others are read (so the rules can check them in the same pass), and
// every key's line is known.
func TestParseKeepsWhatParses(t *testing.T) {
	cfg, err := Parse([]byte("buffer:\n  max_size: lots\n  dir: /d\noutput:\n  url: ftp://x\n"))
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 1 {
		t.Fatalf("err = %v", err)
	}
	if cfg.Buffer.Dir != "/d" || cfg.Output.URL != "ftp://x" || cfg.Buffer.MaxSize != Default().Buffer.MaxSize {
		t.Fatalf("cfg %+v %+v", cfg.Buffer, cfg.Output)
	}
	if cfg.Line("output.url") != 5 || cfg.Line("buffer") != 1 || cfg.Line("log.level") != 0 {
		t.Fatalf("lines: output.url %d buffer %d log.level %d", cfg.Line("output.url"), cfg.Line("buffer"), cfg.Line("log.level"))
	}
}

// TestReport: rule problems get their lines, those about a key that did
// not parse are dropped (the key kept its default), and all are sorted by
// key.
func TestReport(t *testing.T) {
	cfg, err := Parse([]byte("buffer:\n  max_size: lots\n  segment_size: 1KiB\nlog:\n  level: loud\n"))
	got := cfg.Report(err, cfg.Check(false), Errors{{Key: "buffer.max_size", Msg: "about the default"}})
	want := `buffer.max_size (line 2): "lots" is not a size; use e.g. 8MiB, 1GiB, 1048576` + "\n" +
		"buffer.segment_size (line 3): 1KiB must be between 64KiB and 1GiB\n" +
		`log.level (line 5): "loud" not supported; use debug, info, warn, error`
	if got == nil || got.Error() != want {
		t.Fatalf("got\n%v\nwant\n%s", got, want)
	}
	if err := cfg.Report(nil); err != nil {
		t.Fatalf("no problems: %v", err)
	}
}

func TestRunNeedsSources(t *testing.T) {
	cfg, _ := Parse(nil)
	err := cfg.Check(true)
	if err == nil || !strings.Contains(err.Error(), "sources: no sources configured") {
		t.Fatalf("got %v", err)
	}
}

func TestFromProperties(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "m.yaml")
	if err := os.WriteFile(file, []byte("output:\n  url: s3://from-file/x\n  region: eu-west-2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	props := map[string]string{
		"config_file":              file,
		"output_region":            "ap-south-1",
		"output_force_path_style":  "on",
		"buffer_dir":               "/tmp/b",
		"buffer_max_size":          "64MiB",
		"buffer_flush_interval":    "15",
		"records_format":           "json",
		"records_fields":           "customerId=tenant.id, meterValue=bytes",
		"metering_allocation_tags": "team,env",
		"output_concurrency":       "4",
	}
	cfg, err := FromProperties(func(k string) string { return props[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Output.URL != "s3://from-file/x" || cfg.Output.Region != "ap-south-1" || !cfg.Output.ForcePathStyle {
		t.Fatalf("output %+v", cfg.Output)
	}
	if cfg.Buffer.Dir != "/tmp/b" || cfg.Buffer.MaxSize != 64<<20 || cfg.Buffer.FlushInterval.D().Seconds() != 15 {
		t.Fatalf("buffer %+v", cfg.Buffer)
	}
	if cfg.Records.Fields["customerId"] != "tenant.id" || cfg.Records.Fields["meterValue"] != "bytes" {
		t.Fatalf("fields %v", cfg.Records.Fields)
	}
	if strings.Join(cfg.Metering.AllocationTags, "|") != "team|env" || cfg.Output.Concurrency != 4 {
		t.Fatalf("lists/ints %+v", cfg.Metering)
	}
	if err := cfg.Check(false); err != nil {
		t.Fatal(err)
	}
}

func TestFromPropertiesErrorsNameTheProperty(t *testing.T) {
	tests := []struct{ name, value, want string }{
		{"buffer_max_size", "huge", `buffer_max_size: "huge" is not a size`},
		{"output_force_path_style", "maybe", `output_force_path_style: "maybe" is not a boolean`},
		{"output_concurrency", "two", `output_concurrency: "two" is not an integer`},
		{"records_fields", "customerId", `records_fields: "customerId" is not key=value`},
		{"buffer_sync", "sometimes", `buffer_sync: "sometimes" not supported; use always, interval, never`},
		{"metering_mode", "hourly", `metering_mode: "hourly" not supported; use off, meter_usage, batch_meter_usage`},
		{"config_file", "/nonexistent/m.yaml", "config_file: config: open /nonexistent/m.yaml"},
	}
	for _, tt := range tests {
		_, err := FromProperties(func(k string) string {
			if k == tt.name {
				return tt.value
			}
			return ""
		})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s=%s: err = %v, want %q", tt.name, tt.value, err, tt.want)
		}
	}
}

func TestPropertiesCoverEverySection(t *testing.T) {
	names := map[string]bool{}
	for _, p := range Properties() {
		names[p.Name] = true
	}
	for _, want := range []string{"output_url", "output_key_format", "output_endpoint", "output_force_path_style", "output_region", "output_role_arn", "buffer_dir", "buffer_max_size", "buffer_flush_interval", "records_format", "records_fields", "metering_mode", "metering_product_code", "agent_id", "log_level"} {
		if !names[want] {
			t.Errorf("missing property %s", want)
		}
	}
}

func TestSizes(t *testing.T) {
	tests := map[string]Size{"8MiB": 8 << 20, "1GiB": 1 << 30, "10MB": 10e6, "64k": 64 << 10, "1048576": 1 << 20, "1.5KiB": 1536}
	for in, want := range tests {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "MiB", "-1", "5 parsecs"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
}
