package emulator

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	mm "github.com/aws/aws-sdk-go-v2/service/marketplacemetering"
	"github.com/aws/aws-sdk-go-v2/service/marketplacemetering/types"
	"github.com/google/uuid"
)

const testLicense = "arn:aws:license-manager::123456789012:license:l-one"

func byID(customer, dimension string, ts time.Time, qty int32, allocs ...types.UsageAllocation) types.UsageRecord {
	return types.UsageRecord{CustomerIdentifier: aws.String(customer), Dimension: aws.String(dimension), Timestamp: aws.Time(ts), Quantity: aws.Int32(qty), UsageAllocations: allocs}
}

func byAccount(account, dimension string, ts time.Time, qty int32) types.UsageRecord {
	return types.UsageRecord{CustomerAWSAccountId: aws.String(account), Dimension: aws.String(dimension), Timestamp: aws.Time(ts), Quantity: aws.Int32(qty)}
}

func (h *harness) batch(c *mm.Client, product string, records ...types.UsageRecord) (*mm.BatchMeterUsageOutput, error) {
	in := &mm.BatchMeterUsageInput{UsageRecords: records}
	if product != "" {
		in.ProductCode = aws.String(product)
	}
	if in.UsageRecords == nil {
		in.UsageRecords = []types.UsageRecord{}
	}
	return c.BatchMeterUsage(ctx(h.t), in)
}

// statuses renders results as "customer/dimension=Status" for comparison.
func statuses(out *mm.BatchMeterUsageOutput) string {
	var parts []string
	for _, r := range out.Results {
		who := aws.ToString(r.UsageRecord.CustomerIdentifier) + aws.ToString(r.UsageRecord.CustomerAWSAccountId)
		parts = append(parts, fmt.Sprintf("%s/%s=%s", who, aws.ToString(r.UsageRecord.Dimension), r.Status))
	}
	return strings.Join(parts, " ")
}

func TestBatchMeterUsageSuccessEchoesRecords(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client("AKIDSAAS")
	ts := testNow.Add(-3*time.Hour + 123*time.Millisecond)
	sent := []types.UsageRecord{
		byID("cust-a", "users", ts, 4, alloc(1, tag("team", "x")), alloc(3, tag("team", "y"))),
		byAccount("123456789012", "gigabytes", ts, 7),
		{CustomerAWSAccountId: aws.String("210987654321"), Dimension: aws.String("users"), Timestamp: aws.Time(ts), Quantity: aws.Int32(1), LicenseArn: aws.String(testLicense)},
	}
	out, err := h.batch(c, "saas-product", sent...)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Results) != 3 || len(out.UnprocessedRecords) != 0 {
		t.Fatalf("results %d unprocessed %d", len(out.Results), len(out.UnprocessedRecords))
	}
	for i, r := range out.Results {
		if r.Status != types.UsageRecordResultStatusSuccess {
			t.Fatalf("result %d status %s", i, r.Status)
		}
		if _, err := uuid.Parse(aws.ToString(r.MeteringRecordId)); err != nil {
			t.Fatalf("result %d MeteringRecordId %q: %v", i, aws.ToString(r.MeteringRecordId), err)
		}
		if !reflect.DeepEqual(*r.UsageRecord, sent[i]) {
			t.Fatalf("result %d UsageRecord = %+v, want the record sent %+v", i, *r.UsageRecord, sent[i])
		}
	}

	st := h.em.State()
	want := []Record{
		{Operation: OpBatchMeterUsage, MeteringRecordID: aws.ToString(out.Results[0].MeteringRecordId), ProductCode: "saas-product", Dimension: "users",
			Hour: time.Date(2025, 6, 15, 9, 0, 0, 0, time.UTC), Timestamp: ts, Quantity: 4,
			Allocations:        []Allocation{{Quantity: 1, Tags: []Tag{{"team", "x"}}}, {Quantity: 3, Tags: []Tag{{"team", "y"}}}},
			CustomerIdentifier: "cust-a", Instance: "AKIDSAAS", ReceivedAt: testNow},
		{Operation: OpBatchMeterUsage, MeteringRecordID: aws.ToString(out.Results[1].MeteringRecordId), ProductCode: "saas-product", Dimension: "gigabytes",
			Hour: time.Date(2025, 6, 15, 9, 0, 0, 0, time.UTC), Timestamp: ts, Quantity: 7,
			CustomerAWSAccountID: "123456789012", Instance: "AKIDSAAS", ReceivedAt: testNow},
		{Operation: OpBatchMeterUsage, MeteringRecordID: aws.ToString(out.Results[2].MeteringRecordId), ProductCode: "saas-product", Dimension: "users",
			Hour: time.Date(2025, 6, 15, 9, 0, 0, 0, time.UTC), Timestamp: ts, Quantity: 1,
			CustomerAWSAccountID: "210987654321", LicenseArn: testLicense, Instance: "AKIDSAAS", ReceivedAt: testNow},
	}
	if !reflect.DeepEqual(st.Records, want) {
		t.Fatalf("records:\n got %+v\nwant %+v", st.Records, want)
	}
	if st.RecordStatuses[StatusSuccess] != 3 || st.Requests[OpBatchMeterUsage] != 1 {
		t.Fatalf("statuses %v requests %v", st.RecordStatuses, st.Requests)
	}
}

