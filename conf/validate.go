package conf

import (
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/metership/metership/record"
	"github.com/metership/metership/ship"
)

// FieldError is one problem with one key.
type FieldError struct {
	Key string // YAML path, e.g. output.url or sources[0].paths
	Msg string
}

func (e FieldError) Error() string { return e.Key + ": " + e.Msg }

// Errors is every problem Validate found, in key order.
type Errors []FieldError

func (e Errors) Error() string {
	lines := make([]string, len(e))
	for i, fe := range e {
		lines[i] = fe.Error()
	}
	return strings.Join(lines, "\n")
}

type collector struct{ errs Errors }

func (c *collector) add(key, format string, args ...any) {
	c.errs = append(c.errs, FieldError{Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (c *collector) oneOf(key, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	c.add(key, "%q not supported; use %s", v, strings.Join(allowed, ", "))
}

var agentIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

var cannedACLs = []string{"", "private", "public-read", "public-read-write", "authenticated-read", "aws-exec-read", "bucket-owner-read", "bucket-owner-full-control"}

var storageClasses = []string{"", "STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER", "DEEP_ARCHIVE", "GLACIER_IR", "EXPRESS_ONEZONE"}

// Validate checks the whole configuration and returns every problem as
// Errors (nil when valid). needSources is true for `metership run`, which
// has nothing to do without inputs.
func (c *Config) Validate(needSources bool) error {
	v := &collector{}
	c.validateAgent(v, needSources)
	c.validateRecords(v)
	c.validateBuffer(v)
	c.validateOutput(v)
	c.validateMetering(v)
	c.validateJobs(v)
	if l := c.Server.Listen; l != "" && l != "off" {
		if _, port, err := net.SplitHostPort(l); err != nil {
			v.add("server.listen", "%q is not host:port (e.g. :9464, 127.0.0.1:9464; \"off\" disables)", l)
		} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			v.add("server.listen", "port %q is not a number in 0..65535", port)
		}
	}
	if c.Server.UnreadyAfter <= 0 {
		v.add("server.unready_after", "must be positive")
	}
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "json", "console")
	if len(v.errs) == 0 {
		return nil
	}
	sort.SliceStable(v.errs, func(i, j int) bool { return v.errs[i].Key < v.errs[j].Key })
	return v.errs
}

func (c *Config) validateAgent(v *collector, needSources bool) {
	if c.Agent.ID != "" && !agentIDPattern.MatchString(c.Agent.ID) {
		v.add("agent.id", "%q must be 1-64 characters of A-Z a-z 0-9 . _ -", c.Agent.ID)
	}
	if c.Agent.ShutdownTimeout <= 0 {
		v.add("agent.shutdown_timeout", "must be positive")
	}
	if needSources && len(c.Sources) == 0 {
		v.add("sources", "no sources configured; add e.g. {type: tail, paths: [\"/var/log/app/*.log\"]}")
	}
	for i, s := range c.Sources {
		key := fmt.Sprintf("sources[%d]", i)
		v.oneOf(key+".type", s.Type, "tail")
		if len(s.Paths) == 0 {
			v.add(key+".paths", "at least one path or glob is required")
		}
		for j, p := range append(append([]string{}, s.Paths...), s.Exclude...) {
			if _, err := filepath.Match(p, ""); err != nil {
				field := "paths"
				if j >= len(s.Paths) {
					field, j = "exclude", j-len(s.Paths)
				}
				v.add(fmt.Sprintf("%s.%s[%d]", key, field, j), "%q is not a valid glob: %v", p, err)
			}
		}
		v.oneOf(key+".start_at", s.StartAt, "beginning", "end")
		if s.RefreshInterval <= 0 {
			v.add(key+".refresh_interval", "must be positive")
		}
		if s.RotateWait < 0 {
			v.add(key+".rotate_wait", "must not be negative")
		}
	}
}

func (c *Config) validateRecords(v *collector) {
	switch c.Records.Format {
	case "meter":
		if len(c.Records.Fields) > 0 {
			v.add("records.fields", "only used with records.format json")
		}
	case "json":
		if err := record.CompileFields(c.Records.Fields); err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				key, msg, _ := strings.Cut(line, ": ")
				v.add(key, "%s", msg)
			}
		}
	default:
		v.add("records.format", "%q not supported; use meter, json", c.Records.Format)
	}
	if c.Records.MaxLineSize < 1<<10 || c.Records.MaxLineSize > 64<<20 {
		v.add("records.max_line_size", "%s must be between 1KiB and 64MiB", c.Records.MaxLineSize)
	}
}

