package export

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/mail"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Job is one export job, in the Amberflo Jobs API's JSON shape.
type Job struct {
	ID                     string              `json:"id,omitempty"`
	JobName                string              `json:"jobName"`
	Description            string              `json:"description,omitempty"`
	S3URL                  string              `json:"s3Url"`
	Format                 string              `json:"format"`
	AggregationBucket      string              `json:"aggregationBucket"`
	Range                  string              `json:"range"`
	EndTimeOffset          string              `json:"endTimeOffset,omitempty"`
	Cron                   string              `json:"cron,omitempty"`
	ScheduledTimeInSeconds int64               `json:"scheduledTimeInSeconds,omitempty"`
	Email                  string              `json:"email,omitempty"`
	Enabled                *bool               `json:"enabled,omitempty"`
	Sparse                 *bool               `json:"sparse,omitempty"`
	MinimizeFresh          bool                `json:"minimizeFresh"`
	MeterAPINames          []string            `json:"meterApiNames,omitempty"`
	GroupBy                []string            `json:"groupBy,omitempty"`
	Filter                 map[string][]string `json:"filter,omitempty"`
	RescaleFunction        *Rescale            `json:"rescaleFunction,omitempty"`
	CreateTime             int64               `json:"createTime,omitempty"`
	UpdateTime             int64               `json:"updateTime,omitempty"`
}

// Rescale multiplies every exported value by Coefficient. The coefficient
// keeps the JSON number's text so 0.001 scales by exactly 1/1000.
type Rescale struct {
	Function    string      `json:"function"`
	Coefficient json.Number `json:"coefficient"`
}

// IsEnabled is Enabled with its default, true.
func (j *Job) IsEnabled() bool { return j.Enabled == nil || *j.Enabled }

// IsSparse is Sparse with its default, true: empty buckets are left out
// unless the job asks for zero rows.
func (j *Job) IsSparse() bool { return j.Sparse == nil || *j.Sparse }

// FieldError names one bad field of a job.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// ValidationError is every problem of a job at once.
type ValidationError struct {
	Errors []FieldError `json:"errors"`
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Errors))
	for i, f := range e.Errors {
		parts[i] = f.Field + ": " + f.Message
	}
	return "invalid job: " + strings.Join(parts, "; ")
}