func TestBatchMeterUsageDuplicateRecord(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client("AKIDSAAS")
	ts := testNow.Add(-time.Hour) // 11:30

	first, err := h.batch(c, "saas-product", byID("cust-a", "users", ts, 5), byID("cust-b", "users", ts, 6))
	if err != nil {
		t.Fatal(err)
	}
	// Identical (same hour, other minute), changed, and a new hour.
	again, err := h.batch(c, "saas-product",
		byID("cust-a", "users", ts.Add(15*time.Minute), 5),
		byID("cust-b", "users", ts, 60),
		byID("cust-b", "users", ts.Add(time.Hour), 60),
	)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := statuses(again), "cust-a/users=Success cust-b/users=DuplicateRecord cust-b/users=Success"; got != want {
		t.Fatalf("statuses = %s, want %s", got, want)
	}
	if aws.ToString(again.Results[0].MeteringRecordId) != aws.ToString(first.Results[0].MeteringRecordId) {
		t.Fatal("identical repeat did not return the original MeteringRecordId")
	}
	if again.Results[1].MeteringRecordId != nil {
		t.Fatalf("DuplicateRecord carries MeteringRecordId %s", aws.ToString(again.Results[1].MeteringRecordId))
	}

	st := h.em.State()
	if len(st.Records) != 3 {
		t.Fatalf("%d records, want 3", len(st.Records))
	}
	c0 := st.Conflicts[0]
	if len(st.Conflicts) != 1 || c0.Error != StatusDuplicateRecord || c0.CustomerIdentifier != "cust-b" ||
		c0.RecordedQuantity != 6 || c0.AttemptedQuantity != 60 || c0.MeteringRecordID != aws.ToString(first.Results[1].MeteringRecordId) {
		t.Fatalf("conflicts = %+v", st.Conflicts)
	}
	if st.RecordStatuses[StatusDuplicateRecord] != 1 || st.RecordStatuses[StatusSuccess] != 4 {
		t.Fatalf("statuses = %v", st.RecordStatuses)
	}
}

func TestBatchMeterUsageRecordLimit(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client("AKIDSAAS")
	records := make([]types.UsageRecord, 26)
	for i := range records {
		records[i] = byID(fmt.Sprintf("cust-%02d", i), "users", testNow, 1)
	}
	_, err := h.batch(c, "saas-product", records...)
	requireGenericCode(t, err, CodeValidation, 400)
	if st := h.em.State(); len(st.Records) != 0 {
		t.Fatalf("a refused batch recorded %d records", len(st.Records))
	}

	out, err := h.batch(c, "saas-product", records[:25]...)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Results) != 25 {
		t.Fatalf("%d results, want 25", len(out.Results))
	}

	empty, err := h.batch(c, "saas-product")
	if err != nil {
		t.Fatal(err)
	}
	if len(empty.Results) != 0 || len(empty.UnprocessedRecords) != 0 {
		t.Fatalf("empty batch answered %+v", empty)
	}
}

func TestBatchMeterUsageOneMegabyteLimit(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client("AKIDSAAS", func(o *mm.Options) { o.RetryMaxAttempts = 1 })
	allocs := make([]types.UsageAllocation, 2500)
	for i := range allocs {
		allocs[i] = alloc(0, tag("tenant", fmt.Sprintf("tenant-%08d", i)))
	}
	records := make([]types.UsageRecord, 25)
	for i := range records {
		records[i] = byID(fmt.Sprintf("cust-%02d", i), "users", testNow, 0, allocs...)
	}
	_, err := h.batch(c, "saas-product", records...)
	requireGenericCode(t, err, CodeValidation, 400)
	if st := h.em.State(); len(st.Records) != 0 {
		t.Fatalf("%d records", len(st.Records))
	}
}