func (c *Config) validateBuffer(v *collector) {
	b := c.Buffer
	if b.Dir == "" {
		v.add("buffer.dir", "required")
	}
	if b.SegmentSize < 64<<10 || b.SegmentSize > 1<<30 {
		v.add("buffer.segment_size", "%s must be between 64KiB and 1GiB", b.SegmentSize)
	}
	if b.MaxSize < 2*b.SegmentSize {
		v.add("buffer.max_size", "%s must be at least twice buffer.segment_size (%s)", b.MaxSize, b.SegmentSize)
	}
	if b.FlushInterval <= 0 {
		v.add("buffer.flush_interval", "must be positive")
	}
	v.oneOf("buffer.sync", b.Sync, "always", "interval", "never")
	if b.Sync == "interval" && b.SyncInterval <= 0 {
		v.add("buffer.sync_interval", "must be positive with buffer.sync interval")
	}
}

func (c *Config) validateOutput(v *collector) {
	o := c.Output
	checkDestination(v, "output.url", o.URL, true)
	if o.DeadLetterURL != "" {
		checkDestination(v, "output.dead_letter_url", o.DeadLetterURL, false)
	}
	for _, kf := range []struct{ key, format string }{
		{"output.key_format", o.KeyFormat},
		{"output.dead_letter_key_format", o.DeadLetterKeyFormat},
	} {
		if kf.format == "" {
			v.add(kf.key, "required")
			continue
		}
		if _, err := ship.CompileKeyFormat("", kf.format, "host"); err != nil {
			v.add(kf.key, "%s", strings.TrimPrefix(err.Error(), ship.ErrKeyFormat.Error()+" "))
		}
	}
	v.oneOf("output.compression", o.Compression, "gzip", "none")
	v.oneOf("output.format", o.Format, "ndjson", "json")
	v.oneOf("output.acl", o.ACL, cannedACLs...)
	v.oneOf("output.storage_class", o.StorageClass, storageClasses...)
	v.oneOf("output.server_side_encryption", o.ServerSideEncryption, "", "AES256", "aws:kms", "aws:kms:dsse")
	if o.SSEKMSKeyID != "" && !strings.HasPrefix(o.ServerSideEncryption, "aws:kms") {
		v.add("output.sse_kms_key_id", "needs output.server_side_encryption aws:kms")
	}
	if o.Endpoint != "" {
		if u, err := url.Parse(o.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.add("output.endpoint", "%q is not an http(s) URL", o.Endpoint)
		}
	}
	if o.RoleARN != "" && !strings.HasPrefix(o.RoleARN, "arn:") {
		v.add("output.role_arn", "%q is not an ARN", o.RoleARN)
	}
	if o.MultipartThreshold < 5<<20 {
		v.add("output.multipart_threshold", "%s must be at least 5MiB (S3's minimum part size)", o.MultipartThreshold)
	}
	if o.Concurrency < 1 || o.Concurrency > 64 {
		v.add("output.concurrency", "%d must be between 1 and 64", o.Concurrency)
	}
	for k, val := range o.Tags {
		if k == "" || len(k) > 128 || len(val) > 256 {
			v.add("output.tags."+k, "S3 tag keys are 1-128 characters and values up to 256")
		}
	}
	if len(o.Tags) > 10 {
		v.add("output.tags", "S3 allows at most 10 tags per object, got %d", len(o.Tags))
	}
}

