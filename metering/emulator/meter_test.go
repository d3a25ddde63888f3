package emulator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	mm "github.com/aws/aws-sdk-go-v2/service/marketplacemetering"
	"github.com/aws/aws-sdk-go-v2/service/marketplacemetering/types"
	"github.com/aws/smithy-go/middleware"
	"github.com/google/uuid"
)

func TestMeterUsageRecordsOncePerHourAndRepeatIsIdempotent(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client("AKIDPOD1")
	ts := testNow.Add(-20 * time.Minute) // 12:10, hour 12:00

	first, err := h.meter(c, "api_calls", ts, 42, "token-1")
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(first.MeteringRecordId)
	if _, err := uuid.Parse(id); err != nil {
		t.Fatalf("MeteringRecordId %q is not a UUID: %v", id, err)
	}

	// Same hour, another timestamp and a fresh token: identical after
	// truncation to the hour, so idempotent.
	again, err := h.meter(c, "api_calls", testNow.Add(-5*time.Minute), 42, "token-2")
	if err != nil {
		t.Fatal(err)
	}
	if got := aws.ToString(again.MeteringRecordId); got != id {
		t.Fatalf("repeat MeteringRecordId = %s, want the original %s", got, id)
	}

	want := []Record{{
		Operation:        OpMeterUsage,
		MeteringRecordID: id,
		ProductCode:      DemoProductCode,
		Dimension:        "api_calls",
		Hour:             time.Date(2025, time.June, 15, 12, 0, 0, 0, time.UTC),
		Timestamp:        ts,
		Quantity:         42,
		Instance:         "AKIDPOD1",
		ClientToken:      "token-1",
		ReceivedAt:       testNow,
	}}
	st := h.em.State()
	if !reflect.DeepEqual(st.Records, want) {
		t.Fatalf("records:\n got %+v\nwant %+v", st.Records, want)
	}
	if st.Requests[OpMeterUsage] != 2 || len(st.Errors) != 0 || len(st.Conflicts) != 0 {
		t.Fatalf("counters: requests %v errors %v conflicts %v", st.Requests, st.Errors, st.Conflicts)
	}
}

