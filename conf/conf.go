// Package conf is metership's one configuration schema. The YAML loader
// (the agent) and the Fluent Bit property reader (the plugin) fill the same
// Config, and Validate is the one validation path for both: every message
// names the YAML key it is about.
package conf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// Config is the whole configuration. yaml tags are the snake_case keys of
// the design; the Fluent Bit property of a field is "<section>_<key>".
type Config struct {
	Agent    Agent    `yaml:"agent"`
	Sources  []Source `yaml:"sources"`
	Records  Records  `yaml:"records"`
	Buffer   Buffer   `yaml:"buffer"`
	Output   Output   `yaml:"output"`
	Metering Metering `yaml:"metering"`
	Server   Server   `yaml:"server"`
	Log      Log      `yaml:"log"`
}

// Agent identifies this producer and bounds shutdown.
type Agent struct {
	// ID names this instance in object keys and metering ClientTokens.
	// Empty: a random id generated once and kept in buffer.dir.
	ID string `yaml:"id"`
	// ShutdownTimeout bounds the final seal+upload+report on SIGTERM;
	// what is left stays on disk for the next start.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
}

// Source is one input of the agent.
type Source struct {
	Type            string   `yaml:"type"`
	Paths           []string `yaml:"paths"`
	Exclude         []string `yaml:"exclude"`
	StartAt         string   `yaml:"start_at"`
	Tag             string   `yaml:"tag"`
	RefreshInterval Duration `yaml:"refresh_interval"`
	RotateWait      Duration `yaml:"rotate_wait"`
}

// Records says how input lines become meter records.
type Records struct {
	Format      string            `yaml:"format"`
	Fields      map[string]string `yaml:"fields"`
	MaxLineSize Size              `yaml:"max_line_size"`
}

// Buffer configures the disk buffer.
type Buffer struct {
	Dir           string   `yaml:"dir"`
	MaxSize       Size     `yaml:"max_size"`
	SegmentSize   Size     `yaml:"segment_size"`
	FlushInterval Duration `yaml:"flush_interval"`
	Sync          string   `yaml:"sync"`
	SyncInterval  Duration `yaml:"sync_interval"`
}

// Output configures where objects go.
type Output struct {
	URL                  string            `yaml:"url"`
	KeyFormat            string            `yaml:"key_format"`
	DeadLetterURL        string            `yaml:"dead_letter_url"`
	DeadLetterKeyFormat  string            `yaml:"dead_letter_key_format"`
	Compression          string            `yaml:"compression"`
	Format               string            `yaml:"format"`
	Region               string            `yaml:"region"`
	Endpoint             string            `yaml:"endpoint"`
	ForcePathStyle       bool              `yaml:"force_path_style"`
	RoleARN              string            `yaml:"role_arn"`
	ExternalID           string            `yaml:"external_id"`
	ACL                  string            `yaml:"acl"`
	StorageClass         string            `yaml:"storage_class"`
	ServerSideEncryption string            `yaml:"server_side_encryption"`
	SSEKMSKeyID          string            `yaml:"sse_kms_key_id"`
	ContentType          string            `yaml:"content_type"`
	ContentEncoding      string            `yaml:"content_encoding"`
	Tags                 map[string]string `yaml:"tags"`
	MultipartThreshold   Size              `yaml:"multipart_threshold"`
	Concurrency          int               `yaml:"concurrency"`
	Hostname             string            `yaml:"hostname"`
}

// Metering configures AWS Marketplace reporting.
type Metering struct {
	Mode        string `yaml:"mode"`
	ProductCode string `yaml:"product_code"`
	Region      string `yaml:"region"`
	Endpoint    string `yaml:"endpoint"`
	// Dimensions maps meterApiName -> Marketplace dimension, optionally
	// with a factor: "api_calls" or "gb_hours*0.001".
	Dimensions     map[string]string `yaml:"dimensions"`
	AllocationTags []string          `yaml:"allocation_tags"`
	CustomerIDType string            `yaml:"customer_id_type"`
	// LicenseARN is a constant license ARN for BatchMeterUsage records, or
	// "dimension:<name>" to take it from a record dimension.
	LicenseARN string   `yaml:"license_arn"`
	Lateness   Duration `yaml:"lateness"`
	Window     Duration `yaml:"window"`
	ReportZero bool     `yaml:"report_zero"`
	DryRun     bool     `yaml:"dry_run"`
	// StateURL (s3://bucket/prefix or file:///dir), batch mode: where
	// replicas of one product merge their hourly usage; empty: this
	// agent reports alone. MergeGrace: how long a claim waits for live
	// replicas' partials.
	StateURL   string   `yaml:"state_url"`
	MergeGrace Duration `yaml:"merge_grace"`
}

