package emulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Limits from the AWS Marketplace Metering Service model.
const (
	maxQuantity       = math.MaxInt32
	maxAllocations    = 2500
	maxTagsPerAlloc   = 5
	maxTagKeyLen      = 100
	maxTagValueLen    = 256
	maxClientTokenLen = 64
	maxBatchRecords   = 25
	maxRequestBytes   = 1 << 20
	maxIdentifierLen  = 255
)

// tagPattern is AWS's TagKey and TagValue pattern, verbatim. Note that
// " -=" is a range (space to '='), so it admits more punctuation than it
// seems; AWS accepts the same set.
var tagPattern = regexp.MustCompile(`^[a-zA-Z0-9+ -=._:\/@]+$`)

// accountIDPattern is AWS's CustomerAWSAccountId pattern.
var accountIDPattern = regexp.MustCompile(`^[0-9]+$`)

// wireTag, wireAllocation and wireUsageRecord mirror the JSON shapes of the
// SDK's serializers. Numbers stay json.Number so ranges are checked exactly
// and records are echoed back byte for byte.
type wireTag struct {
	Key   *string `json:"Key,omitempty"`
	Value *string `json:"Value,omitempty"`
}

type wireAllocation struct {
	AllocatedUsageQuantity *json.Number `json:"AllocatedUsageQuantity,omitempty"`
	Tags                   []wireTag    `json:"Tags,omitempty"`
}

type wireUsageRecord struct {
	CustomerAWSAccountID *string          `json:"CustomerAWSAccountId,omitempty"`
	CustomerIdentifier   *string          `json:"CustomerIdentifier,omitempty"`
	Dimension            *string          `json:"Dimension,omitempty"`
	LicenseArn           *string          `json:"LicenseArn,omitempty"`
	Quantity             *json.Number     `json:"Quantity,omitempty"`
	Timestamp            *json.Number     `json:"Timestamp,omitempty"`
	UsageAllocations     []wireAllocation `json:"UsageAllocations,omitempty"`
}

type meterUsageInput struct {
	ClientToken      *string          `json:"ClientToken"`
	DryRun           *bool            `json:"DryRun"`
	ProductCode      *string          `json:"ProductCode"`
	Timestamp        *json.Number     `json:"Timestamp"`
	UsageAllocations []wireAllocation `json:"UsageAllocations"`
	UsageDimension   *string          `json:"UsageDimension"`
	UsageQuantity    *json.Number     `json:"UsageQuantity"`
}

type meterUsageOutput struct {
	MeteringRecordID string `json:"MeteringRecordId"`
}

type batchMeterUsageInput struct {
	ProductCode  *string           `json:"ProductCode"`
	UsageRecords []wireUsageRecord `json:"UsageRecords"`
}

type usageRecordResult struct {
	MeteringRecordID string          `json:"MeteringRecordId,omitempty"`
	Status           string          `json:"Status"`
	UsageRecord      wireUsageRecord `json:"UsageRecord"`
}

type batchMeterUsageOutput struct {
	Results            []usageRecordResult `json:"Results"`
	UnprocessedRecords []wireUsageRecord   `json:"UnprocessedRecords"`
}

type registerUsageInput struct {
	Nonce            *string      `json:"Nonce"`
	ProductCode      *string      `json:"ProductCode"`
	PublicKeyVersion *json.Number `json:"PublicKeyVersion"`
}

type registerUsageOutput struct {
	Signature string `json:"Signature"`
}

type resolveCustomerInput struct {
	RegistrationToken *string `json:"RegistrationToken"`
}

type resolveCustomerOutput struct {
	CustomerAWSAccountID string `json:"CustomerAWSAccountId,omitempty"`
	CustomerIdentifier   string `json:"CustomerIdentifier,omitempty"`
	LicenseArn           string `json:"LicenseArn,omitempty"`
	ProductCode          string `json:"ProductCode,omitempty"`
}

// decodeBody parses an AWS JSON 1.1 request body into v. An empty body is an
// empty structure, as the SDK sends "{}" for inputs without members.
func decodeBody(body []byte, v any) *apiError {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return badRequest(CodeSerialization, "cannot parse request body: %v", err)
	}
	if dec.More() {
		return badRequest(CodeSerialization, "trailing data after the request body")
	}
	return nil
}

// parseQuantity reads an integer member in 0..2147483647; absent means 0,
// as the model's default says.
func parseQuantity(name string, n *json.Number) (int64, *apiError) {
	if n == nil {
		return 0, nil
	}
	q, err := strconv.ParseInt(n.String(), 10, 64)
	if err != nil || q < 0 || q > maxQuantity {
		return 0, badRequest(CodeValidation, "%s must be an integer from 0 to %d, got %s", name, maxQuantity, n.String())
	}
	return q, nil
}