func (e *ValidationError) add(field, format string, args ...any) {
	e.Errors = append(e.Errors, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

// knownFields are the JSON names a job may carry; anything else is an
// error rather than silently ignored (a typo such as "sprase" must not
// fall back to a default).
var knownFields = map[string]bool{
	"id": true, "jobName": true, "description": true, "s3Url": true, "format": true,
	"aggregationBucket": true, "range": true, "endTimeOffset": true, "cron": true,
	"scheduledTimeInSeconds": true, "email": true, "enabled": true, "sparse": true,
	"minimizeFresh": true, "meterApiNames": true, "groupBy": true, "filter": true,
	"rescaleFunction": true, "createTime": true, "updateTime": true, "lastRun": true,
}

// DecodeJob reads a job from JSON and validates it, reporting every bad
// field (type errors and unknown fields included) in one ValidationError.
// The result is normalized: names trimmed, lists sorted and deduplicated.
func DecodeJob(body []byte) (*Job, error) {
	verr := &ValidationError{}
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil || raw == nil {
		verr.add("body", "not a JSON object: %v", errString(err))
		return nil, verr
	}
	if dec.More() {
		verr.add("body", "trailing data after the JSON object")
		return nil, verr
	}
	j := &Job{}
	fields := make([]string, 0, len(raw))
	for k := range raw {
		fields = append(fields, k)
	}
	sort.Strings(fields)
	for _, k := range fields {
		v := raw[k]
		if !knownFields[k] {
			verr.add(k, "unknown field")
			continue
		}
		if k == "lastRun" || k == "createTime" {
			continue // read-only, shown by GET; accepted back so a GET body can be PUT
		}
		var target any
		switch k {
		case "id":
			target = &j.ID
		case "jobName":
			target = &j.JobName
		case "description":
			target = &j.Description
		case "s3Url":
			target = &j.S3URL
		case "format":
			target = &j.Format
		case "aggregationBucket":
			target = &j.AggregationBucket
		case "range":
			target = &j.Range
		case "endTimeOffset":
			target = &j.EndTimeOffset
		case "cron":
			target = &j.Cron
		case "scheduledTimeInSeconds":
			target = &j.ScheduledTimeInSeconds
		case "email":
			target = &j.Email
		case "enabled":
			target = &j.Enabled
		case "sparse":
			target = &j.Sparse
		case "minimizeFresh":
			target = &j.MinimizeFresh
		case "meterApiNames":
			target = &j.MeterAPINames
		case "groupBy":
			target = &j.GroupBy
		case "filter":
			target = &j.Filter
		case "rescaleFunction":
			target = &j.RescaleFunction
		case "updateTime":
			target = &j.UpdateTime
		}
		if string(v) == "null" {
			continue
		}
		d := json.NewDecoder(bytes.NewReader(v))
		d.UseNumber()
		if k == "rescaleFunction" {
			d.DisallowUnknownFields()
		}
		if err := d.Decode(target); err != nil {
			verr.add(k, "wrong type: %s", typeMessage(err))
		}
	}
	j.normalize()
	j.validate(verr)
	if len(verr.Errors) > 0 {
		sort.SliceStable(verr.Errors, func(a, b int) bool { return verr.Errors[a].Field < verr.Errors[b].Field })
		return nil, verr
	}
	return j, nil
}

func errString(err error) string {
	if err == nil {
		return "null"
	}
	return err.Error()
}

func typeMessage(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		want := te.Type.String()
		switch want {
		case "string":
			want = "a string"
		case "int64":
			want = "an integer"
		case "*bool", "bool":
			want = "true or false"
		case "[]string":
			want = "an array of strings"
		case "map[string][]string":
			want = "an object of dimension -> array of strings"
		}
		return fmt.Sprintf("got %s, want %s", te.Value, want)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

func (j *Job) normalize() {
	j.JobName = strings.TrimSpace(j.JobName)
	j.S3URL = strings.TrimSpace(j.S3URL)
	j.Format = strings.ToLower(strings.TrimSpace(j.Format))
	j.AggregationBucket = strings.ToLower(strings.TrimSpace(j.AggregationBucket))
	j.Range = strings.TrimSpace(j.Range)
	j.EndTimeOffset = strings.TrimSpace(j.EndTimeOffset)
	j.Cron = strings.TrimSpace(j.Cron)
	j.Email = strings.TrimSpace(j.Email)
	j.MeterAPINames = sortedUnique(j.MeterAPINames)
	// groupBy keeps its order: it is the order of the output's columns.
	for k, vals := range j.Filter {
		j.Filter[k] = sortedUnique(vals)
	}
	// Defaults are written out, so the normalized job shows what runs.
	if j.Enabled == nil {
		j.Enabled = ptr(true)
	}
	if j.Sparse == nil {
		j.Sparse = ptr(true)
	}
	if j.RescaleFunction != nil {
		j.RescaleFunction.Function = strings.ToLower(strings.TrimSpace(j.RescaleFunction.Function))
	}
}

func sortedUnique(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	out := make([]string, 0, len(s))
	for _, v := range s {
		out = append(out, strings.TrimSpace(v))
	}
	sort.Strings(out)
	return compact(out)
}

func compact(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

var (
	jobNamePattern = regexp.MustCompile(`^[A-Za-z0-9 ,()-]{1,100}$`)
	agoPattern     = regexp.MustCompile(`^ago\(([1-9][0-9]{0,5})([dhm])\)$`)
	namePattern    = regexp.MustCompile(`^[^\x00-\x1f"\\]{1,200}$`)
)

// The formats and buckets a job may name.
var (
	formatNames = []string{"csv", "json", "ndjson"}
	bucketNames = []string{"hour", "day", "week", "month"}
)

// maxRange bounds ago(...): the scheduler and the sparse rows enumerate
// buckets, so an absurd range must not become a billion zero rows.
const maxRange = 5 * 366 * 24 * time.Hour

func (j *Job) validate(v *ValidationError) {
	switch {
	case j.JobName == "":
		v.add("jobName", "required")
	case !jobNamePattern.MatchString(j.JobName):
		v.add("jobName", "%q: use 1-100 letters, digits, hyphens, spaces, commas and parentheses only", j.JobName)
	}
	if j.S3URL == "" {
		v.add("s3Url", "required (bucket/path, s3://bucket/path or file:///dir)")
	} else if _, err := ParseLocation(j.S3URL); err != nil {
		v.add("s3Url", "%v", err)
	}
	checkEnum(v, "format", j.Format, formatNames)
	checkEnum(v, "aggregationBucket", j.AggregationBucket, bucketNames)
	if j.Range == "" {
		v.add("range", "required, e.g. ago(7d)")
	} else if d, err := ParseAgo(j.Range); err != nil {
		v.add("range", "%v", err)
	} else if d > maxRange {
		v.add("range", "%q is longer than 5 years", j.Range)
	}
	if j.EndTimeOffset != "" {
		if off, err := ParseAgo(j.EndTimeOffset); err != nil {
			v.add("endTimeOffset", "%v", err)
		} else if rng, err := ParseAgo(j.Range); err == nil && off >= rng {
			v.add("endTimeOffset", "%s must be shorter than range %s, or the window is empty", j.EndTimeOffset, j.Range)
		}
	}
	if j.Cron != "" && j.ScheduledTimeInSeconds != 0 {
		v.add("cron", "set cron or scheduledTimeInSeconds, not both")
		v.add("scheduledTimeInSeconds", "set cron or scheduledTimeInSeconds, not both")
	}
	if j.Cron != "" {
		if _, err := cronParser.Parse(j.Cron); err != nil || strings.Contains(j.Cron, "TZ=") {
			msg := "must be 5 fields: minute hour day-of-month month day-of-week (UTC)"
			if err != nil {
				msg += ": " + err.Error()
			}
			v.add("cron", "%q %s", j.Cron, msg)
		}
	}
	if j.ScheduledTimeInSeconds < 0 || j.ScheduledTimeInSeconds > 1e11 {
		v.add("scheduledTimeInSeconds", "%d is not an epoch time in seconds", j.ScheduledTimeInSeconds)
	}
	if j.Email != "" {
		if a, err := mail.ParseAddress(j.Email); err != nil || a.Name != "" || a.Address != j.Email {
			v.add("email", "%q is not an email address", j.Email)
		}
	}
	for i, m := range j.MeterAPINames {
		if !namePattern.MatchString(m) {
			v.add(fmt.Sprintf("meterApiNames[%d]", i), "%q is not a meter name", m)
		}
	}
	seen := map[string]bool{}
	for i, g := range j.GroupBy {
		switch {
		case !namePattern.MatchString(g):
			v.add(fmt.Sprintf("groupBy[%d]", i), "%q is not a dimension name", g)
		case g == "time" || g == "meterApiName" || g == "value":
			v.add(fmt.Sprintf("groupBy[%d]", i), "%q is always a column; group by dimensions or customerId", g)
		case g == "meterValue" || g == "meterTimeInMillis" || g == "uniqueId" || g == "dimensions" || strings.HasPrefix(g, "export_"):
			v.add(fmt.Sprintf("groupBy[%d]", i), "%q is a record field or reserved; group by dimensions or customerId", g)
		case seen[g]:
			v.add(fmt.Sprintf("groupBy[%d]", i), "%q listed twice", g)
		}
		seen[g] = true
	}
	keys := make([]string, 0, len(j.Filter))
	for k := range j.Filter {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch {
		case !namePattern.MatchString(k):
			v.add("filter", "%q is not a dimension name", k)
		case len(j.Filter[k]) == 0:
			v.add("filter."+k, "needs at least one allowed value")
		}
		for _, val := range j.Filter[k] {
			if !namePattern.MatchString(val) {
				v.add("filter."+k, "%q is not a dimension value", val)
			}
		}
	}
	if r := j.RescaleFunction; r != nil {
		if r.Function != "multiply" {
			v.add("rescaleFunction.function", "%q not supported; use multiply", r.Function)
		}
		if _, err := r.rat(); err != nil {
			v.add("rescaleFunction.coefficient", "%v", err)
		}
	}
}

func checkEnum(v *ValidationError, field, got string, allowed []string) {
	if got == "" {
		v.add(field, "required: one of %s", strings.Join(allowed, ", "))
		return
	}
	for _, a := range allowed {
		if got == a {
			return
		}
	}
	v.add(field, "%q not supported; use %s", got, strings.Join(allowed, ", "))
}

// rat is the coefficient as an exact rational, positive and finite.
func (r *Rescale) rat() (*big.Rat, error) {
	if r.Coefficient == "" {
		return nil, fmt.Errorf("required, a positive number")
	}
	q, ok := new(big.Rat).SetString(string(r.Coefficient))
	if !ok || q.Sign() <= 0 || len(r.Coefficient) > 40 {
		return nil, fmt.Errorf("%s is not a positive number", r.Coefficient)
	}
	if decimalScale(q) < 0 || q.Cmp(big.NewRat(1e12, 1)) > 0 {
		return nil, fmt.Errorf("%s must be at most 1e12 with at most 18 decimal places", r.Coefficient)
	}
	return q, nil
}

// decimalScale is the number of decimal places q needs, or -1 when it
// has more than 18 (or no finite decimal form).
func decimalScale(q *big.Rat) int {
	n := new(big.Int)
	ten := big.NewInt(10)
	p := big.NewInt(1)
	for s := 0; s <= 18; s++ {
		n.Mul(q.Num(), p)
		if new(big.Int).Rem(n, q.Denom()).Sign() == 0 {
			return s
		}
		p.Mul(p, ten)
	}
	return -1
}

// ParseAgo reads ago(#x): # a positive integer, x one of d, h, m.
func ParseAgo(s string) (time.Duration, error) {
	m := agoPattern.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not ago(#x) with # a positive integer and x one of d, h, m (e.g. ago(7d))", s)
	}
	n, _ := strconv.Atoi(m[1])
	unit := map[string]time.Duration{"d": 24 * time.Hour, "h": time.Hour, "m": time.Minute}[m[2]]
	return time.Duration(n) * unit, nil
}

func ptr[T any](v T) *T { return &v }
