package conf

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultsAreValid(t *testing.T) {
	cfg, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(false); err != nil {
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
	if err := cfg.Validate(true); err != nil {
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

func TestParseErrors(t *testing.T) {
	tests := []struct{ yaml, want string }{
		{"outptu:\n  url: x\n", "field outptu not found"},
		{"buffer:\n  max_size: lots\n", `"lots" is not a size`},
		{"buffer:\n  flush_interval: soon\n", `"soon" is not a duration`},
		{"output:\n  url: s3://${NOPE_NOT_SET}/x\n", "environment variable(s) not set: NOPE_NOT_SET"},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.yaml))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: err = %v, want %q", tt.yaml, err, tt.want)
		}
	}
}

// TestValidateNamesEveryKey: each broken setting is reported with its key,
// and all of them at once.
func TestValidateNamesEveryKey(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		key    string
		msg    string
	}{
		{"ftp", func(c *Config) { c.Output.URL = "ftp://x/y" }, "output.url", `scheme "ftp" not supported; use s3:// or file://`},
		{"no bucket", func(c *Config) { c.Output.URL = "s3:///prefix" }, "output.url", "has no bucket"},
		{"no scheme", func(c *Config) { c.Output.URL = "bucket/prefix" }, "output.url", "has no scheme"},
		{"bucket name", func(c *Config) { c.Output.URL = "s3://Billing_Bucket/x" }, "output.url", `bucket name "Billing_Bucket": character 'B' not allowed`},
		{"file host", func(c *Config) { c.Output.URL = "file://server/x" }, "output.url", `host "server" not supported`},
		{"empty url", func(c *Config) { c.Output.URL = "" }, "output.url", "required"},
		{"key format", func(c *Config) { c.Output.KeyFormat = "%Y/data.gz" }, "output.key_format", "needs $UUID"},
		{"key format specifier", func(c *Config) { c.Output.KeyFormat = "%Q/$UUID.gz" }, "output.key_format", "unsupported strftime specifier %Q"},
		{"compression", func(c *Config) { c.Output.Compression = "zstd" }, "output.compression", `"zstd" not supported`},
		{"format", func(c *Config) { c.Output.Format = "csv" }, "output.format", `"csv" not supported`},
		{"acl", func(c *Config) { c.Output.ACL = "everyone" }, "output.acl", `"everyone" not supported`},
		{"storage class", func(c *Config) { c.Output.StorageClass = "COLD" }, "output.storage_class", `"COLD" not supported`},
		{"kms key", func(c *Config) { c.Output.SSEKMSKeyID = "k" }, "output.sse_kms_key_id", "needs output.server_side_encryption aws:kms"},
		{"endpoint", func(c *Config) { c.Output.Endpoint = "localhost:9000" }, "output.endpoint", "not an http(s) URL"},
		{"role", func(c *Config) { c.Output.RoleARN = "admin" }, "output.role_arn", "not an ARN"},
		{"multipart", func(c *Config) { c.Output.MultipartThreshold = 1 << 20 }, "output.multipart_threshold", "at least 5MiB"},
		{"concurrency", func(c *Config) { c.Output.Concurrency = 0 }, "output.concurrency", "between 1 and 64"},
		{"buffer dir", func(c *Config) { c.Buffer.Dir = "" }, "buffer.dir", "required"},
		{"segment", func(c *Config) { c.Buffer.SegmentSize = 10 }, "buffer.segment_size", "between 64KiB and 1GiB"},
		{"max size", func(c *Config) { c.Buffer.MaxSize = 8 << 20 }, "buffer.max_size", "at least twice"},
		{"sync", func(c *Config) { c.Buffer.Sync = "sometimes" }, "buffer.sync", `"sometimes" not supported`},
		{"flush", func(c *Config) { c.Buffer.FlushInterval = 0 }, "buffer.flush_interval", "must be positive"},
		{"records format", func(c *Config) { c.Records.Format = "csv" }, "records.format", `"csv" not supported`},
		{"records fields", func(c *Config) { c.Records.Format = "json"; c.Records.Fields = map[string]string{"cost": "x"} }, "records.fields.cost", "unknown target"},
		{"line size", func(c *Config) { c.Records.MaxLineSize = 10 }, "records.max_line_size", "between 1KiB and 64MiB"},
		{"mode", func(c *Config) { c.Metering.Mode = "hourly" }, "metering.mode", `"hourly" not supported`},
		{"product", func(c *Config) { c.Metering.Mode = "meter_usage"; c.Metering.Dimensions = map[string]string{"a": "b"} }, "metering.product_code", "required when metering.mode is meter_usage"},
		{"dimension", func(c *Config) {
			c.Metering.Mode = "meter_usage"
			c.Metering.ProductCode = "p"
			c.Metering.Dimensions = map[string]string{"api": "bad name!"}
		}, "metering.dimensions.api", "is not a Marketplace dimension name"},
		{"factor", func(c *Config) {
			c.Metering.Mode = "meter_usage"
			c.Metering.ProductCode = "p"
			c.Metering.Dimensions = map[string]string{"api": "calls*-1"}
		}, "metering.dimensions.api", "must be a positive number"},
		{"tags", func(c *Config) {
			c.Metering.Mode = "meter_usage"
			c.Metering.ProductCode = "p"
			c.Metering.Dimensions = map[string]string{"api": "calls"}
			c.Metering.AllocationTags = []string{"a", "b", "c", "d", "e", "f"}
		}, "metering.allocation_tags", "at most 5"},
		{"customer type", func(c *Config) {
			c.Metering.Mode = "batch_meter_usage"
			c.Metering.ProductCode = "p"
			c.Metering.Dimensions = map[string]string{"api": "calls"}
			c.Metering.CustomerIDType = "email"
		}, "metering.customer_id_type", `"email" not supported`},
		{"tag key", func(c *Config) {
			c.Metering.Mode, c.Metering.ProductCode = "meter_usage", "p"
			c.Metering.Dimensions = map[string]string{"api": "calls"}
			c.Metering.AllocationTags = []string{"team", "a{b}"}
		}, "metering.allocation_tags[1]", "is not a valid tag key"},
		{"duplicate tag", func(c *Config) {
			c.Metering.Mode, c.Metering.ProductCode = "meter_usage", "p"
			c.Metering.Dimensions = map[string]string{"api": "calls"}
			c.Metering.AllocationTags = []string{"team", "team"}
		}, "metering.allocation_tags[1]", "duplicate tag"},
		{"license", func(c *Config) {
			c.Metering.Mode, c.Metering.ProductCode = "batch_meter_usage", "p"
			c.Metering.Dimensions = map[string]string{"api": "calls"}
			c.Metering.LicenseARN = "l-1"
		}, "metering.license_arn", "neither an ARN"},
		{"short window", func(c *Config) {
			c.Metering.Mode, c.Metering.ProductCode = "meter_usage", "p"
			c.Metering.Dimensions = map[string]string{"api": "calls"}
			c.Metering.Window = Duration(30 * time.Minute)
		}, "metering.window", "between 1h and 168h"},
		{"state url mode", func(c *Config) {
			c.Metering.Mode, c.Metering.ProductCode = "meter_usage", "p"
			c.Metering.Dimensions = map[string]string{"api": "calls"}
			c.Metering.StateURL = "s3://bucket/state"
		}, "metering.state_url", "only used with metering.mode batch_meter_usage"},
		{"state url", func(c *Config) {
			c.Metering.Mode, c.Metering.ProductCode = "batch_meter_usage", "p"
			c.Metering.Dimensions = map[string]string{"api": "calls"}
			c.Metering.StateURL = "gs://bucket/state"
		}, "metering.state_url", `scheme "gs" not supported`},
		{"merge grace", func(c *Config) {
			c.Metering.Mode, c.Metering.ProductCode = "batch_meter_usage", "p"
			c.Metering.Dimensions = map[string]string{"api": "calls"}
			c.Metering.StateURL = "s3://bucket/state"
			c.Metering.MergeGrace = Duration(-time.Minute)
		}, "metering.merge_grace", "between 0 and half of metering.window"},
		{"window that can never report", func(c *Config) {
			c.Metering.Mode, c.Metering.ProductCode = "meter_usage", "p"
			c.Metering.Dimensions = map[string]string{"api": "calls"}
			c.Metering.Window = Duration(time.Hour + 20*time.Minute)
			c.Metering.Lateness = Duration(20 * time.Minute)
		}, "metering.window", "leaves no time to report an hour"},
		{"one hour window", func(c *Config) {
			c.Metering.Mode, c.Metering.ProductCode = "batch_meter_usage", "p"
			c.Metering.Dimensions = map[string]string{"api": "calls"}
			c.Metering.Window = Duration(time.Hour)
			c.Metering.Lateness = 0
		}, "metering.window", "must exceed 1h + metering.lateness"},
		{"max_carry", func(c *Config) {
			c.Metering.Mode, c.Metering.ProductCode = "meter_usage", "p"
			c.Metering.Dimensions = map[string]string{"api": "calls"}
			c.Metering.MaxCarry = Duration(-time.Hour)
		}, "metering.max_carry", "must not be negative"},
		{"listen", func(c *Config) { c.Server.Listen = "9464" }, "server.listen", "not host:port"},
		{"log level", func(c *Config) { c.Log.Level = "loud" }, "log.level", `"loud" not supported`},
		{"agent id", func(c *Config) { c.Agent.ID = "has space" }, "agent.id", "must be 1-64 characters"},
		{"source type", func(c *Config) {
			c.Sources = []Input{{Type: "kafka", Paths: []string{"x"}, StartAt: "beginning", RefreshInterval: 1}}
		}, "sources[0].type", `"kafka" not supported`},
		{"source glob", func(c *Config) {
			c.Sources = []Input{{Type: "tail", Paths: []string{"[x"}, StartAt: "beginning", RefreshInterval: 1}}
		}, "sources[0].paths[0]", "not a valid glob"},
		{"start_at", func(c *Config) {
			c.Sources = []Input{{Type: "tail", Paths: []string{"x"}, StartAt: "middle", RefreshInterval: 1}}
		}, "sources[0].start_at", `"middle" not supported`},
	}
	all := Default()
	all.fill()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Default()
			tt.mutate(&cfg)
			cfg.fill()
			err := cfg.Validate(false)
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("want Errors, got %v", err)
			}
			for _, fe := range errs {
				if fe.Key == tt.key && strings.Contains(fe.Msg, tt.msg) {
					return
				}
			}
			t.Fatalf("no error for %s containing %q; got:\n%v", tt.key, tt.msg, err)
		})
		tt.mutate(&all)
	}
	all.fill()
	var errs Errors
	if !errors.As(all.Validate(true), &errs) || len(errs) < 15 {
		t.Fatalf("Validate should report every problem at once, got %d:\n%v", len(errs), errs)
	}
}

func TestRunNeedsSources(t *testing.T) {
	cfg, _ := Parse(nil)
	err := cfg.Validate(true)
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
	if err := cfg.Validate(false); err != nil {
		t.Fatal(err)
	}
}

func TestFromPropertiesErrorsNameTheProperty(t *testing.T) {
	tests := []struct{ name, value, want string }{
		{"buffer_max_size", "huge", `buffer_max_size: "huge" is not a size`},
		{"output_force_path_style", "maybe", `output_force_path_style: "maybe" is not a boolean`},
		{"output_concurrency", "two", `output_concurrency: "two" is not an integer`},
		{"records_fields", "customerId", `records_fields: "customerId" is not key=value`},
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