func TestMeterUsageChangedQuantityIsDuplicateRequest(t *testing.T) {
	h := newHarness(t, nil)
	pod1 := h.client("AKIDPOD1")
	ts := testNow.Add(-time.Hour) // 11:30

	first, err := h.meter(pod1, "storage_gb", ts, 10, "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.meter(pod1, "storage_gb", ts.Add(10*time.Minute), 11, "")
	requireAPIError[*types.DuplicateRequestException](t, err, http.StatusBadRequest)

	// Changed allocations with the same quantity are a change too.
	_, err = h.meter(pod1, "storage_gb", ts, 10, "", alloc(10, tag("team", "a")))
	requireAPIError[*types.DuplicateRequestException](t, err, http.StatusBadRequest)

	// The rule is per caller: another pod (credential or instance header)
	// reports its own usage for the same hour, and another hour is free.
	pod2, err := h.meter(h.client("AKIDPOD2"), "storage_gb", ts, 11, "")
	if err != nil {
		t.Fatal(err)
	}
	pod3, err := h.meter(h.client("AKIDPOD1", withInstance("pod-3")), "storage_gb", ts, 12, "")
	if err != nil {
		t.Fatal(err)
	}
	nextHour, err := h.meter(pod1, "storage_gb", ts.Add(time.Hour), 11, "")
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, o := range []*mm.MeterUsageOutput{first, pod2, pod3, nextHour} {
		ids[aws.ToString(o.MeteringRecordId)] = true
	}
	if len(ids) != 4 {
		t.Fatalf("want 4 distinct record ids, got %v", ids)
	}

	st := h.em.State()
	var instances []string
	for _, r := range st.Records {
		instances = append(instances, fmt.Sprintf("%s@%s=%d", r.Instance, r.Hour.Format("15"), r.Quantity))
	}
	if got, want := strings.Join(instances, " "), "AKIDPOD1@11=10 AKIDPOD2@11=11 pod-3@11=12 AKIDPOD1@12=11"; got != want {
		t.Fatalf("records = %s, want %s", got, want)
	}
	if len(st.Conflicts) != 2 {
		t.Fatalf("conflicts = %+v, want 2", st.Conflicts)
	}
	c := st.Conflicts[0]
	if c.Error != CodeDuplicateRequest || c.RecordedQuantity != 10 || c.AttemptedQuantity != 11 ||
		c.MeteringRecordID != aws.ToString(first.MeteringRecordId) || c.Instance != "AKIDPOD1" {
		t.Fatalf("conflict = %+v", c)
	}
	if st.Errors[CodeDuplicateRequest] != 2 {
		t.Fatalf("errors = %v", st.Errors)
	}
}

func TestMeterUsageClientToken(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client("AKIDPOD1")
	ts := testNow.Add(-2 * time.Hour)

	first, err := h.meter(c, "requests", ts, 5, "fixed-token")
	if err != nil {
		t.Fatal(err)
	}
	same, err := h.meter(c, "requests", ts, 5, "fixed-token")
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(same.MeteringRecordId) != aws.ToString(first.MeteringRecordId) {
		t.Fatalf("same token, same parameters: got %s, want %s", aws.ToString(same.MeteringRecordId), aws.ToString(first.MeteringRecordId))
	}

	_, err = h.meter(c, "requests", ts, 6, "fixed-token")
	requireAPIError[*types.IdempotencyConflictException](t, err, http.StatusConflict)
	// Another dimension under the same token is a conflict as well.
	_, err = h.meter(c, "api_calls", ts, 5, "fixed-token")
	requireAPIError[*types.IdempotencyConflictException](t, err, http.StatusConflict)

	// Tokens are per caller: another pod may use the same token.
	if _, err := h.meter(h.client("AKIDPOD2"), "requests", ts, 6, "fixed-token"); err != nil {
		t.Fatal(err)
	}

	st := h.em.State()
	if len(st.Records) != 2 || st.Errors[CodeIdempotencyConflict] != 2 {
		t.Fatalf("records %+v errors %v", st.Records, st.Errors)
	}
	if c := st.Conflicts[0]; c.Error != CodeIdempotencyConflict || c.ClientToken != "fixed-token" || c.AttemptedQuantity != 6 || c.RecordedQuantity != 5 {
		t.Fatalf("conflict = %+v", c)
	}
}

func TestMeterUsageClientTokenIsOptionalOnTheWire(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client("AKIDPOD1", func(o *mm.Options) {
		o.APIOptions = append(o.APIOptions, func(s *middleware.Stack) error {
			_, err := s.Initialize.Remove("OperationIdempotencyTokenAutoFill")
			return err
		})
	})
	if _, err := h.meter(c, "requests", testNow, 1, ""); err != nil {
		t.Fatal(err)
	}
	if got := h.em.State().Records[0].ClientToken; got != "" {
		t.Fatalf("ClientToken = %q, want none sent", got)
	}
}

func TestMeterUsageValidation(t *testing.T) {
	long := strings.Repeat("x", 65)
	tests := []struct {
		name   string
		in     mm.MeterUsageInput
		check  func(*testing.T, error)
		noSDKV bool
	}{
		{
			name:  "unknown product",
			in:    mm.MeterUsageInput{ProductCode: aws.String("nope"), UsageDimension: aws.String("api_calls"), Timestamp: aws.Time(testNow)},
			check: func(t *testing.T, err error) { requireAPIError[*types.InvalidProductCodeException](t, err, 400) },
		},
		{
			name:  "unknown dimension",
			in:    mm.MeterUsageInput{ProductCode: aws.String(DemoProductCode), UsageDimension: aws.String("cpu"), Timestamp: aws.Time(testNow)},
			check: func(t *testing.T, err error) { requireAPIError[*types.InvalidUsageDimensionException](t, err, 400) },
		},
		{
			name:  "negative quantity",
			in:    mm.MeterUsageInput{ProductCode: aws.String(DemoProductCode), UsageDimension: aws.String("api_calls"), Timestamp: aws.Time(testNow), UsageQuantity: aws.Int32(-1)},
			check: func(t *testing.T, err error) { requireGenericCode(t, err, CodeValidation, 400) },
		},
		{
			name:  "client token too long",
			in:    mm.MeterUsageInput{ProductCode: aws.String(DemoProductCode), UsageDimension: aws.String("api_calls"), Timestamp: aws.Time(testNow), ClientToken: aws.String(long)},
			check: func(t *testing.T, err error) { requireGenericCode(t, err, CodeValidation, 400) },
		},
		{
			name:   "missing timestamp",
			in:     mm.MeterUsageInput{ProductCode: aws.String(DemoProductCode), UsageDimension: aws.String("api_calls")},
			check:  func(t *testing.T, err error) { requireGenericCode(t, err, CodeValidation, 400) },
			noSDKV: true,
		},
		{
			name:   "missing product code",
			in:     mm.MeterUsageInput{UsageDimension: aws.String("api_calls"), Timestamp: aws.Time(testNow)},
			check:  func(t *testing.T, err error) { requireGenericCode(t, err, CodeValidation, 400) },
			noSDKV: true,
		},
	}
	h := newHarness(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []func(*mm.Options)
			if tt.noSDKV {
				opts = append(opts, withoutClientValidation)
			}
			_, err := h.client("AKIDPOD1", opts...).MeterUsage(ctx(t), &tt.in)
			tt.check(t, err)
		})
	}
	if st := h.em.State(); len(st.Records) != 0 || st.Requests[OpMeterUsage] != len(tests) {
		t.Fatalf("records %+v requests %v", st.Records, st.Requests)
	}
}

