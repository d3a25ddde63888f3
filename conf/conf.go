// Package conf is metership's one configuration schema. The YAML loader
// (the agent) and the Fluent Bit property reader (the plugin) fill the same
// Config. conf is a leaf (it imports no other package of the module): it
// holds the schema, the defaults, the parsing and its own rules (Check);
// the rules of the packages that use a setting live with them, and
// engine.Validate, the one validation path for both, runs them all and
// hands the problems to Config.Report. Every message names the YAML key it
// is about, with its line when it came from a file.
package conf

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// Config is the whole configuration. yaml tags are the snake_case keys of
// the design; the Fluent Bit property of a field is "<section>_<key>".
type Config struct {
	Agent    Agent    `yaml:"agent"`
	Sources  []Input  `yaml:"sources"`
	Records  Records  `yaml:"records"`
	Buffer   Buffer   `yaml:"buffer"`
	Output   Output   `yaml:"output"`
	Metering Metering `yaml:"metering"`
	Jobs     Jobs     `yaml:"jobs"`
	Server   Server   `yaml:"server"`
	Log      Log      `yaml:"log"`

	// lines maps each key path read from a file to its line, so errors
	// about it can say where it is.
	lines map[string]int
}

// Line returns the line of key in the file the configuration was read
// from; 0 when the key was not there (a default, a Fluent Bit property).
func (c *Config) Line(key string) int { return c.lines[key] }

// Agent identifies this producer and bounds shutdown.
type Agent struct {
	// ID names this instance in object keys and metering ClientTokens.
	// Empty: a random id generated once and kept in buffer.dir.
	ID string `yaml:"id"`
	// ShutdownTimeout bounds the final seal+upload+report on SIGTERM;
	// what is left stays on disk for the next start.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
}

// Input is one entry of the YAML sources list: a set of files the agent
// tails. (Not record.Source, the position of one line in it.)
type Input struct {
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
	Sync          SyncMode `yaml:"sync"`
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
	Mode        MeteringMode `yaml:"mode"`
	ProductCode string       `yaml:"product_code"`
	Region      string       `yaml:"region"`
	Endpoint    string       `yaml:"endpoint"`
	// Dimensions maps meterApiName -> Marketplace dimension, optionally
	// with a factor: "api_calls" or "gb_hours*0.001".
	Dimensions     map[string]string `yaml:"dimensions"`
	AllocationTags []string          `yaml:"allocation_tags"`
	CustomerIDType string            `yaml:"customer_id_type"`
	// LicenseARN is a constant license ARN for BatchMeterUsage records, or
	// "dimension:<name>" to take it from a record dimension.
	LicenseARN string   `yaml:"license_arn"`
	Lateness   Duration `yaml:"lateness"`
	// Window is how long after its hour a usage record may still be sent:
	// AWS refuses records 6 hours or more after the event, for MeterUsage
	// and BatchMeterUsage alike.
	Window     Duration `yaml:"window"`
	ReportZero bool     `yaml:"report_zero"`
	DryRun     bool     `yaml:"dry_run"`
	// ReportOnStop reports every hour held, the one in progress included,
	// when the agent stops (SIGTERM) or the plugin exits: a pod whose
	// ledger dies with it would lose that usage otherwise. Turn it off
	// for ledgers on persistent volumes.
	ReportOnStop bool `yaml:"report_on_stop"`
	// MaxCarry: usage of an hour older than this when it is counted is
	// not billed but recorded as unbilled (ledger, metrics, logs); 0 is
	// no limit. It keeps replayed archives from being billed today.
	MaxCarry Duration `yaml:"max_carry"`
	// CatchUpTimeout bounds how long, after a start, hours stay open
	// while the sources read what their files held at the start, so a
	// backlog's usage lands in its own hours.
	CatchUpTimeout Duration `yaml:"catch_up_timeout"`
	// StateURL (s3://bucket/prefix or file:///dir), batch mode: where
	// replicas of one product merge their hourly usage; empty: this
	// agent reports alone. MergeGrace: how long a claim waits for live
	// replicas' partials.
	StateURL   string   `yaml:"state_url"`
	MergeGrace Duration `yaml:"merge_grace"`
}

