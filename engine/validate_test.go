package engine_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/metership/metership/conf"
	"github.com/metership/metership/engine"
)

// TestValidateNamesEveryKey: each broken setting is reported with its key
// by the one entry point, whichever package holds the rule, and all of
// them at once.
func TestValidateNamesEveryKey(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*conf.Config)
		key    string
		msg    string
	}{
		{"ftp", func(c *conf.Config) { c.Output.URL = "ftp://x/y" }, "output.url", `scheme "ftp" not supported; use s3:// or file://`},
		{"no bucket", func(c *conf.Config) { c.Output.URL = "s3:///prefix" }, "output.url", "has no bucket"},
		{"no scheme", func(c *conf.Config) { c.Output.URL = "bucket/prefix" }, "output.url", "has no scheme"},
		{"bucket name", func(c *conf.Config) { c.Output.URL = "s3://Billing_Bucket/x" }, "output.url", `bucket name "Billing_Bucket": character 'B' not allowed`},
		{"file host", func(c *conf.Config) { c.Output.URL = "file://server/x" }, "output.url", `host "server" not supported`},
		{"empty url", func(c *conf.Config) { c.Output.URL = "" }, "output.url", "required"},
		{"key format", func(c *conf.Config) { c.Output.KeyFormat = "%Y/data.gz" }, "output.key_format", "needs $UUID"},
		{"key format specifier", func(c *conf.Config) { c.Output.KeyFormat = "%Q/$UUID.gz" }, "output.key_format", "unsupported strftime specifier %Q"},
		{"compression", func(c *conf.Config) { c.Output.Compression = "zstd" }, "output.compression", `"zstd" not supported`},
		{"format", func(c *conf.Config) { c.Output.Format = "csv" }, "output.format", `"csv" not supported`},
		{"acl", func(c *conf.Config) { c.Output.ACL = "everyone" }, "output.acl", `"everyone" not supported`},
		{"storage class", func(c *conf.Config) { c.Output.StorageClass = "COLD" }, "output.storage_class", `"COLD" not supported`},
		{"kms key", func(c *conf.Config) { c.Output.SSEKMSKeyID = "k" }, "output.sse_kms_key_id", "needs output.server_side_encryption aws:kms"},
		{"endpoint", func(c *conf.Config) { c.Output.Endpoint = "localhost:9000" }, "output.endpoint", "not an http(s) URL"},
		{"role", func(c *conf.Config) { c.Output.RoleARN = "admin" }, "output.role_arn", "not an ARN"},
		{"multipart", func(c *conf.Config) { c.Output.MultipartThreshold = 1 << 20 }, "output.multipart_threshold", "at least 5MiB"},
		{"concurrency", func(c *conf.Config) { c.Output.Concurrency = 0 }, "output.concurrency", "between 1 and 64"},
		{"buffer dir", func(c *conf.Config) { c.Buffer.Dir = "" }, "buffer.dir", "required"},
		{"segment", func(c *conf.Config) { c.Buffer.SegmentSize = 10 }, "buffer.segment_size", "between 64KiB and 1GiB"},
		{"max size", func(c *conf.Config) { c.Buffer.MaxSize = 8 << 20 }, "buffer.max_size", "at least twice"},
		{"sync", func(c *conf.Config) { c.Buffer.Sync = "sometimes" }, "buffer.sync", `"sometimes" not supported`},
		{"flush", func(c *conf.Config) { c.Buffer.FlushInterval = 0 }, "buffer.flush_interval", "must be positive"},
		{"records format", func(c *conf.Config) { c.Records.Format = "csv" }, "records.format", `"csv" not supported`},
		{"records fields", func(c *conf.Config) { c.Records.Format = "json"; c.Records.Fields = map[string]string{"cost": "x"} }, "records.fields.cost", "unknown target"},
		{"line size", func(c *conf.Config) { c.Records.MaxLineSize = 10 }, "records.max_line_size", "between 1KiB and 64MiB"},
		{"mode", func(c *conf.Config) { c.Metering.Mode = "hourly" }, "metering.mode", `"hourly" not supported`},
		{"product", func(c *conf.Config) {
			c.Metering.Mode = "meter_usage"
			c.Metering.Dimensions = map[string]string{"a": "b"}
		}, "metering.product_code", "required when metering.mode is meter_usage"},
		{"dimension", func(c *conf.Config) {
			c.Metering.Mode = "meter_usage"
			c.Metering.ProductCode = "p"
			c.Metering.Dimensions = map[string]string{"api": "bad name!"}
		}, "metering.dimensions.api", "is not a Marketplace dimension name"},
		{"factor", func(c *conf.Config) {
			c.Metering.Mode = "meter_usage"
			c.Metering.ProductCode = "p"
			c.Metering.Dimensions = map[string]string{"api": "calls*-1"}
		}, "metering.dimensions.api", "must be a positive number"},
		{"tags", func(c *conf.Config) {
			c.Metering.Mode = "meter_usage"
			c.Metering.ProductCode = "p"
			c.Metering.Dimensions = map[string]string{"api": "calls"}
			c.Metering.AllocationTags = []string{"a", "b", "c", "d", "e", "f"}
		}, "metering.allocation_tags", "at most 5"},
		{"customer type", func(c *conf.Config) {
			c.Metering.Mode = "batch_meter_usage"
			c.Metering.ProductCode = "p"
			c.Metering.Dimensions = map[string]string{"api": "calls"}
			c.Metering.CustomerIDType = "email"
		}, "metering.customer_id_type", `"email" not supported`},
		{"tag key", func(c *conf.Config) {
			c.Metering.Mode, c.Metering.ProductCode = "meter_usage", "p"
			c.Metering.Dimensions = map[string]string{"api": "calls"}
			c.Metering.AllocationTags = []string{"team", "a{b}"}
		}, "metering.allocation_tags[1]", "is not a valid tag key"},
		{"duplicate tag", func(c *conf.Config) {
			c.Metering.Mode, c.Metering.ProductCode = "meter_usage", "p"
			c.Metering.Dimensions = map[string]string{"api": "calls"}
			c.Metering.AllocationTags = []string{"team", "team"}
		}, "metering.allocation_tags[1]", "duplicate tag"},
		{"license", func(c *conf.Config) {
			c.Metering.Mode, c.Metering.ProductCode = "batch_meter_usage", "p"
			c.Metering.Dimensions = map[string]string{"api": "calls"}
			c.Metering.LicenseARN = "l-1"
		}, "metering.license_arn", "neither an ARN"},
		{"short window", func(c *conf.Config) {
			c.Metering.Mode, c.Metering.ProductCode = "meter_usage", "p"
			c.Metering.Dimensions = map[string]string{"api": "calls"}
			c.Metering.Window = conf.Duration(30 * time.Minute)
		}, "metering.window", "between 1h and 168h"},
		{"state url mode", func(c *conf.Config) {
			c.Metering.Mode, c.Metering.ProductCode = "meter_usage", "p"
			c.Metering.Dimensions = map[string]string{"api": "calls"}
			c.Metering.StateURL = "s3://bucket/state"
		}, "metering.state_url", "only used with metering.mode batch_meter_usage"},
		{"state url", func(c *conf.Config) {
			c.Metering.Mode, c.Metering.ProductCode = "batch_meter_usage", "p"
			c.Metering.Dimensions = map[string]string{"api": "calls"}
			c.Metering.StateURL = "gs://bucket/state"
		}, "metering.state_url", `scheme "gs" not supported`},
		{"merge grace", func(c *conf.Config) {
			c.Metering.Mode, c.Metering.ProductCode = "batch_meter_usage", "p"
			c.Metering.Dimensions = map[string]string{"api": "calls"}
			c.Metering.StateURL = "s3://bucket/state"
			c.Metering.MergeGrace = conf.Duration(-time.Minute)
		}, "metering.merge_grace", "between 0 and half of metering.window"},
		{"window that can never report", func(c *conf.Config) {
			c.Metering.Mode, c.Metering.ProductCode = "meter_usage", "p"
			c.Metering.Dimensions = map[string]string{"api": "calls"}
			c.Metering.Window = conf.Duration(time.Hour + 20*time.Minute)
			c.Metering.Lateness = conf.Duration(20 * time.Minute)
		}, "metering.window", "leaves no time to report an hour"},
		{"one hour window", func(c *conf.Config) {
			c.Metering.Mode, c.Metering.ProductCode = "batch_meter_usage", "p"
			c.Metering.Dimensions = map[string]string{"api": "calls"}
			c.Metering.Window = conf.Duration(time.Hour)
			c.Metering.Lateness = 0
		}, "metering.window", "must exceed 1h + metering.lateness"},
		{"max_carry", func(c *conf.Config) {
			c.Metering.Mode, c.Metering.ProductCode = "meter_usage", "p"
			c.Metering.Dimensions = map[string]string{"api": "calls"}
			c.Metering.MaxCarry = conf.Duration(-time.Hour)
		}, "metering.max_carry", "must not be negative"},
		{"listen", func(c *conf.Config) { c.Server.Listen = "9464" }, "server.listen", "not host:port"},
		{"log level", func(c *conf.Config) { c.Log.Level = "loud" }, "log.level", `"loud" not supported`},
		{"agent id", func(c *conf.Config) { c.Agent.ID = "has space" }, "agent.id", "must be 1-64 characters"},
		{"source type", func(c *conf.Config) {
			c.Sources = []conf.Input{{Type: "kafka", Paths: []string{"x"}, StartAt: "beginning", RefreshInterval: 1}}
		}, "sources[0].type", `"kafka" not supported`},
		{"source glob", func(c *conf.Config) {
			c.Sources = []conf.Input{{Type: "tail", Paths: []string{"[x"}, StartAt: "beginning", RefreshInterval: 1}}
		}, "sources[0].paths[0]", "not a valid glob"},
		{"start_at", func(c *conf.Config) {
			c.Sources = []conf.Input{{Type: "tail", Paths: []string{"x"}, StartAt: "middle", RefreshInterval: 1}}
		}, "sources[0].start_at", `"middle" not supported`},
	}
	all := conf.Default()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := conf.Default()
			tt.mutate(&cfg)
			err := engine.Validate(cfg, nil, false)
			var errs conf.Errors
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
	var errs conf.Errors
	if !errors.As(engine.Validate(all, nil, true), &errs) || len(errs) < 15 {
		t.Fatalf("Validate should report every problem at once, got %d:\n%v", len(errs), errs)
	}
}