// checkDestination validates an s3:// or file:// URL with the parser the
// output itself uses, so check rejects exactly what start-up would; the
// commonest mistakes get a short message of their own.
func checkDestination(v *collector, key, raw string, required bool) {
	if raw == "" {
		if required {
			v.add(key, "required (s3://bucket/prefix or file:///dir/prefix)")
		}
		return
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		v.add(key, "%q is not a URL: %v", raw, err)
		return
	case u.Scheme == "":
		v.add(key, "%q has no scheme; use s3:// or file://", raw)
		return
	case u.Scheme != "s3" && u.Scheme != "file":
		v.add(key, "scheme %q not supported; use s3:// or file://", u.Scheme)
		return
	case u.Scheme == "s3" && u.Host == "":
		v.add(key, "%q has no bucket; use s3://bucket/prefix", raw)
		return
	}
	if _, err := ship.ParseURL(raw); err != nil {
		v.add(key, "%s", strings.TrimPrefix(err.Error(), ship.ErrURL.Error()+" "))
	}
}

var dimensionPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,100}$`)

func (c *Config) validateMetering(v *collector) {
	m := c.Metering
	v.oneOf("metering.mode", m.Mode, "off", "meter_usage", "batch_meter_usage")
	if m.Mode == "off" || m.Mode == "" {
		return
	}
	if m.ProductCode == "" {
		v.add("metering.product_code", "required when metering.mode is %s", m.Mode)
	}
	if len(m.Dimensions) == 0 {
		v.add("metering.dimensions", "map at least one meterApiName to a Marketplace dimension")
	}
	for api, spec := range m.Dimensions {
		if _, _, err := ParseDimension(spec); err != nil {
			v.add("metering.dimensions."+api, "%v", err)
		}
	}
	if len(m.AllocationTags) > 5 {
		v.add("metering.allocation_tags", "at most 5 tags per allocation, got %d", len(m.AllocationTags))
	}
	for i, t := range m.AllocationTags {
		key := fmt.Sprintf("metering.allocation_tags[%d]", i)
		switch {
		case !ValidTag(t, MaxTagKeyLen):
			v.add(key, "%q is not a valid tag key (1-100 of a-z A-Z 0-9 + space..= . _ : / @)", t)
		case slices.Index(m.AllocationTags, t) != i:
			v.add(key, "duplicate tag %q", t)
		}
	}
	v.oneOf("metering.customer_id_type", m.CustomerIDType, "aws_account_id", "customer_identifier")
	switch lic := m.LicenseARN; {
	case lic == "":
	case m.Mode != "batch_meter_usage":
		v.add("metering.license_arn", "only used with metering.mode batch_meter_usage")
	case lic == "dimension:":
		v.add("metering.license_arn", "dimension: needs a record dimension name")
	case !strings.HasPrefix(lic, "dimension:") && !strings.HasPrefix(lic, "arn:"):
		v.add("metering.license_arn", "%q is neither an ARN (arn:...) nor dimension:<name>", lic)
	}
	if m.Lateness < 0 {
		v.add("metering.lateness", "must not be negative")
	}
	if m.Window.D().Hours() < 1 || m.Window.D().Hours() > 24*7 {
		v.add("metering.window", "%s must be between 1h and 168h", m.Window)
	} else if m.Lateness >= 0 && m.Window.D()-time.Hour-m.Lateness.D() < MinReportSlack {
		// Hour H closes at H+1h+lateness and is refused from H+window on:
		// in between it must have time to be sent.
		v.add("metering.window", "%s leaves no time to report an hour: it must exceed 1h + metering.lateness (%s) by at least %s",
			m.Window, m.Lateness, MinReportSlack)
	}
	if m.MaxCarry < 0 {
		v.add("metering.max_carry", "must not be negative (0: no limit)")
	}
	if m.CatchUpTimeout < 0 {
		v.add("metering.catch_up_timeout", "must not be negative")
	}
	if m.StateURL != "" {
		if m.Mode != "batch_meter_usage" {
			v.add("metering.state_url", "only used with metering.mode batch_meter_usage (meter_usage reports per pod)")
		} else if _, err := ship.ParseURL(m.StateURL); err != nil {
			v.add("metering.state_url", "%v", strings.Replace(err.Error(), "output.url", "URL", 1))
		}
	}
	if m.MergeGrace < 0 || m.MergeGrace.D() > m.Window.D()/2 {
		v.add("metering.merge_grace", "%s must be between 0 and half of metering.window (%s)", m.MergeGrace, m.Window)
	}
	if m.Endpoint != "" {
		if u, err := url.Parse(m.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.add("metering.endpoint", "%q is not an http(s) URL", m.Endpoint)
		}
	}
}

// MinReportSlack is the least time metering.window must leave between an
// hour closing (its end plus metering.lateness) and AWS refusing it.
const MinReportSlack = 5 * time.Minute

// ValidateMetering checks a metering section as Validate does, for a
// caller given the section alone (metering.New).
func ValidateMetering(m Metering) error {
	c := Config{Metering: m}
	v := &collector{}
	c.validateMetering(v)
	if len(v.errs) == 0 {
		return nil
	}
	return v.errs
}

// AWS Marketplace's limits on allocation tags.
const (
	MaxTagKeyLen   = 100
	MaxTagValueLen = 256
)

// TagByteOK reports whether c is allowed by AWS's allocation tag pattern
// ^[a-zA-Z0-9+ -=._:\/@]+$, in which " -=" is the range space..'='.
func TagByteOK(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= ' ' && c <= '=' ||
		c == '+' || c == '.' || c == '_' || c == ':' || c == '/' || c == '@'
}

// ValidTag reports whether s is a valid tag key (maxLen MaxTagKeyLen) or
// value (MaxTagValueLen).
func ValidTag(s string, maxLen int) bool {
	if s == "" || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !TagByteOK(s[i]) {
			return false
		}
	}
	return true
}

// ParseDimension reads a metering.dimensions value: "dimension" or
// "dimension*factor" with factor > 0 (e.g. bytes counted, GB billed:
// "storage_gb*0.000000001").
func ParseDimension(spec string) (name string, factor float64, err error) {
	name, f, hasFactor := strings.Cut(strings.TrimSpace(spec), "*")
	name = strings.TrimSpace(name)
	if !dimensionPattern.MatchString(name) {
		return "", 0, fmt.Errorf("%q is not a Marketplace dimension name (1-100 of A-Z a-z 0-9 _ . -)", name)
	}
	factor = 1
	if hasFactor {
		factor, err = strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || !(factor > 0) || factor > 1e12 {
			return "", 0, fmt.Errorf("factor %q must be a positive number", f)
		}
	}
	return name, factor, nil
}

func (c *Config) validateJobs(v *collector) {
	j := c.Jobs
	if _, port, err := net.SplitHostPort(j.Listen); err != nil {
		v.add("jobs.listen", "%q is not host:port (e.g. :9465, 127.0.0.1:9465)", j.Listen)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		v.add("jobs.listen", "port %q is not a number in 0..65535", port)
	}
	for i, k := range j.APIKeys {
		if len(k) < 16 {
			// The key is the only thing between the network and every
			// job: refuse guessable ones. The key itself is never echoed.
			v.add(fmt.Sprintf("jobs.api_keys[%d]", i), "too short (%d characters); use at least 16, e.g. openssl rand -hex 24", len(k))
		}
	}
	checkDestination(v, "jobs.store", j.Store, true)
	if j.Tick <= 0 {
		v.add("jobs.tick", "must be positive")
	}
	if s := j.SMTP; s.Host != "" {
		if s.Port < 1 || s.Port > 65535 {
			v.add("jobs.smtp.port", "%d is not a port in 1..65535", s.Port)
		}
		if s.From == "" {
			v.add("jobs.smtp.from", "required with jobs.smtp.host (the sender address)")
		} else if _, err := mail.ParseAddress(s.From); err != nil {
			v.add("jobs.smtp.from", "%q is not an email address", s.From)
		}
		if s.Password != "" && s.Username == "" {
			v.add("jobs.smtp.username", "required with jobs.smtp.password")
		}
	}
	if e := j.S3.Endpoint; e != "" {
		if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.add("jobs.s3.endpoint", "%q is not an http(s) URL", e)
		}
	}
	if j.S3.RoleARN != "" && !strings.HasPrefix(j.S3.RoleARN, "arn:") {
		v.add("jobs.s3.role_arn", "%q is not an ARN", j.S3.RoleARN)
	}
}
