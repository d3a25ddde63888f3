package export

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/metership/metership/record"
)

func TestBucketStart(t *testing.T) {
	ts := time.Date(2026, 3, 1, 13, 45, 7, 0, time.UTC) // a Sunday
	for _, c := range []struct{ bucket, start, next string }{
		{"hour", "2026-03-01T13:00:00Z", "2026-03-01T14:00:00Z"},
		{"day", "2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z"},
		{"week", "2026-02-23T00:00:00Z", "2026-03-02T00:00:00Z"}, // Monday before
		{"month", "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"},
	} {
		s := BucketStart(c.bucket, ts)
		if s.Format(time.RFC3339) != c.start || NextBucket(c.bucket, s).Format(time.RFC3339) != c.next {
			t.Errorf("%s: %s .. %s", c.bucket, s, NextBucket(c.bucket, s))
		}
	}
	// A Monday is its own week's start.
	mon := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	if !BucketStart("week", mon).Equal(mon) {
		t.Error("Monday")
	}
}

func TestWindow(t *testing.T) {
	now := time.Date(2026, 3, 4, 10, 30, 0, 0, time.UTC)
	for _, c := range []struct {
		job        Job
		start, end string
	}{
		{Job{AggregationBucket: "day", Range: "ago(2d)"}, "2026-03-02T00:00:00Z", "2026-03-05T00:00:00Z"},
		{Job{AggregationBucket: "day", Range: "ago(2d)", MinimizeFresh: true}, "2026-03-02T00:00:00Z", "2026-03-04T00:00:00Z"},
		{Job{AggregationBucket: "hour", Range: "ago(90m)", EndTimeOffset: "ago(1h)"}, "2026-03-04T09:00:00Z", "2026-03-04T10:00:00Z"},
		{Job{AggregationBucket: "month", Range: "ago(5d)"}, "2026-02-01T00:00:00Z", "2026-04-01T00:00:00Z"},
	} {
		w, err := c.job.Window(now)
		if err != nil || w.Start.Format(time.RFC3339) != c.start || w.End.Format(time.RFC3339) != c.end {
			t.Errorf("%+v: %v .. %v, %v", c.job, w.Start, w.End, err)
		}
	}
	if _, err := (&Job{AggregationBucket: "hour", Range: "ago(1h)", EndTimeOffset: "ago(3h)"}).Window(now); err == nil {
		t.Error("empty window accepted")
	}
}

func TestFormatNanos(t *testing.T) {
	for _, c := range []struct {
		sum  string
		coef string
		want string
	}{
		{"0", "", "0"}, {"1", "", "1"}, {"0.1", "", "0.1"}, {"12.000000001", "", "12.000000001"},
		{"3", "2.5", "7.5"}, {"0.000000003", "0.5", "0.000000002"}, // 1.5 nanos rounds half up
		{"123456789012.5", "0.001", "123456789.0125"},
	} {
		n, ok := record.ParseNanos([]byte(c.sum))
		if !ok {
			t.Fatal(c.sum)
		}
		var coef *big.Rat
		if c.coef != "" {
			coef, _ = new(big.Rat).SetString(c.coef)
		}
		if got := formatNanos(n, coef); got != c.want {
			t.Errorf("%s * %s = %s, want %s", c.sum, c.coef, got, c.want)
		}
	}
	// Decimals add exactly: ten times 0.1 is 1.
	var s record.Nanos
	for range 10 {
		n, _ := record.ParseNanos([]byte("0.1"))
		s.Add(n)
	}
	if formatNanos(s, nil) != "1" {
		t.Error("0.1 x 10")
	}
}

