package record

import (
	"fmt"
	"testing"
)

func BenchmarkParseMeter(b *testing.B) {
	p, _ := NewParser(Options{})
	lines := make([][]byte, 1024)
	size := 0
	for i := range lines {
		lines[i] = fmt.Appendf(nil, `{"customerId":"customer-%06d","meterApiName":"api-calls","meterValue":%d,"meterTimeInMillis":%d,"dimensions":{"region":"us-east-1","tier":"gold"}}`, i%5000, i%100, 1654560000000+int64(i)*1000)
		size += len(lines[i])
	}
	dst := make([]byte, 0, 1024)
	b.SetBytes(int64(size / len(lines)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var err error
		dst, _, err = p.Parse(dst[:0], lines[i%len(lines)], Origin{ID: "f", Offset: int64(i)})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

func BenchmarkParseMapped(b *testing.B) {
	p, _ := NewParser(Options{Format: FormatJSON, Fields: map[string]string{"customerId": "tenant.id", "meterApiName": `"api-calls"`, "meterValue": "bytes", "meterTimeInMillis": "ts", "dimensions.region": "cloud.region"}})
	line := []byte(`{"level":"info","msg":"request","tenant":{"id":"t-1"},"bytes":512,"ts":"2022-06-07T00:00:00.250Z","cloud":{"region":"eu-west-1"}}`)
	dst := make([]byte, 0, 1024)
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		var err error
		dst, _, err = p.Parse(dst[:0], line, Origin{ID: "f", Offset: int64(i)})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