// Jobs configures the export Jobs API (`metership jobs serve`).
type Jobs struct {
	// Listen is the Jobs API's HTTP address.
	Listen string `yaml:"listen"`
	// APIKeys are the accepted X-API-Key values.
	APIKeys []string `yaml:"api_keys"`
	// Store is where jobs and their last runs are kept: file:///dir (one
	// server) or s3://bucket/prefix (several servers, conditional writes).
	Store string `yaml:"store"`
	// SMTP, when Host is set, mails each run's result to the job's email.
	SMTP JobsSMTP `yaml:"smtp"`
	// S3 overrides output's S3 settings for s3Urls without a scheme and
	// for an s3:// store; empty fields fall back to output's.
	S3 JobsS3 `yaml:"s3"`
	// Tick is how often the scheduler looks for due jobs.
	Tick Duration `yaml:"tick"`
}

// JobsSMTP is the mail server export results are sent through.
type JobsSMTP struct {
	Host     string `yaml:"host"`
	Port     int    `yaml:"port"`
	From     string `yaml:"from"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// StartTLS upgrades the connection when the server offers it; required
	// (not just preferred) when Username is set, so passwords never travel
	// in the clear.
	StartTLS bool `yaml:"starttls"`
}

// JobsS3 is the S3 service export jobs write to when it is not output's.
type JobsS3 struct {
	Region         string `yaml:"region"`
	Endpoint       string `yaml:"endpoint"`
	ForcePathStyle *bool  `yaml:"force_path_style"`
	RoleARN        string `yaml:"role_arn"`
	ExternalID     string `yaml:"external_id"`
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
			Sync:          SyncAlways,
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
			Mode:           MeteringOff,
			CustomerIDType: "customer_identifier",
			Lateness:       Duration(5 * 60e9),
			Window:         Duration(6 * 3600e9),
			ReportOnStop:   true,
			MaxCarry:       Duration(24 * 3600e9),
			CatchUpTimeout: Duration(10 * 60e9),
			MergeGrace:     Duration(10 * 60e9),
		},
		Jobs:   Jobs{Listen: ":9465", Store: "file://./jobs", SMTP: JobsSMTP{Port: 587}, Tick: Duration(10e9)},
		Server: Server{Listen: ":9464", UnreadyAfter: Duration(5 * 60e9)},
		Log:    Log{Level: "info", Format: "json"},
	}
}

// sourceDefaults fills one source's unset fields.
func sourceDefaults(s *Input) {
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
// Its errors are Parse's.
func Load(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	cfg, err := Parse(b)
	var keyErrs Errors
	if errors.As(err, &keyErrs) {
		return cfg, keyErrs // each names its key and line
	}
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse reads YAML bytes over the defaults. Unknown keys are errors, so a
// typo never silently falls back to a default.
//
// Every key that is unknown or whose value does not parse is reported, as
// Errors with key paths and lines; the returned Config then still holds
// every value that did parse (the defaults elsewhere), so that the rules
// can run too and check reports everything at once (see Report). Any
// other error (YAML syntax, an unset ${VAR}) is returned alone, with a
// zero Config.
func Parse(b []byte) (Config, error) {
	cfg := Default()
	expanded, err := ExpandEnv(string(b))
	if err != nil {
		return Config{}, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(expanded), &doc); err != nil {
		return Config{}, fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	d := &decoder{lines: map[string]int{}}
	d.decodeDocument(&doc, &cfg)
	cfg.lines = d.lines
	cfg.fill()
	if len(d.errs) > 0 {
		return cfg, d.errs
	}
	return cfg, nil
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
		// Both APIs: records are not accepted 6 hours or more after the
		// event.
		c.Metering.Window = Duration(6 * 3600e9)
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

// MarshalYAML renders the jobs section with its secrets (API keys, the
// SMTP password) redacted: `metership check` prints the effective
// configuration, and keys must never reach a terminal or a log.
func (j Jobs) MarshalYAML() (any, error) {
	type plain Jobs
	out := plain(j)
	out.APIKeys = make([]string, len(j.APIKeys))
	for i := range out.APIKeys {
		out.APIKeys[i] = "<redacted>"
	}
	if out.SMTP.Password != "" {
		out.SMTP.Password = "<redacted>"
	}
	return out, nil
}