// parseTimestamp reads an epoch-seconds member, possibly fractional, to
// the millisecond: the precision the SDK sends and AWS keeps.
func parseTimestamp(name string, n *json.Number) (time.Time, *apiError) {
	if n == nil {
		return time.Time{}, badRequest(CodeValidation, "%s is required", name)
	}
	f, err := strconv.ParseFloat(n.String(), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > 1e12 {
		return time.Time{}, badRequest(CodeValidation, "%s must be epoch seconds, got %s", name, n.String())
	}
	return time.UnixMilli(int64(math.Round(f * 1e3))).UTC(), nil
}

// checkWindow enforces how far in the past or future a timestamp may be.
func checkWindow(name string, ts, now time.Time, window, skew time.Duration) *apiError {
	skew = max(skew, 0)
	// AWS: records are not accepted window (6 hours) or more after the
	// event.
	if !ts.After(now.Add(-window)) {
		return badRequest(CodeTimestampOutOfBounds, "%s %s is %s or more before the current time %s", name, ts.Format(time.RFC3339), window, now.UTC().Format(time.RFC3339))
	}
	if ts.After(now.Add(skew)) {
		return badRequest(CodeTimestampOutOfBounds, "%s %s is in the future (current time %s)", name, ts.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return nil
}

// checkMonthEnd enforces the billing-cycle rule of BatchMeterUsage: usage
// of a previous month is refused once grace has passed in the new month.
func checkMonthEnd(ts, now time.Time, grace time.Duration) *apiError {
	if grace < 0 {
		return nil
	}
	now = now.UTC()
	monthStart := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	if ts.Before(monthStart) && !now.Before(monthStart.Add(grace)) {
		return badRequest(CodeTimestampOutOfBounds, "Timestamp %s belongs to a billing month closed at %s", ts.Format(time.RFC3339), monthStart.Add(grace).Format(time.RFC3339))
	}
	return nil
}

// checkAllocations applies the UsageAllocations rules to a record of total
// quantity: 1..2500 allocations, 1..5 well-formed tags each (or none, for the
// untagged bucket), unique tag sets, quantities summing to total. Nil input
// (member absent) is valid and returns nil.
func checkAllocations(allocs []wireAllocation, total int64) ([]Allocation, *apiError) {
	if allocs == nil {
		return nil, nil
	}
	if len(allocs) == 0 || len(allocs) > maxAllocations {
		return nil, badRequest(CodeInvalidUsageAllocations, "UsageAllocations must hold 1 to %d allocations, got %d", maxAllocations, len(allocs))
	}
	out := make([]Allocation, len(allocs))
	sets := make(map[string]int, len(allocs))
	var sum int64
	for i, a := range allocs {
		if a.AllocatedUsageQuantity == nil {
			return nil, badRequest(CodeInvalidUsageAllocations, "UsageAllocations[%d].AllocatedUsageQuantity is required", i)
		}
		q, err := strconv.ParseInt(a.AllocatedUsageQuantity.String(), 10, 64)
		if err != nil || q < 0 || q > maxQuantity {
			return nil, badRequest(CodeInvalidUsageAllocations, "UsageAllocations[%d].AllocatedUsageQuantity must be an integer from 0 to %d, got %s", i, maxQuantity, a.AllocatedUsageQuantity.String())
		}
		sum += q
		tags, apiErr := checkTags(i, a.Tags)
		if apiErr != nil {
			return nil, apiErr
		}
		set := tagSetKey(tags)
		if j, dup := sets[set]; dup {
			return nil, badRequest(CodeInvalidUsageAllocations, "UsageAllocations[%d] and [%d] have the same tag set", j, i)
		}
		sets[set] = i
		out[i] = Allocation{Quantity: q, Tags: tags}
	}
	if sum != total {
		return nil, badRequest(CodeInvalidUsageAllocations, "UsageAllocations sum to %d, not the usage quantity %d", sum, total)
	}
	return out, nil
}

// checkTags validates the tags of allocation i.
func checkTags(i int, wire []wireTag) ([]Tag, *apiError) {
	if wire == nil {
		return nil, nil
	}
	if len(wire) == 0 || len(wire) > maxTagsPerAlloc {
		return nil, badRequest(CodeInvalidTag, "UsageAllocations[%d].Tags must hold 1 to %d tags, got %d", i, maxTagsPerAlloc, len(wire))
	}
	tags := make([]Tag, len(wire))
	keys := make(map[string]bool, len(wire))
	for j, t := range wire {
		if t.Key == nil || t.Value == nil {
			return nil, badRequest(CodeInvalidTag, "UsageAllocations[%d].Tags[%d] needs Key and Value", i, j)
		}
		if len(*t.Key) > maxTagKeyLen || !tagPattern.MatchString(*t.Key) {
			return nil, badRequest(CodeInvalidTag, "UsageAllocations[%d].Tags[%d].Key %q must be 1 to %d characters matching %s", i, j, *t.Key, maxTagKeyLen, tagPattern)
		}
		if len(*t.Value) > maxTagValueLen || !tagPattern.MatchString(*t.Value) {
			return nil, badRequest(CodeInvalidTag, "UsageAllocations[%d].Tags[%d].Value %q must be 1 to %d characters matching %s", i, j, *t.Value, maxTagValueLen, tagPattern)
		}
		if keys[*t.Key] {
			return nil, badRequest(CodeInvalidTag, "UsageAllocations[%d] repeats the tag key %q", i, *t.Key)
		}
		keys[*t.Key] = true
		tags[j] = Tag{Key: *t.Key, Value: *t.Value}
	}
	return tags, nil
}

// tagSetKey is an order-independent identity of a tag set.
func tagSetKey(tags []Tag) string {
	parts := make([]string, len(tags))
	for i, t := range tags {
		parts[i] = strconv.Quote(t.Key) + "=" + strconv.Quote(t.Value)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// allocationsKey is an order-independent identity of a list of
// allocations, used to tell an identical repeat from a changed one.
func allocationsKey(allocs []Allocation) string {
	if allocs == nil {
		return ""
	}
	parts := make([]string, len(allocs))
	for i, a := range allocs {
		parts[i] = fmt.Sprintf("%d{%s}", a.Quantity, tagSetKey(a.Tags))
	}
	sort.Strings(parts)
	return "[" + strings.Join(parts, ";") + "]"
}