func TestMeterUsageZeroQuantityIsAccepted(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client("AKIDPOD1")
	// UsageQuantity absent means 0, a valid report.
	_, err := c.MeterUsage(ctx(t), &mm.MeterUsageInput{ProductCode: aws.String(DemoProductCode), UsageDimension: aws.String("api_calls"), Timestamp: aws.Time(testNow)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.meter(c, "api_calls", testNow, 2147483647, ""); err == nil {
		t.Fatal("max quantity after a 0 report of the same hour: want DuplicateRequestException")
	}
	if _, err := h.meter(c, "requests", testNow, 2147483647, ""); err != nil {
		t.Fatalf("max quantity: %v", err)
	}
}

func TestMeterUsageTimestampWindow(t *testing.T) {
	tests := []struct {
		name    string
		window  time.Duration
		ts      time.Time
		wantErr bool
	}{
		{"now", 0, testNow, false},
		{"5h59m59s ago", 0, testNow.Add(-6*time.Hour + time.Second), false},
		{"exactly 6h ago", 0, testNow.Add(-6 * time.Hour), true},
		{"6h and 1s ago", 0, testNow.Add(-6*time.Hour - time.Second), true},
		{"5m in the future", 0, testNow.Add(5 * time.Minute), false},
		{"5m1s in the future", 0, testNow.Add(5*time.Minute + time.Second), true},
		{"configured 1h: 59m ago", time.Hour, testNow.Add(-59 * time.Minute), false},
		{"configured 1h: 61m ago", time.Hour, testNow.Add(-61 * time.Minute), true},
		{"configured 12h: 11h ago", 12 * time.Hour, testNow.Add(-11 * time.Hour), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.MeterUsageWindow = tt.window })
			_, err := h.meter(h.client("AKIDPOD1"), "api_calls", tt.ts, 1, "")
			if tt.wantErr {
				requireAPIError[*types.TimestampOutOfBoundsException](t, err, 400)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestMeterUsageFollowsTheClock(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client("AKIDPOD1")
	ts := testNow.Add(-time.Hour)
	if _, err := h.meter(c, "api_calls", ts, 1, ""); err != nil {
		t.Fatal(err)
	}
	h.clock.Set(testNow.Add(6 * time.Hour))
	_, err := h.meter(c, "requests", ts, 1, "")
	requireAPIError[*types.TimestampOutOfBoundsException](t, err, 400)
}

func TestMeterUsageAllocations(t *testing.T) {
	many := func(n int) []types.UsageAllocation {
		out := make([]types.UsageAllocation, n)
		for i := range out {
			out[i] = alloc(0, tag("k", fmt.Sprint(i)))
		}
		return out
	}
	tests := []struct {
		name   string
		qty    int32
		allocs []types.UsageAllocation
		check  func(*testing.T, error)
	}{
		{"sum mismatch", 10, []types.UsageAllocation{alloc(4, tag("team", "a")), alloc(5, tag("team", "b"))},
			func(t *testing.T, err error) { requireAPIError[*types.InvalidUsageAllocationsException](t, err, 400) }},
		{"duplicate tag sets in another order", 10, []types.UsageAllocation{alloc(4, tag("team", "a"), tag("env", "prod")), alloc(6, tag("env", "prod"), tag("team", "a"))},
			func(t *testing.T, err error) { requireAPIError[*types.InvalidUsageAllocationsException](t, err, 400) }},
		{"two untagged buckets", 10, []types.UsageAllocation{alloc(4), alloc(6)},
			func(t *testing.T, err error) { requireAPIError[*types.InvalidUsageAllocationsException](t, err, 400) }},
		{"empty list", 0, []types.UsageAllocation{},
			func(t *testing.T, err error) { requireAPIError[*types.InvalidUsageAllocationsException](t, err, 400) }},
		{"2501 allocations", 0, many(2501),
			func(t *testing.T, err error) { requireAPIError[*types.InvalidUsageAllocationsException](t, err, 400) }},
		{"six tags", 1, []types.UsageAllocation{alloc(1, tag("a", "1"), tag("b", "1"), tag("c", "1"), tag("d", "1"), tag("e", "1"), tag("f", "1"))},
			func(t *testing.T, err error) { requireAPIError[*types.InvalidTagException](t, err, 400) }},
		{"empty tag list", 1, []types.UsageAllocation{{AllocatedUsageQuantity: aws.Int32(1), Tags: []types.Tag{}}},
			func(t *testing.T, err error) { requireAPIError[*types.InvalidTagException](t, err, 400) }},
		{"bad key character", 1, []types.UsageAllocation{alloc(1, tag("team?", "a"))},
			func(t *testing.T, err error) { requireAPIError[*types.InvalidTagException](t, err, 400) }},
		{"non-ASCII value", 1, []types.UsageAllocation{alloc(1, tag("team", "équipe"))},
			func(t *testing.T, err error) { requireAPIError[*types.InvalidTagException](t, err, 400) }},
		{"empty value", 1, []types.UsageAllocation{alloc(1, tag("team", ""))},
			func(t *testing.T, err error) { requireAPIError[*types.InvalidTagException](t, err, 400) }},
		{"101-char key", 1, []types.UsageAllocation{alloc(1, tag(strings.Repeat("k", 101), "a"))},
			func(t *testing.T, err error) { requireAPIError[*types.InvalidTagException](t, err, 400) }},
		{"257-char value", 1, []types.UsageAllocation{alloc(1, tag("k", strings.Repeat("v", 257)))},
			func(t *testing.T, err error) { requireAPIError[*types.InvalidTagException](t, err, 400) }},
		{"repeated key", 1, []types.UsageAllocation{alloc(1, tag("k", "a"), tag("k", "b"))},
			func(t *testing.T, err error) { requireAPIError[*types.InvalidTagException](t, err, 400) }},
		{"2500 allocations", 0, many(2500), nil},
		{"100-char key, 256-char value, punctuation", 1, []types.UsageAllocation{alloc(1, tag(strings.Repeat("k", 100), strings.Repeat("v", 255)+"="))}, nil},
		{"AWS pattern's space-to-= range", 3, []types.UsageAllocation{alloc(1, tag("a b", "x#y")), alloc(2, tag("a/b@c", "1+2:3.4_5-6"))}, nil},
		{"tagged and untagged buckets", 10, []types.UsageAllocation{alloc(4, tag("team", "a")), alloc(6)}, nil},
	}
	h := newHarness(t, nil)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A fresh caller per case, so each valid case records.
			_, err := h.meter(h.client(fmt.Sprintf("AKID%d", i)), "api_calls", testNow, tt.qty, "", tt.allocs...)
			if tt.check == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			tt.check(t, err)
		})
	}
}

func TestMeterUsageAllocationsAreRecordedAsSent(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client("AKIDPOD1")
	allocs := []types.UsageAllocation{alloc(7, tag("team", "a"), tag("env", "prod")), alloc(3)}
	first, err := h.meter(c, "api_calls", testNow, 10, "", allocs...)
	if err != nil {
		t.Fatal(err)
	}
	// The same allocations in another order are the same request.
	again, err := h.meter(c, "api_calls", testNow, 10, "", alloc(3), alloc(7, tag("env", "prod"), tag("team", "a")))
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(again.MeteringRecordId) != aws.ToString(first.MeteringRecordId) {
		t.Fatal("reordered allocations were not treated as an identical repeat")
	}
	want := []Allocation{{Quantity: 7, Tags: []Tag{{"team", "a"}, {"env", "prod"}}}, {Quantity: 3}}
	if got := h.em.State().Records[0].Allocations; !reflect.DeepEqual(got, want) {
		t.Fatalf("allocations = %+v, want %+v", got, want)
	}
}

func TestMeterUsageDryRun(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client("AKIDPOD1")
	in := &mm.MeterUsageInput{
		ProductCode: aws.String(DemoProductCode), UsageDimension: aws.String("api_calls"),
		Timestamp: aws.Time(testNow), UsageQuantity: aws.Int32(3), DryRun: aws.Bool(true),
	}
	_, err := c.MeterUsage(ctx(t), in)
	requireGenericCode(t, err, CodeDryRunOperation, StatusDryRun)

	// A dry run still validates.
	bad := *in
	bad.UsageDimension = aws.String("nope")
	_, err = c.MeterUsage(ctx(t), &bad)
	requireAPIError[*types.InvalidUsageDimensionException](t, err, 400)

	if st := h.em.State(); len(st.Records) != 0 {
		t.Fatalf("dry run recorded %+v", st.Records)
	}
	// Nothing was recorded, so a real report of another quantity succeeds.
	if _, err := h.meter(c, "api_calls", testNow, 4, ""); err != nil {
		t.Fatal(err)
	}
}

func TestMeterUsageNotEntitled(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.NotEntitledInstances = []string{"lapsed-pod"} })
	_, err := h.meter(h.client("AKIDPOD1", withInstance("lapsed-pod")), "api_calls", testNow, 1, "")
	requireAPIError[*types.CustomerNotEntitledException](t, err, 400)
	if _, err := h.meter(h.client("AKIDPOD1"), "api_calls", testNow, 1, ""); err != nil {
		t.Fatal(err)
	}
}

