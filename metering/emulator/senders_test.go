package emulator

import (
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// BatchMeterUsage keeps one record per (product, customer, dimension,
// hour) across every sender, as AWS does: two replicas reporting their own
// partial sums bill the first (3), and the second (5) gets DuplicateRecord;
// an identical record from another sender is Success with the original id.
func TestBatchMeterUsageDuplicateRecordAcrossSenders(t *testing.T) {
	h := newHarness(t, nil)
	pod1, pod2, pod3 := h.client("AKIDPOD1"), h.client("AKIDPOD2"), h.client("AKIDPOD3")
	ts := testNow.Add(-time.Hour)
	first, err := h.batch(pod1, "saas-product", byID("cust-a", "users", ts, 3))
	if err != nil {
		t.Fatal(err)
	}
	second, err := h.batch(pod2, "saas-product", byID("cust-a", "users", ts.Add(20*time.Minute), 5))
	if err != nil {
		t.Fatal(err)
	}
	if got := statuses(second); got != "cust-a/users=DuplicateRecord" {
		t.Fatalf("second sender: %s", got)
	}
	same, err := h.batch(pod3, "saas-product", byID("cust-a", "users", ts, 3))
	if err != nil {
		t.Fatal(err)
	}
	if got := statuses(same); got != "cust-a/users=Success" ||
		aws.ToString(same.Results[0].MeteringRecordId) != aws.ToString(first.Results[0].MeteringRecordId) {
		t.Fatalf("identical record from a third sender: %s %s", got, aws.ToString(same.Results[0].MeteringRecordId))
	}
	st := h.em.State()
	if len(st.Records) != 1 || st.Records[0].Quantity != 3 || len(st.Conflicts) != 1 || st.Conflicts[0].Instance != "AKIDPOD2" {
		t.Fatalf("records %+v conflicts %+v", st.Records, st.Conflicts)
	}
}
