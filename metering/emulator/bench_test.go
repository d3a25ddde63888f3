package emulator

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// BenchmarkBatchMeterUsageHandler measures the emulator itself (no network):
// full batches of 25 new records through ServeHTTP.
func BenchmarkBatchMeterUsageHandler(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Now = func() time.Time { return testNow }
	em := New(cfg)
	ts := testNow.Unix()
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		var sb strings.Builder
		sb.WriteString(`{"ProductCode":"metership-demo","UsageRecords":[`)
		for i := range 25 {
			if i > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, `{"CustomerIdentifier":"c-%d","Dimension":"api_calls","Quantity":%d,"Timestamp":%d}`, n, i, ts)
			n++
		}
		sb.WriteString(`]}`)
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(sb.String()))
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("X-Amz-Target", targetPrefix+OpBatchMeterUsage)
		req.Header.Set("Authorization", testAuth)
		rec := httptest.NewRecorder()
		em.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
}