func TestAuthentication(t *testing.T) {
	h := newHarness(t, nil)

	_, err := h.meter(h.client("AKIDPOD1", func(o *mm.Options) { o.Region = "eu-west-1" }), "api_calls", testNow, 1, "")
	requireAPIError[*types.InvalidEndpointRegionException](t, err, 400)

	_, err = h.meter(h.client("AKIDPOD1", func(o *mm.Options) { o.Credentials = aws.AnonymousCredentials{} }), "api_calls", testNow, 1, "")
	requireGenericCode(t, err, CodeMissingAuthenticationToken, http.StatusForbidden)

	st := h.em.State()
	if len(st.Records) != 0 || st.Errors[CodeInvalidEndpointRegion] != 1 || st.Errors[CodeMissingAuthenticationToken] != 1 {
		t.Fatalf("records %+v errors %v", st.Records, st.Errors)
	}

	h2 := newHarness(t, func(c *Config) { c.Region = "eu-west-1" })
	if _, err := h2.meter(h2.client("AKIDPOD1", func(o *mm.Options) { o.Region = "eu-west-1" }), "api_calls", testNow, 1, ""); err != nil {
		t.Fatalf("matching Region: %v", err)
	}
}

func TestFaultThrottlingIsRetriedBySDK(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client("AKIDPOD1")
	h.em.InjectFaults(Faults{Throttle: 2})
	if _, err := h.meter(c, "api_calls", testNow, 9, ""); err != nil {
		t.Fatalf("two throttles then success within the SDK's 3 attempts: %v", err)
	}
	st := h.em.State()
	if st.Requests[OpMeterUsage] != 3 || st.Errors[CodeThrottling] != 2 || len(st.Records) != 1 || st.Faults != (Faults{}) {
		t.Fatalf("requests %v errors %v records %d faults %+v", st.Requests, st.Errors, len(st.Records), st.Faults)
	}

	h.em.InjectFaults(Faults{Throttle: 3})
	_, err := h.meter(c, "requests", testNow, 9, "")
	requireAPIError[*types.ThrottlingException](t, err, 400)
	if st := h.em.State(); st.Requests[OpMeterUsage] != 6 || len(st.Records) != 1 {
		t.Fatalf("after exhausted retries: requests %v records %d", st.Requests, len(st.Records))
	}
}

