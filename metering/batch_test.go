package metering

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	mm "github.com/aws/aws-sdk-go-v2/service/marketplacemetering"
	"github.com/aws/aws-sdk-go-v2/service/marketplacemetering/types"

	"github.com/metership/metership/conf"
	"github.com/metership/metership/metering/emulator"
)

const testLicense = "arn:aws:license-manager::123456789012:license:l-one"

// recordingAPI passes calls to the real SDK client and records how many
// usage records each BatchMeterUsage call carried.
type recordingAPI struct {
	*mm.Client
	mu    sync.Mutex
	sizes []int
}

func (r *recordingAPI) BatchMeterUsage(ctx context.Context, in *mm.BatchMeterUsageInput, optFns ...func(*mm.Options)) (*mm.BatchMeterUsageOutput, error) {
	r.mu.Lock()
	r.sizes = append(r.sizes, len(in.UsageRecords))
	r.mu.Unlock()
	return r.Client.BatchMeterUsage(ctx, in, optFns...)
}

func batchConfig() conf.Metering {
	return conf.Metering{
		Mode:           ModeBatchMeterUsage,
		ProductCode:    testProduct,
		Region:         "us-east-1",
		Dimensions:     map[string]string{"seats": "users", "storage": "gigabytes"},
		AllocationTags: []string{"team"},
		CustomerIDType: "aws_account_id",
		LicenseARN:     testLicense,
		Lateness:       conf.Duration(5 * time.Minute),
		Window:         conf.Duration(6 * time.Hour),
	}
}

// foldOld adds the usage of hours before oldest to oldest, per key, as
// the reporter does for hours past the window.
func foldOld(totals map[hourlyKey]int64, oldest time.Time) map[hourlyKey]int64 {
	out := map[hourlyKey]int64{}
	for k, n := range totals {
		if k.hour.Before(oldest) {
			k.hour = oldest
		}
		out[k] += n
	}
	return out
}

func TestBatchMeterUsage(t *testing.T) {
	clk := newClock(testNow)
	customers := []string{"111111111111", "222222222222", "333333333333"}
	ecfg := emulatorConfig(clk)
	ecfg.Products[testProduct] = emulator.Product{Dimensions: []string{"users", "gigabytes"}, Licenses: []string{testLicense}}
	ecfg.EntitledCustomers = customers[:2]
	em, url := startEmulator(t, ecfg)
	client := &recordingAPI{Client: newClient(t, url, "AKIDSAAS")}

	// 3 customers x 2 dimensions x 30 hours.
	first := testNow.Truncate(time.Hour).Add(-30 * time.Hour)
	var recs []rec
	totals := map[hourlyKey]int64{}
	i := 0
	for h := first; h.Before(testNow.Truncate(time.Hour)); h = h.Add(time.Hour) {
		for _, c := range customers {
			for _, api := range []string{"seats", "storage"} {
				for j := range 2 {
					i++
					n := int64(i%9+1) * 350_000_000 // 0.35 .. 3.15
					recs = append(recs, rec{customer: c, api: api, nanos: n, at: h.Add(time.Duration(j*20+1) * time.Minute),
						dims: map[string]string{"team": fmt.Sprintf("t%d", i%2)}})
					d := map[string]string{"seats": "users", "storage": "gigabytes"}[api]
					totals[hourlyKey{c, d, h}] += n
				}
			}
		}
	}
	oldest := hourTime(oldestAt(testNow, 6*time.Hour))
	want := expectedQuantities(foldOld(totals, oldest))

	// Someone already reported another quantity for one customer-hour.
	dup := hourlyKey{customers[0], "users", oldest.Add(3 * time.Hour)}
	if _, err := client.Client.BatchMeterUsage(ctxT(t), &mm.BatchMeterUsageInput{
		ProductCode: aws.String(testProduct),
		UsageRecords: []types.UsageRecord{{
			CustomerAWSAccountId: aws.String(dup.customer), LicenseArn: aws.String(testLicense),
			Dimension: aws.String(dup.dimension), Timestamp: aws.Time(dup.hour), Quantity: aws.Int32(12345),
		}},
	}); err != nil {
		t.Fatal(err)
	}
	client.sizes = nil

	dir := t.TempDir()
	m := mustNew(t, batchConfig(), testOptions(dir, client, clk))
	countRecords(t, m, recs, 100)
	em.InjectFaults(emulator.Faults{Unprocessed: 10, Throttle: 4})
	if err := m.ReportClosed(ctxT(t)); err != nil {
		t.Fatalf("ReportClosed: %v", err)
	}

	st := em.State()
	got := accepted(t, st)
	var wantAccepted, wantDead int
	for k, q := range want {
		switch {
		case k.customer == customers[2]:
			wantDead++
			if _, ok := got[k]; ok {
				t.Errorf("record accepted for the unsubscribed customer: %+v", k)
			}
		case k == dup:
			if got[k].Quantity != 12345 {
				t.Errorf("pre-seeded record changed: %+v", got[k])
			}
		default:
			wantAccepted++
			r, ok := got[k]
			if !ok {
				t.Errorf("missing %s %s %s", k.customer, k.dimension, k.hour.Format("01-02 15:04"))
				continue
			}
			if r.Quantity != q {
				t.Errorf("%s %s %s: quantity %d, want %d", k.customer, k.dimension, k.hour.Format("01-02 15:04"), r.Quantity, q)
			}
			if r.CustomerIdentifier != "" || r.CustomerAWSAccountID != k.customer || r.LicenseArn != testLicense {
				t.Errorf("customer fields %q %q %q", r.CustomerIdentifier, r.CustomerAWSAccountID, r.LicenseArn)
			}
			var sum int64
			for _, a := range r.Allocations {
				sum += a.Quantity
			}
			if sum != r.Quantity {
				t.Errorf("allocations sum %d, quantity %d", sum, r.Quantity)
			}
			if r.Hour.Before(oldest) {
				t.Errorf("hour %s is older than the oldest reportable %s", r.Hour, oldest)
			}
		}
	}
	if len(got) != wantAccepted+1 {
		t.Errorf("%d accepted records, want %d (+1 pre-seeded)", len(got), wantAccepted)
	}
	for _, n := range client.sizes {
		if n > 25 || n == 0 {
			t.Errorf("a BatchMeterUsage call carried %d records", n)
		}
	}
	if len(client.sizes) < (len(want)+24)/25 {
		t.Errorf("%d calls for %d records", len(client.sizes), len(want))
	}
	if st.RecordStatuses[emulator.StatusUnprocessed] != 10 {
		t.Errorf("statuses %v", st.RecordStatuses)
	}
	if len(st.Conflicts) != 1 || st.Conflicts[0].Error != emulator.StatusDuplicateRecord {
		t.Errorf("conflicts %+v", st.Conflicts)
	}

	sum := m.Summary()
	if sum.Conflicts != 1 || sum.NotSubscribed != wantDead || sum.HoursReported != wantAccepted {
		t.Errorf("summary %+v, want 1 conflict, %d not subscribed, %d reported", sum, wantDead, wantAccepted)
	}
	if v := metricValue(m.metrics.notSubscribed); v != 1 {
		t.Errorf("customers_not_subscribed = %v", v)
	}
	files, err := os.ReadDir(filepath.Join(dir, deadLetterDir))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != wantDead {
		t.Errorf("%d dead-letter files, want %d", len(files), wantDead)
	}
	var deadTotal int64
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(dir, deadLetterDir, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), `"reason":"CustomerNotSubscribed"`) || !strings.Contains(string(data), customers[2]) {
			t.Errorf("dead letter %s: %s", f.Name(), data)
		}
		var q int64
		if _, err := fmt.Sscanf(string(data[strings.Index(string(data), `"quantity":`):]), `"quantity":%d`, &q); err != nil {
			t.Fatal(err)
		}
		deadTotal += q
	}
	var wantDeadTotal int64
	for k, q := range want {
		if k.customer == customers[2] {
			wantDeadTotal += q
		}
	}
	if deadTotal != wantDeadTotal {
		t.Errorf("dead letters hold %d units, want %d", deadTotal, wantDeadTotal)
	}
	m.mu.Lock()
	if c := m.led.notSubscribed[customers[2]]; c == nil || c.Records != wantDead {
		t.Errorf("ledger customer state %+v", c)
	}
	m.mu.Unlock()

	// Nothing is sent again: not the conflict, not the unsubscribed
	// customer's hours, not the accepted ones.
	calls := st.Requests[emulator.OpBatchMeterUsage]
	m2 := mustNew(t, batchConfig(), testOptions(dir, client, clk))
	if err := m2.ReportClosed(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if n := em.State().Requests[emulator.OpBatchMeterUsage]; n != calls {
		t.Errorf("%d more calls after a restart with nothing new", n-calls)
	}
}