func TestSourcePrefixes(t *testing.T) {
	w := Window{Start: time.Date(2026, 2, 27, 0, 0, 0, 0, time.UTC), End: time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)}
	for _, c := range []struct{ format, want string }{
		{"%m-%d-%Y/$UUID.gz", "02-27-2026/ 02-28-2026/ 03-01-2026/"},
		{"%Y/%m/%d/%H/$UUID.gz", "2026/02/27/00/ 2026/02/27/01/"}, // first two of 72
		{"$TAG/%Y-%m-%d/$UUID.gz", ""},                            // tag first: everything
		{"%Y/%m/$HOSTNAME-$UUID.gz", "2026/02/ 2026/03/"},
		{"logs/%Y%m%d-%H%M%S-$UUID", "logs/"}, // changes within the hour
	} {
		got, err := sourcePrefixes(c.format, w)
		if err != nil {
			t.Fatal(err)
		}
		want := strings.Fields(c.want)
		if c.want == "" {
			want = []string{""}
		}
		if len(got) < len(want) || strings.Join(got[:len(want)], " ") != strings.Join(want, " ") {
			t.Errorf("%s: %q", c.format, got)
		}
	}
}

// FuzzScan: where the fast path reads a line, it reads what gjson reads.
func FuzzScan(f *testing.F) {
	f.Add([]byte(`{"customerId":"c","meterApiName":"a","meterValue":1.5,"meterTimeInMillis":1700000000000,"dimensions":{"r":"eu","t":"x"},"uniqueId":"u"}`))
	f.Add([]byte(`{"customerId":"c","meterApiName":"a","meterValue":2,"meterTimeInMillis":1700000000000,"uniqueId":"u"}`))
	f.Add([]byte(`{"customerId":"c\"q","meterApiName":"a","meterValue":2,"meterTimeInMillis":1,"dimensions":{}}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		var fast, slow fields
		if !scanFast(line, &fast) || !scanSlow(line, &slow) {
			return
		}
		if !bytes.Equal(fast.cust, slow.cust) || !bytes.Equal(fast.api, slow.api) || !bytes.Equal(fast.value, slow.value) ||
			fast.millis != slow.millis || fast.ndims != slow.ndims {
			t.Fatalf("fast %q/%q/%q/%d/%d, slow %q/%q/%q/%d/%d", fast.cust, fast.api, fast.value, fast.millis, fast.ndims,
				slow.cust, slow.api, slow.value, slow.millis, slow.ndims)
		}
		for i := range fast.ndims {
			if !bytes.Equal(fast.dimK[i], slow.dimK[i]) || !bytes.Equal(fast.dimV[i], slow.dimV[i]) {
				t.Fatalf("dimension %d differs", i)
			}
		}
	})
}

// FuzzDecodeJob: any body either fails with field errors or gives a job
// that survives a round trip unchanged (normalization is idempotent) and
// has a window and SQL.
func FuzzDecodeJob(f *testing.F) {
	f.Add([]byte(`{"jobName":"a","s3Url":"b-bucket/p","format":"csv","aggregationBucket":"day","range":"ago(7d)"}`))
	f.Add([]byte(`{"jobName":"a b","s3Url":"s3://bkt/x","format":"json","aggregationBucket":"week","range":"ago(3h)","groupBy":["customerId","r"],"filter":{"r":["x","x"]},"rescaleFunction":{"function":"multiply","coefficient":1e-3},"sparse":false}`))
	f.Add([]byte(`{"jobName":"x","cron":"*/5 * * * *","scheduledTimeInSeconds":5}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		j, err := DecodeJob(body)
		if err != nil {
			var verr *ValidationError
			if !errors.As(err, &verr) || len(verr.Errors) == 0 {
				t.Fatalf("error without fields: %v", err)
			}
			return
		}
		b, err := json.Marshal(j)
		if err != nil {
			t.Fatal(err)
		}
		j2, err := DecodeJob(b)
		if err != nil {
			t.Fatalf("round trip of %s: %v", b, err)
		}
		b2, _ := json.Marshal(j2)
		if !bytes.Equal(b, b2) {
			t.Fatalf("not idempotent:\n%s\n%s", b, b2)
		}
		plan, err := NewPlan(j, time.Date(2026, 5, 5, 5, 5, 5, 0, time.UTC))
		if err != nil {
			t.Fatalf("valid job without a window: %v", err)
		}
		_ = plan.SQL()
	})
}
