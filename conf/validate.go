package conf

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// FieldError is one problem with one key.
type FieldError struct {
	Key  string // YAML path, e.g. output.url or sources[0].paths
	Line int    // line of the key in the file; 0: not from a file
	// Property is the Fluent Bit property whose value did not parse
	// (FromProperties), e.g. buffer_max_size; "" otherwise.
	Property string
	Msg      string // what is wrong; what is accepted
}

// Error renders "key (line N): msg", "property: msg" for a Fluent Bit
// property, or "key: msg".
func (e FieldError) Error() string {
	switch {
	case e.Line > 0:
		return fmt.Sprintf("%s (line %d): %s", e.Key, e.Line, e.Msg)
	case e.Property != "":
		return e.Property + ": " + e.Msg
	}
	return e.Key + ": " + e.Msg
}

// Errors is every problem found: in document order from Parse, sorted by
// key from Report.
type Errors []FieldError

func (e Errors) Error() string {
	lines := make([]string, len(e))
	for i, fe := range e {
		lines[i] = fe.Error()
	}
	return strings.Join(lines, "\n")
}

// Add appends a problem with key.
func (e *Errors) Add(key, format string, args ...any) {
	*e = append(*e, FieldError{Key: key, Msg: fmt.Sprintf(format, args...)})
}

// OneOf adds a problem unless v is one of allowed.
func (e *Errors) OneOf(key, v string, allowed ...string) {
	if !slices.Contains(allowed, v) {
		e.Add(key, "%q not supported; use %s", v, strings.Join(allowed, ", "))
	}
}

// checkEnum is OneOf for a Config built in code rather than parsed (Parse
// already refuses other values).
func checkEnum[T ~string](v *Errors, key string, val T, allowed ...T) {
	var t T
	if err := parseEnum(&t, string(val), allowed...); err != nil {
		v.Add(key, "%v", err)
	}
}

// Report is the last step of validation: it joins the problems Parse (or
// FromProperties) found, parsed (nil or an Errors), and those of the rules
// into one error, nil when there are none. Each problem gets its key's
// line; a rule's problem about a key that did not parse is dropped (the
// key kept its default, which is not what the user wrote); the result is
// sorted by key.
func (c *Config) Report(parsed error, rules ...Errors) error {
	var all Errors
	if parsed != nil {
		if !errors.As(parsed, &all) {
			return parsed
		}
		all = slices.Clone(all)
	}
	failed := make([]string, len(all))
	for i, fe := range all {
		failed[i] = fe.Key
	}
	for _, errs := range rules {
		for _, fe := range errs {
			if !slices.ContainsFunc(failed, func(k string) bool { return within(fe.Key, k) }) {
				all = append(all, fe)
			}
		}
	}
	if len(all) == 0 {
		return nil
	}
	for i := range all {
		if all[i].Line == 0 {
			all[i].Line = c.Line(all[i].Key)
		}
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].Key < all[j].Key })
	return all
}

// within reports whether key is parent or a key under it.
func within(key, parent string) bool {
	rest, ok := strings.CutPrefix(key, parent)
	return ok && (rest == "" || rest[0] == '.' || rest[0] == '[')
}

var agentIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

var cannedACLs = []string{"", "private", "public-read", "public-read-write", "authenticated-read", "aws-exec-read", "bucket-owner-read", "bucket-owner-full-control"}

var storageClasses = []string{"", "STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER", "DEEP_ARCHIVE", "GLACIER_IR", "EXPRESS_ONEZONE"}

// Check runs conf's own rules: those about one key or keys of one
// section that need nothing but conf (ranges, enums, addresses). The
// rules of the packages that use a setting (output URLs and key formats:
// ship; records.fields: record; metering: metering and metering/shared;
// jobs: export) live there, and engine.Validate runs them all; that is
// the one entry point check, start-up and the plugin share. needSources
// is true for `metership run`, which has nothing to do without inputs.
func (c *Config) Check(needSources bool) Errors {
	var v Errors
	c.validateAgent(&v, needSources)
	c.validateRecords(&v)
	c.validateBuffer(&v)
	c.validateOutput(&v)
	// The rest of metering is metering's rules.
	checkEnum(&v, "metering.mode", c.Metering.Mode, MeteringOff, MeteringMeterUsage, MeteringBatchMeterUsage)
	if l := c.Server.Listen; l != "" && l != "off" {
		CheckListen(&v, "server.listen", l, `:9464, 127.0.0.1:9464; "off" disables`)
	}
	if c.Server.UnreadyAfter <= 0 {
		v.Add("server.unready_after", "must be positive")
	}
	v.OneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.OneOf("log.format", c.Log.Format, "json", "console")
	return v
}

// CheckListen adds a problem unless addr is host:port; examples are
// shown in the message.
func CheckListen(v *Errors, key, addr, examples string) {
	if _, port, err := net.SplitHostPort(addr); err != nil {
		v.Add(key, "%q is not host:port (e.g. %s)", addr, examples)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		v.Add(key, "port %q is not a number in 0..65535", port)
	}
}