func TestFaultInternalErrorIsRetriedBySDK(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client("AKIDPOD1")
	h.em.InjectFaults(Faults{Internal: 2})
	if _, err := h.meter(c, "api_calls", testNow, 9, ""); err != nil {
		t.Fatal(err)
	}
	h.em.InjectFaults(Faults{Internal: 3})
	_, err := h.meter(c, "requests", testNow, 9, "")
	requireAPIError[*types.InternalServiceErrorException](t, err, http.StatusInternalServerError)
	if st := h.em.State(); st.Errors[CodeInternalServiceError] != 5 || len(st.Records) != 1 {
		t.Fatalf("errors %v records %d", st.Errors, len(st.Records))
	}
}

func TestFaultDisabledAPI(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client("AKIDPOD1")
	h.em.InjectFaults(Faults{DisabledAPI: true})
	for range 2 {
		_, err := h.meter(c, "api_calls", testNow, 1, "")
		requireAPIError[*types.DisabledApiException](t, err, 400)
	}
	h.em.InjectFaults(Faults{})
	if _, err := h.meter(c, "api_calls", testNow, 1, ""); err != nil {
		t.Fatal(err)
	}
}

func TestFaultLatency(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client("AKIDPOD1", func(o *mm.Options) { o.RetryMaxAttempts = 1 })
	h.em.InjectFaults(Faults{Latency: time.Hour})
	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.MeterUsage(short, &mm.MeterUsageInput{
		ProductCode: aws.String(DemoProductCode), UsageDimension: aws.String("api_calls"),
		Timestamp: aws.Time(testNow), UsageQuantity: aws.Int32(1),
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error = %v, want the caller's deadline", err)
	}
	h.em.InjectFaults(Faults{})
	if _, err := h.meter(c, "api_calls", testNow, 2, ""); err != nil {
		t.Fatalf("after clearing latency: %v", err)
	}
	// The abandoned request was never processed: quantity 2 is the only
	// record, not a duplicate of 1.
	if st := h.em.State(); len(st.Records) != 1 || st.Records[0].Quantity != 2 {
		t.Fatalf("records %+v", st.Records)
	}
}

func TestConcurrentCallersEachRecordOnce(t *testing.T) {
	h := newHarness(t, nil)
	const pods, repeats = 8, 3
	dims := []string{"api_calls", "storage_gb", "requests"}
	var wg sync.WaitGroup
	errs := make(chan error, pods*repeats*len(dims))
	for p := range pods {
		c := h.client(fmt.Sprintf("AKIDPOD%d", p))
		for range repeats {
			for _, d := range dims {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := h.meter(c, d, testNow, int32(p+1), ""); err != nil {
						errs <- err
					}
				}()
			}
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := h.em.State()
	if len(st.Records) != pods*len(dims) {
		t.Fatalf("%d records, want %d", len(st.Records), pods*len(dims))
	}
	seen := map[string]bool{}
	for _, r := range st.Records {
		key := r.Instance + "/" + r.Dimension
		if seen[key] || r.Quantity != int64(r.Instance[len(r.Instance)-1]-'0')+1 {
			t.Fatalf("bad or repeated record %+v", r)
		}
		seen[key] = true
	}
}