func TestBatchCustomerIdentifierAndLicenseFromRecord(t *testing.T) {
	clk := newClock(testNow)
	ecfg := emulatorConfig(clk)
	ecfg.Products[testProduct] = emulator.Product{Dimensions: []string{"users"}, Licenses: []string{testLicense, testLicense + "-2"}}
	em, url := startEmulator(t, ecfg)
	cfg := batchConfig()
	cfg.CustomerIDType = "customer_identifier"
	cfg.LicenseARN = "dimension:license"
	cfg.AllocationTags = nil
	h := testNow.Add(-2 * time.Hour).Truncate(time.Hour)
	bufDir := t.TempDir()
	writeBuffer(t, bufDir, []rec{
		{customer: "cust-a", api: "seats", nanos: 3 * nanosPerUnit, at: h, dims: map[string]string{"license": testLicense}},
		{customer: "cust-a", api: "seats", nanos: 4 * nanosPerUnit, at: h, dims: map[string]string{"license": testLicense + "-2"}},
		{customer: "cust-b", api: "seats", nanos: 5 * nanosPerUnit, at: h},
		{customer: "", api: "seats", nanos: 6 * nanosPerUnit, at: h},
	}, 10)
	m := mustNew(t, cfg, testOptions(t.TempDir(), newClient(t, url, "AKIDSAAS"), clk))
	countBuffer(t, m, bufDir)
	if err := m.ReportClosed(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range em.State().Records {
		if r.CustomerAWSAccountID != "" {
			t.Errorf("CustomerAWSAccountId %q sent with customer_identifier", r.CustomerAWSAccountID)
		}
		got = append(got, fmt.Sprintf("%s|%s|%d", r.CustomerIdentifier, r.LicenseArn, r.Quantity))
	}
	sort.Strings(got)
	want := []string{"cust-a|" + testLicense + "-2|4", "cust-a|" + testLicense + "|3", "cust-b||5"}
	sort.Strings(want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("records %v, want %v", got, want)
	}
	if s := m.Summary(); s.RecordsUnbillable != 1 {
		t.Errorf("a record without customer id: unbillable %d, want 1", s.RecordsUnbillable)
	}
}