func (c *Config) validateAgent(v *Errors, needSources bool) {
	if c.Agent.ID != "" && !agentIDPattern.MatchString(c.Agent.ID) {
		v.Add("agent.id", "%q must be 1-64 characters of A-Z a-z 0-9 . _ -", c.Agent.ID)
	}
	if c.Agent.ShutdownTimeout <= 0 {
		v.Add("agent.shutdown_timeout", "must be positive")
	}
	if needSources && len(c.Sources) == 0 {
		v.Add("sources", "no sources configured; add e.g. {type: tail, paths: [\"/var/log/app/*.log\"]}")
	}
	for i, s := range c.Sources {
		key := fmt.Sprintf("sources[%d]", i)
		v.OneOf(key+".type", s.Type, "tail")
		if len(s.Paths) == 0 {
			v.Add(key+".paths", "at least one path or glob is required")
		}
		for j, p := range append(append([]string{}, s.Paths...), s.Exclude...) {
			if _, err := filepath.Match(p, ""); err != nil {
				field := "paths"
				if j >= len(s.Paths) {
					field, j = "exclude", j-len(s.Paths)
				}
				v.Add(fmt.Sprintf("%s.%s[%d]", key, field, j), "%q is not a valid glob: %v", p, err)
			}
		}
		v.OneOf(key+".start_at", s.StartAt, "beginning", "end")
		if s.RefreshInterval <= 0 {
			v.Add(key+".refresh_interval", "must be positive")
		}
		if s.RotateWait < 0 {
			v.Add(key+".rotate_wait", "must not be negative")
		}
	}
}

func (c *Config) validateRecords(v *Errors) {
	switch c.Records.Format {
	case "meter":
		if len(c.Records.Fields) > 0 {
			v.Add("records.fields", "only used with records.format json")
		}
	case "json": // the mapping itself is record's rule
	default:
		v.Add("records.format", "%q not supported; use meter, json", c.Records.Format)
	}
	if c.Records.MaxLineSize < 1<<10 || c.Records.MaxLineSize > 64<<20 {
		v.Add("records.max_line_size", "%s must be between 1KiB and 64MiB", c.Records.MaxLineSize)
	}
}

func (c *Config) validateBuffer(v *Errors) {
	b := c.Buffer
	if b.Dir == "" {
		v.Add("buffer.dir", "required")
	}
	if b.SegmentSize < 64<<10 || b.SegmentSize > 1<<30 {
		v.Add("buffer.segment_size", "%s must be between 64KiB and 1GiB", b.SegmentSize)
	}
	if b.MaxSize < 2*b.SegmentSize {
		v.Add("buffer.max_size", "%s must be at least twice buffer.segment_size (%s)", b.MaxSize, b.SegmentSize)
	}
	if b.FlushInterval <= 0 {
		v.Add("buffer.flush_interval", "must be positive")
	}
	checkEnum(v, "buffer.sync", b.Sync, SyncAlways, SyncInterval, SyncNever)
	if b.Sync == SyncInterval && b.SyncInterval <= 0 {
		v.Add("buffer.sync_interval", "must be positive with buffer.sync interval")
	}
}

func (c *Config) validateOutput(v *Errors) {
	o := c.Output
	// The URLs and key formats are ship's rules; conf only requires them.
	if o.URL == "" {
		v.Add("output.url", "required (s3://bucket/prefix or file:///dir/prefix)")
	}
	if o.KeyFormat == "" {
		v.Add("output.key_format", "required")
	}
	if o.DeadLetterKeyFormat == "" {
		v.Add("output.dead_letter_key_format", "required")
	}
	v.OneOf("output.compression", o.Compression, "gzip", "none")
	v.OneOf("output.format", o.Format, "ndjson", "json")
	v.OneOf("output.acl", o.ACL, cannedACLs...)
	v.OneOf("output.storage_class", o.StorageClass, storageClasses...)
	v.OneOf("output.server_side_encryption", o.ServerSideEncryption, "", "AES256", "aws:kms", "aws:kms:dsse")
	if o.SSEKMSKeyID != "" && !strings.HasPrefix(o.ServerSideEncryption, "aws:kms") {
		v.Add("output.sse_kms_key_id", "needs output.server_side_encryption aws:kms")
	}
	if o.Endpoint != "" {
		CheckHTTPURL(v, "output.endpoint", o.Endpoint)
	}
	if o.RoleARN != "" && !strings.HasPrefix(o.RoleARN, "arn:") {
		v.Add("output.role_arn", "%q is not an ARN", o.RoleARN)
	}
	if o.MultipartThreshold < 5<<20 {
		v.Add("output.multipart_threshold", "%s must be at least 5MiB (S3's minimum part size)", o.MultipartThreshold)
	}
	if o.Concurrency < 1 || o.Concurrency > 64 {
		v.Add("output.concurrency", "%d must be between 1 and 64", o.Concurrency)
	}
	for k, val := range o.Tags {
		if k == "" || len(k) > 128 || len(val) > 256 {
			v.Add("output.tags."+k, "S3 tag keys are 1-128 characters and values up to 256")
		}
	}
	if len(o.Tags) > 10 {
		v.Add("output.tags", "S3 allows at most 10 tags per object, got %d", len(o.Tags))
	}
}

// CheckHTTPURL adds a problem unless raw is an http(s) URL with a host
// (an endpoint).
func CheckHTTPURL(v *Errors, key, raw string) {
	if u, err := url.Parse(raw); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.Add(key, "%q is not an http(s) URL", raw)
	}
}
