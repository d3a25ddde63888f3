package metering

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/metership/metership/conf"
)

var dimensionPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,100}$`)

// ValidateConfig checks a metering section with metering's rules
// (engine.Validate runs it; conf has checked metering.mode). Nothing is
// checked when metering is off.
func ValidateConfig(m conf.Metering) conf.Errors {
	var v conf.Errors
	if m.Mode != ModeMeterUsage && m.Mode != ModeBatchMeterUsage {
		return nil
	}
	if m.ProductCode == "" {
		v.Add("metering.product_code", "required when metering.mode is %s", m.Mode)
	}
	if len(m.Dimensions) == 0 {
		v.Add("metering.dimensions", "map at least one meterApiName to a Marketplace dimension")
	}
	for api, spec := range m.Dimensions {
		if _, _, err := ParseDimension(spec); err != nil {
			v.Add("metering.dimensions."+api, "%v", err)
		}
	}
	if len(m.AllocationTags) > 5 {
		v.Add("metering.allocation_tags", "at most 5 tags per allocation, got %d", len(m.AllocationTags))
	}
	for i, t := range m.AllocationTags {
		key := fmt.Sprintf("metering.allocation_tags[%d]", i)
		switch {
		case !ValidTag(t, MaxTagKeyLen):
			v.Add(key, "%q is not a valid tag key (1-100 of a-z A-Z 0-9 + space..= . _ : / @)", t)
		case slices.Index(m.AllocationTags, t) != i:
			v.Add(key, "duplicate tag %q", t)
		}
	}
	v.OneOf("metering.customer_id_type", m.CustomerIDType, "aws_account_id", "customer_identifier")
	switch lic := m.LicenseARN; {
	case lic == "":
	case m.Mode != "batch_meter_usage":
		v.Add("metering.license_arn", "only used with metering.mode batch_meter_usage")
	case lic == "dimension:":
		v.Add("metering.license_arn", "dimension: needs a record dimension name")
	case !strings.HasPrefix(lic, "dimension:") && !strings.HasPrefix(lic, "arn:"):
		v.Add("metering.license_arn", "%q is neither an ARN (arn:...) nor dimension:<name>", lic)
	}
	if m.Lateness < 0 {
		v.Add("metering.lateness", "must not be negative")
	}
	if m.Window.D().Hours() < 1 || m.Window.D().Hours() > 24*7 {
		v.Add("metering.window", "%s must be between 1h and 168h", m.Window)
	} else if m.Lateness >= 0 && m.Window.D()-time.Hour-m.Lateness.D() < MinReportSlack {
		// Hour H closes at H+1h+lateness and is refused from H+window on:
		// in between it must have time to be sent.
		v.Add("metering.window", "%s leaves no time to report an hour: it must exceed 1h + metering.lateness (%s) by at least %s",
			m.Window, m.Lateness, MinReportSlack)
	}
	if m.MaxCarry < 0 {
		v.Add("metering.max_carry", "must not be negative (0: no limit)")
	}
	if m.CatchUpTimeout < 0 {
		v.Add("metering.catch_up_timeout", "must not be negative")
	}
	if m.Endpoint != "" {
		conf.CheckHTTPURL(&v, "metering.endpoint", m.Endpoint)
	}
	return v
}

// MinReportSlack is the least time metering.window must leave between an
// hour closing (its end plus metering.lateness) and AWS refusing it.
const MinReportSlack = 5 * time.Minute

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