func TestBatchMeterUsageCustomerIdentity(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client("AKIDSAAS")
	both := byID("cust-a", "users", testNow, 1)
	both.CustomerAWSAccountId = aws.String("123456789012")
	neither := types.UsageRecord{Dimension: aws.String("users"), Timestamp: aws.Time(testNow), Quantity: aws.Int32(1)}
	for name, rec := range map[string]types.UsageRecord{
		"both":            both,
		"neither":         neither,
		"account letters": byAccount("12345678901x", "users", testNow, 1),
		"empty id":        byID("", "users", testNow, 1),
	} {
		t.Run(name, func(t *testing.T) {
			// A valid record first: the whole batch fails.
			_, err := h.batch(c, "saas-product", byID("cust-ok", "users", testNow, 1), rec)
			requireAPIError[*types.InvalidCustomerIdentifierException](t, err, 400)
		})
	}
	if st := h.em.State(); len(st.Records) != 0 {
		t.Fatalf("%d records", len(st.Records))
	}
}

func TestBatchMeterUsageCustomerNotSubscribed(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.EntitledCustomers = []string{"cust-a", "123456789012"} })
	out, err := h.batch(h.client("AKIDSAAS"), "saas-product",
		byID("cust-a", "users", testNow, 1),
		byID("cust-z", "users", testNow, 1),
		byAccount("123456789012", "users", testNow, 1),
		byAccount("999999999999", "users", testNow, 1),
	)
	if err != nil {
		t.Fatal(err)
	}
	want := "cust-a/users=Success cust-z/users=CustomerNotSubscribed 123456789012/users=Success 999999999999/users=CustomerNotSubscribed"
	if got := statuses(out); got != want {
		t.Fatalf("statuses = %s, want %s", got, want)
	}
	if out.Results[1].MeteringRecordId != nil {
		t.Fatal("CustomerNotSubscribed carries a MeteringRecordId")
	}
	if st := h.em.State(); len(st.Records) != 2 || st.RecordStatuses[StatusCustomerNotSubscribed] != 2 {
		t.Fatalf("records %d statuses %v", len(st.Records), st.RecordStatuses)
	}
}

func TestBatchMeterUsageTimestampWindow(t *testing.T) {
	tests := []struct {
		name    string
		window  time.Duration
		now     time.Time
		ts      time.Time
		wantErr bool
	}{
		{"5h59m59s ago", 0, testNow, testNow.Add(-6*time.Hour + time.Second), false},
		{"exactly 6h ago", 0, testNow, testNow.Add(-6 * time.Hour), true},
		{"7h ago", 0, testNow, testNow.Add(-7 * time.Hour), true},
		{"5m1s in the future", 0, testNow, testNow.Add(5*time.Minute + time.Second), true},
		{"configured 2h: 3h ago", 2 * time.Hour, testNow, testNow.Add(-3 * time.Hour), true},
		{"configured 48h: 30h ago", 48 * time.Hour, testNow, testNow.Add(-30 * time.Hour), false},
		{"last month within the 6h grace", 0, time.Date(2025, 7, 1, 5, 0, 0, 0, time.UTC), time.Date(2025, 6, 30, 23, 30, 0, 0, time.UTC), false},
		{"last month after the 6h grace, 24h window", 24 * time.Hour, time.Date(2025, 7, 1, 7, 0, 0, 0, time.UTC), time.Date(2025, 6, 30, 23, 0, 0, 0, time.UTC), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.BatchWindow = tt.window })
			h.clock.Set(tt.now)
			// The out-of-window record is second: it fails the whole batch.
			_, err := h.batch(h.client("AKIDSAAS"), "saas-product", byID("cust-a", "users", tt.now, 1), byID("cust-b", "users", tt.ts, 1))
			if !tt.wantErr {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			requireAPIError[*types.TimestampOutOfBoundsException](t, err, 400)
			if st := h.em.State(); len(st.Records) != 0 {
				t.Fatalf("a refused batch recorded %d records", len(st.Records))
			}
		})
	}
}

func TestBatchMeterUsageMonthEndGraceCanBeDisabled(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MonthEndGrace, c.BatchWindow = -1, 24*time.Hour })
	h.clock.Set(time.Date(2025, 7, 1, 7, 0, 0, 0, time.UTC))
	if _, err := h.batch(h.client("AKIDSAAS"), "saas-product", byID("cust-a", "users", time.Date(2025, 6, 30, 23, 0, 0, 0, time.UTC), 1)); err != nil {
		t.Fatal(err)
	}
}