// Server configures the HTTP endpoint.
type Server struct {
	Listen string `yaml:"listen"`
	// UnreadyAfter is how long uploads may keep failing before /readyz
	// answers 503: long enough to ride out a short S3 hiccup (data waits
	// in the buffer meanwhile), short enough to alert on a real outage.
	UnreadyAfter Duration `yaml:"unready_after"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Default returns the embedded defaults: file:// output under ./out and the
// buffer under ./data, so `metership run` works with no setup at all.
func Default() Config {
	return Config{
		Agent: Agent{ShutdownTimeout: Duration(30e9)},
		Records: Records{
			Format:      "meter",
			MaxLineSize: 1 << 20,
		},
		Buffer: Buffer{
			Dir:           "./data",
			MaxSize:       1 << 30,
			SegmentSize:   8 << 20,
			FlushInterval: Duration(60e9),
			Sync:          "always",
			SyncInterval:  Duration(1e9),
		},
		Output: Output{
			URL:                 "file://./out/ingest/amberdata",
			KeyFormat:           "%m-%d-%Y/$UUID.gz",
			DeadLetterKeyFormat: "failed-requests/%m-%d-%Y/$UUID.gz",
			Compression:         "gzip",
			Format:              "ndjson",
			Region:              "us-east-1",
			MultipartThreshold:  64 << 20,
			Concurrency:         2,
		},
		Metering: Metering{
			Mode:           "off",
			CustomerIDType: "customer_identifier",
			Lateness:       Duration(5 * 60e9),
			MergeGrace:     Duration(10 * 60e9),
		},
		Server: Server{Listen: ":9464", UnreadyAfter: Duration(5 * 60e9)},
		Log:    Log{Level: "info", Format: "json"},
	}
}

// sourceDefaults fills one source's unset fields.
func sourceDefaults(s *Source) {
	if s.Type == "" {
		s.Type = "tail"
	}
	if s.StartAt == "" {
		s.StartAt = "beginning"
	}
	if s.Tag == "" {
		s.Tag = "metership"
	}
	if s.RefreshInterval == 0 {
		s.RefreshInterval = Duration(1e9)
	}
	if s.RotateWait == 0 {
		s.RotateWait = Duration(5e9)
	}
}

// Load reads a YAML file over the defaults, expanding ${ENV} references.
func Load(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	cfg, err := Parse(b)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse reads YAML bytes over the defaults. Unknown keys are errors, so a
// typo never silently falls back to a default.
func Parse(b []byte) (Config, error) {
	cfg := Default()
	if err := cfg.merge(b); err != nil {
		return Config{}, err
	}
	cfg.fill()
	return cfg, nil
}

func (c *Config) merge(b []byte) error {
	expanded, err := ExpandEnv(string(b))
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader([]byte(expanded)))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return nil
}

// fill applies defaults that depend on other settings.
func (c *Config) fill() {
	for i := range c.Sources {
		sourceDefaults(&c.Sources[i])
	}
	if c.Metering.Region == "" {
		c.Metering.Region = c.Output.Region
	}
	if c.Metering.Window == 0 {
		if c.Metering.Mode == "batch_meter_usage" {
			c.Metering.Window = Duration(24 * 3600e9)
		} else {
			c.Metering.Window = Duration(6 * 3600e9)
		}
	}
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// ExpandEnv replaces ${NAME} and ${NAME:-default}. An unset variable with no
// default is an error naming it: an empty bucket or product code must not
// come from a typo in the environment.
func ExpandEnv(s string) (string, error) {
	var missing []string
	out := envRef.ReplaceAllStringFunc(s, func(m string) string {
		sub := envRef.FindStringSubmatch(m)
		if v, ok := os.LookupEnv(sub[1]); ok {
			return v
		}
		if sub[2] != "" {
			return sub[3]
		}
		missing = append(missing, sub[1])
		return ""
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("environment variable(s) not set: %s (use ${NAME:-default} for optional ones)", strings.Join(missing, ", "))
	}
	return out, nil
}

// YAML renders the effective configuration.
func (c Config) YAML() string {
	b, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Sprintf("# cannot render config: %v\n", err)
	}
	return string(b)
}
