package fluentbit

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/metership/metership/conf"
)

func TestLoadConfigValid(t *testing.T) {
	dir := t.TempDir()
	yamlPath := filepath.Join(dir, "metership.yaml")
	if err := os.WriteFile(yamlPath, []byte("output:\n  url: s3://from-file/ingest/amberdata\n  region: eu-west-1\nbuffer:\n  max_size: 2GiB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FBTEST_BUCKET", "env-bucket")
	tests := []struct {
		name  string
		props map[string]string
		check func(t *testing.T, c conf.Config)
	}{
		{
			name:  "defaults",
			props: map[string]string{},
			check: func(t *testing.T, c conf.Config) {
				if c.Output.URL != conf.Default().Output.URL || c.Buffer.Sync != "always" || c.Records.Format != "meter" {
					t.Errorf("not the defaults: %+v", c)
				}
			},
		},
		{
			name: "the issue's example",
			props: map[string]string{
				"output_url": "s3://billing-bucket/ingest/amberdata",
				"buffer_dir": "/var/lib/metership",
			},
			check: func(t *testing.T, c conf.Config) {
				if c.Output.URL != "s3://billing-bucket/ingest/amberdata" || c.Buffer.Dir != "/var/lib/metership" {
					t.Errorf("got %+v", c.Output)
				}
			},
		},
		{
			name: "every kind of value",
			props: map[string]string{
				"output_url":              "s3://${FBTEST_BUCKET}/ingest/amberdata",
				"output_key_format":       "%Y/%m/%d/$TAG/$UUID.gz",
				"output_endpoint":         "http://127.0.0.1:7070",
				"output_force_path_style": "on",
				"output_region":           "eu-central-1",
				"output_role_arn":         "arn:aws:iam::123456789012:role/metership",
				"output_tags":             "team=billing, env=prod",
				"buffer_max_size":         "512MiB",
				"buffer_segment_size":     "4MiB",
				"buffer_flush_interval":   "30",
				"buffer_sync":             "interval",
				"records_format":          "json",
				"records_fields":          "customerId=tenant.id,meterValue=bytes,meterApiName='egress'",
				"metering_mode":           "off",
				"agent_shutdown_timeout":  "5s",
				"log_level":               "debug",
			},
			check: func(t *testing.T, c conf.Config) {
				o := c.Output
				if o.URL != "s3://env-bucket/ingest/amberdata" || o.KeyFormat != "%Y/%m/%d/$TAG/$UUID.gz" || o.Endpoint != "http://127.0.0.1:7070" ||
					!o.ForcePathStyle || o.Region != "eu-central-1" || o.RoleARN != "arn:aws:iam::123456789012:role/metership" ||
					o.Tags["team"] != "billing" || o.Tags["env"] != "prod" {
					t.Errorf("output: %+v", o)
				}
				b := c.Buffer
				if b.MaxSize != 512<<20 || b.SegmentSize != 4<<20 || b.FlushInterval.D() != 30*time.Second || b.Sync != "interval" {
					t.Errorf("buffer: %+v", b)
				}
				if c.Records.Format != "json" || c.Records.Fields["customerId"] != "tenant.id" || c.Records.Fields["meterApiName"] != "'egress'" {
					t.Errorf("records: %+v", c.Records)
				}
				if c.Agent.ShutdownTimeout.D() != 5*time.Second || c.Log.Level != "debug" || c.Metering.Region != "eu-central-1" {
					t.Errorf("agent/log/metering: %+v %+v %+v", c.Agent, c.Log, c.Metering)
				}
			},
		},
		{
			name:  "config_file, then properties over it",
			props: map[string]string{"config_file": yamlPath, "output_region": "us-west-2"},
			check: func(t *testing.T, c conf.Config) {
				if c.Output.URL != "s3://from-file/ingest/amberdata" || c.Output.Region != "us-west-2" || c.Buffer.MaxSize != 2<<30 {
					t.Errorf("got %+v %+v", c.Output, c.Buffer)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, problems, err := LoadConfig(props(tt.props))
			if err != nil {
				t.Fatalf("LoadConfig: %v (%+v)", err, problems)
			}
			tt.check(t, c)
		})
	}
}

func TestLoadConfigInvalid(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	tests := []struct {
		props map[string]string
		want  string // a property named by a problem
		msg   string // a substring of its message
	}{
		{map[string]string{"output_url": "ftp://bucket/x"}, "output_url", "scheme"},
		{map[string]string{"output_url": "bucket/prefix"}, "output_url", "no scheme"},
		{map[string]string{"output_url": "s3://${FBTEST_SURELY_UNSET}/x"}, "output_url", "FBTEST_SURELY_UNSET"},
		{map[string]string{"output_key_format": "%Y/fixed.gz"}, "output_key_format", "$UUID"},
		{map[string]string{"output_compression": "zip"}, "output_compression", "zip"},
		{map[string]string{"output_endpoint": "127.0.0.1:9000"}, "output_endpoint", "http"},
		{map[string]string{"output_force_path_style": "maybe"}, "output_force_path_style", "boolean"},
		{map[string]string{"output_role_arn": "metership-role"}, "output_role_arn", "ARN"},
		{map[string]string{"output_concurrency": "two"}, "output_concurrency", "integer"},
		{map[string]string{"output_tags": "team"}, "output_tags", "key=value"},
		{map[string]string{"buffer_dir": " "}, "", ""},
		{map[string]string{"buffer_max_size": "lots"}, "buffer_max_size", "size"},
		{map[string]string{"buffer_max_size": "1MiB"}, "buffer_max_size", "twice"},
		{map[string]string{"buffer_segment_size": "1KiB"}, "buffer_segment_size", "between"},
		{map[string]string{"buffer_flush_interval": "soon"}, "buffer_flush_interval", "duration"},
		{map[string]string{"buffer_flush_interval": "-1s"}, "buffer_flush_interval", "positive"},
		{map[string]string{"buffer_sync": "sometimes"}, "buffer_sync", "sometimes"},
		{map[string]string{"records_format": "csv"}, "records_format", "csv"},
		{map[string]string{"records_fields": "customerId=tenant.id"}, "records_fields", "records.format json"},
		{map[string]string{"records_format": "json", "records_fields": "colour=red"}, "records_fields", "unknown target"},
		{map[string]string{"records_max_line_size": "10"}, "records_max_line_size", "between"},
		{map[string]string{"metering_mode": "hourly"}, "metering_mode", "hourly"},
		{map[string]string{"metering_mode": "meter_usage", "metering_dimensions": "api-calls=calls"}, "metering_product_code", "required"},
		{map[string]string{"agent_id": "has spaces"}, "agent_id", "characters"},
		{map[string]string{"agent_shutdown_timeout": "0s"}, "agent_shutdown_timeout", "positive"},
		{map[string]string{"log_level": "loud"}, "log_level", "loud"},
		{map[string]string{"config_file": missing}, "config_file", "missing.yaml"},
	}
	for _, tt := range tests {
		var name []string
		for k, v := range tt.props {
			name = append(name, k+"="+v)
		}
		t.Run(strings.Join(name, ","), func(t *testing.T) {
			_, problems, err := LoadConfig(props(tt.props))
			if tt.want == "" {
				// Whitespace-only is "not set": the default applies.
				if err != nil {
					t.Fatalf("LoadConfig: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("err = %v, want ErrConfig", err)
			}
			found := false
			for _, p := range problems {
				found = found || p.Property == tt.want && strings.Contains(p.Msg, tt.msg)
			}
			if !found {
				t.Fatalf("problems %+v, want one on %s containing %q", problems, tt.want, tt.msg)
			}
			if !strings.Contains(err.Error(), tt.want+": ") {
				t.Fatalf("error %q does not name %s", err, tt.want)
			}
		})
	}
}

func TestLoadConfigReportsEveryProblem(t *testing.T) {
	_, problems, err := LoadConfig(props(map[string]string{
		"output_url":  "ftp://x",
		"buffer_sync": "sometimes",
		"log_format":  "xml",
	}))
	if err == nil {
		t.Fatal("no error")
	}
	got := map[string]bool{}
	for _, p := range problems {
		got[p.Property] = true
	}
	for _, want := range []string{"output_url", "buffer_sync", "log_format"} {
		if !got[want] {
			t.Errorf("no problem reported for %s: %+v", want, problems)
		}
	}
}

// TestLoadConfigParsesAndChecksInOnePass: a property that does not parse,
// a config_file key that is unknown and a rule violation are reported
// together, the file's by key and line, the properties' by name. Before,
// the first parse error hid the rest.
func TestLoadConfigParsesAndChecksInOnePass(t *testing.T) {
	file := filepath.Join(t.TempDir(), "m.yaml")
	if err := os.WriteFile(file, []byte("output:\n  url: s3://billing/x\n  urll: s3://billing/y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, problems, err := LoadConfig(props(map[string]string{
		"config_file":        file,
		"buffer_max_size":    "lots",
		"output_compression": "zip",
	}))
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("err = %v", err)
	}
	var got []string
	for _, p := range problems {
		got = append(got, p.String())
	}
	want := []string{
		`buffer_max_size: "lots" is not a size; use e.g. 8MiB, 1GiB, 1048576`,
		`output_compression: "zip" not supported; use gzip, none`,
		"config_file: output.urll (line 3): unknown key; use one of url, key_format, dead_letter_url, dead_letter_key_format, compression, format, region, endpoint, force_path_style, role_arn, external_id, acl, storage_class, server_side_encryption, sse_kms_key_id, content_type, content_encoding, tags, multipart_threshold, concurrency, hostname",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestNewInstanceLogsTheProperty(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	_, err := NewInstance(props(map[string]string{"buffer_sync": "sometimes", "output_url": "ftp://x"}), zap.New(core))
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("err = %v", err)
	}
	var named []string
	for _, e := range logs.FilterMessageSnippet("invalid property").All() {
		named = append(named, e.ContextMap()["property"].(string))
	}
	if strings.Join(named, ",") != "buffer_sync,output_url" {
		t.Fatalf("logged properties %v, want buffer_sync,output_url", named)
	}
}

func TestPropertyOf(t *testing.T) {
	for key, want := range map[string]string{
		"output.url":                "output_url",
		"records.fields.customerId": "records_fields",
		"metering.dimensions.api":   "metering_dimensions",
		"output.tags.team":          "output_tags",
		"sources[0].paths":          "",
		"sources":                   "",
	} {
		if got := PropertyOf(key); got != want {
			t.Errorf("PropertyOf(%q) = %q, want %q", key, got, want)
		}
	}
}