func TestBatchMeterUsageProductAndDimension(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client("AKIDSAAS")
	_, err := h.batch(c, "not-mine", byID("cust-a", "users", testNow, 1))
	requireAPIError[*types.InvalidProductCodeException](t, err, 400)

	_, err = h.batch(c, "saas-product", byID("cust-a", "users", testNow, 1), byID("cust-a", "cpu", testNow, 1))
	requireAPIError[*types.InvalidUsageDimensionException](t, err, 400)

	_, err = h.batch(c, "saas-product", byID("cust-a", "users", testNow, 3, alloc(1, tag("t", "a")), alloc(1, tag("t", "b"))))
	requireAPIError[*types.InvalidUsageAllocationsException](t, err, 400)

	_, err = h.batch(c, "saas-product", byID("cust-a", "users", testNow, 1, alloc(1, tag("t?", "a"))))
	requireAPIError[*types.InvalidTagException](t, err, 400)

	_, err = h.batch(c, "saas-product", byID("cust-a", "users", testNow, -5))
	requireGenericCode(t, err, CodeValidation, 400)

	missing := byID("cust-a", "users", testNow, 1)
	missing.Timestamp = nil
	_, err = h.batch(h.client("AKIDSAAS", withoutClientValidation), "saas-product", missing)
	requireGenericCode(t, err, CodeValidation, 400)

	if st := h.em.State(); len(st.Records) != 0 {
		t.Fatalf("%d records", len(st.Records))
	}
}

func TestBatchMeterUsageLicenseArn(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client("AKIDSAAS")
	licensed := byAccount("123456789012", "users", testNow, 2)
	licensed.LicenseArn = aws.String(testLicense)

	// No ProductCode: the license names the product.
	out, err := h.batch(c, "", licensed)
	if err != nil {
		t.Fatal(err)
	}
	if out.Results[0].Status != types.UsageRecordResultStatusSuccess || h.em.State().Records[0].ProductCode != "saas-product" {
		t.Fatalf("results %+v records %+v", out.Results, h.em.State().Records)
	}

	unknown := licensed
	unknown.LicenseArn = aws.String("arn:aws:license-manager::123456789012:license:l-other")
	_, err = h.batch(c, "", unknown)
	requireAPIError[*types.InvalidLicenseException](t, err, 400)
	_, err = h.batch(c, "saas-product", unknown)
	requireAPIError[*types.InvalidLicenseException](t, err, 400)

	_, err = h.batch(c, "", byAccount("123456789012", "users", testNow, 2))
	requireGenericCode(t, err, CodeValidation, 400)
}

func TestBatchMeterUsageUnprocessedFault(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client("AKIDSAAS")
	records := []types.UsageRecord{byID("cust-a", "users", testNow, 1), byID("cust-b", "users", testNow, 2), byID("cust-c", "users", testNow, 3)}
	h.em.InjectFaults(Faults{Unprocessed: 2})
	out, err := h.batch(c, "saas-product", records...)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.UnprocessedRecords) != 2 || !reflect.DeepEqual(out.UnprocessedRecords, records[:2]) {
		t.Fatalf("unprocessed = %+v, want the first two records", out.UnprocessedRecords)
	}
	if got := statuses(out); got != "cust-c/users=Success" {
		t.Fatalf("results = %s", got)
	}
	// Retrying the unprocessed records, as callers must, records them.
	retry, err := h.batch(c, "saas-product", out.UnprocessedRecords...)
	if err != nil {
		t.Fatal(err)
	}
	if got := statuses(retry); got != "cust-a/users=Success cust-b/users=Success" || len(retry.UnprocessedRecords) != 0 {
		t.Fatalf("retry results = %s, unprocessed %d", got, len(retry.UnprocessedRecords))
	}
	st := h.em.State()
	if len(st.Records) != 3 || st.RecordStatuses[StatusUnprocessed] != 2 || st.Faults.Unprocessed != 0 {
		t.Fatalf("records %d statuses %v faults %+v", len(st.Records), st.RecordStatuses, st.Faults)
	}
}

func TestBatchMeterUsageThrottleRetried(t *testing.T) {
	h := newHarness(t, nil)
	h.em.InjectFaults(Faults{Throttle: 2})
	out, err := h.batch(h.client("AKIDSAAS"), "saas-product", byID("cust-a", "users", testNow, 1))
	if err != nil {
		t.Fatal(err)
	}
	if out.Results[0].Status != types.UsageRecordResultStatusSuccess {
		t.Fatalf("status %s", out.Results[0].Status)
	}
	if st := h.em.State(); st.Requests[OpBatchMeterUsage] != 3 || len(st.Records) != 1 {
		t.Fatalf("requests %v records %d", st.Requests, len(st.Records))
	}
}

func TestBatchMeterUsageStatusesAreWireValues(t *testing.T) {
	// The SDK's enum is the contract; the emulator's constants must match.
	got := []string{StatusSuccess, StatusCustomerNotSubscribed, StatusDuplicateRecord}
	var want []string
	for _, v := range types.UsageRecordResultStatus("").Values() {
		want = append(want, string(v))
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("statuses %v, SDK %v", got, want)
	}
}
