package retry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// apiErr is what the SDK returns for an HTTP answer with an error code.
func apiErr(status int, code string) error {
	return &smithy.OperationError{ServiceID: "S3", OperationName: "PutObject", Err: &smithyhttp.ResponseError{
		Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}},
		Err:      &smithy.GenericAPIError{Code: code, Message: "m"},
	}}
}

// statusErr is an HTTP answer without a code the SDK could read.
func statusErr(status int) error {
	return &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}}, Err: io.ErrUnexpectedEOF}
}

func TestIsPermanent(t *testing.T) {
	base := errors.New("connection refused")
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"network", base, false},
		{"wrapped", Permanent(base), true},
		{"wrapped twice", Permanent(Permanent(base)), true},
		{"wrapped in fmt", fmt.Errorf("put k: %w", Permanent(base)), true},
		{"canceled", context.Canceled, false},
		{"deadline", fmt.Errorf("call: %w", context.DeadlineExceeded), false},
		// The SDK's throttle codes, whatever the status.
		{"SlowDown", apiErr(503, "SlowDown"), false},
		{"ThrottlingException 400", apiErr(400, "ThrottlingException"), false},
		{"Throttling 400", apiErr(400, "Throttling"), false},
		{"TooManyRequestsException", apiErr(400, "TooManyRequestsException"), false},
		{"RequestLimitExceeded", apiErr(400, "RequestLimitExceeded"), false},
		{"PriorRequestNotComplete", apiErr(400, "PriorRequestNotComplete"), false},
		{"TransactionInProgressException", apiErr(400, "TransactionInProgressException"), false},
		{"ThrottledException", apiErr(400, "ThrottledException"), false},
		{"RequestThrottled", apiErr(400, "RequestThrottled"), false},
		{"RequestThrottledException", apiErr(400, "RequestThrottledException"), false},
		{"BandwidthLimitExceeded", apiErr(400, "BandwidthLimitExceeded"), false},
		{"EC2ThrottledException", apiErr(400, "EC2ThrottledException"), false},
		// The SDK's retryable codes.
		{"RequestTimeout 400", apiErr(400, "RequestTimeout"), false},
		{"RequestTimeoutException", apiErr(400, "RequestTimeoutException"), false},
		// The project's extras.
		{"InternalError 400", apiErr(400, "InternalError"), false},
		{"ServiceUnavailable 400", apiErr(400, "ServiceUnavailable"), false},
		{"ConditionalRequestConflict", apiErr(409, "ConditionalRequestConflict"), false},
		{"OperationAborted", apiErr(409, "OperationAborted"), false},
		{"RequestTimeTooSkewed", apiErr(403, "RequestTimeTooSkewed"), false},
		{"ExpiredToken", apiErr(400, "ExpiredToken"), false},
		{"ExpiredTokenException", apiErr(403, "ExpiredTokenException"), false},
		{"IDPCommunicationError", apiErr(400, "IDPCommunicationError"), false},
		// By status when the code says nothing.
		{"AccessDenied", apiErr(403, "AccessDenied"), true},
		{"InvalidAccessKeyId", apiErr(403, "InvalidAccessKeyId"), true},
		{"SignatureDoesNotMatch", apiErr(403, "SignatureDoesNotMatch"), true},
		{"NoSuchBucket", apiErr(404, "NoSuchBucket"), true},
		{"InvalidArgument", apiErr(400, "InvalidArgument"), true},
		{"InvalidProductCodeException", apiErr(400, "InvalidProductCodeException"), true},
		{"InternalServiceErrorException 500", apiErr(500, "InternalServiceErrorException"), false},
		{"408", statusErr(408), false},
		{"409", statusErr(409), false},
		{"429", statusErr(429), false},
		{"500", statusErr(500), false},
		{"502", statusErr(502), false},
		{"400", statusErr(400), true},
		{"413", statusErr(413), true},
		{"3xx", statusErr(301), false},
		// Requests the SDK refuses to build do not get better.
		{"invalid params", &smithy.InvalidParamsError{Context: "PutObjectInput"}, true},
		{"serialization", &smithy.SerializationError{Err: base}, true},
	}
	for _, tt := range tests {
		if got := IsPermanent(tt.err); got != tt.want {
			t.Errorf("%s: IsPermanent(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
	if Permanent(nil) != nil {
		t.Error("Permanent(nil) != nil")
	}
	if p := Permanent(base); !errors.Is(p, base) {
		t.Error("Permanent does not unwrap")
	}
}

// fixedRand returns always the same fraction of n: 0 the shortest wait,
// 1 the longest.
func fixedRand(frac float64) func(int64) int64 {
	return func(n int64) int64 {
		if n <= 0 {
			panic("rand bound must be positive")
		}
		return min(int64(frac*float64(n)), n-1)
	}
}

func TestBackoff(t *testing.T) {
	const ms = time.Millisecond
	tests := []struct {
		name         string
		initial, max time.Duration
		frac         float64
		want         []time.Duration
	}{
		{"shortest", 100 * ms, 800 * ms, 0, []time.Duration{50 * ms, 100 * ms, 200 * ms, 400 * ms, 400 * ms}},
		{"longest", 100 * ms, 800 * ms, 1, []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 800 * ms}},
		{"capped below a doubling", 100 * ms, 300 * ms, 1, []time.Duration{100 * ms, 200 * ms, 300 * ms, 300 * ms}},
		{"max below initial", 100 * ms, 10 * ms, 1, []time.Duration{100 * ms, 100 * ms}},
		{"middle", 1000 * ms, 4000 * ms, 0.5, []time.Duration{750 * ms, 1500 * ms, 3000 * ms, 3000 * ms}},
	}
	for _, tt := range tests {
		b := Backoff{Initial: tt.initial, Max: tt.max, Rand: fixedRand(tt.frac)}
		for i, want := range tt.want {
			if got := b.Next(); got != want {
				t.Errorf("%s: wait %d = %v, want %v", tt.name, i+1, got, want)
			}
		}
		b.Reset()
		if got := b.Next(); got != tt.want[0] {
			t.Errorf("%s: after Reset wait = %v, want %v", tt.name, got, tt.want[0])
		}
	}
}

func TestBackoffSlow(t *testing.T) {
	for _, tt := range []struct {
		frac float64
		want time.Duration
	}{{0, 30 * time.Second}, {1, time.Minute}} {
		b := Backoff{Initial: time.Second, Max: time.Minute, Rand: fixedRand(tt.frac)}
		if got := b.Slow(); got != tt.want {
			t.Errorf("Slow with rand %v = %v, want %v", tt.frac, got, tt.want)
		}
		// A permanent error does not advance the exponential sequence.
		if got, want := b.Next(), time.Second/2+time.Duration(tt.frac*float64(time.Second/2)); got != want {
			t.Errorf("Next after Slow = %v, want %v", got, want)
		}
	}
}

// TestBackoffRange draws from the real source: every wait stays in
// [d/2, d] of its bound.
func TestBackoffRange(t *testing.T) {
	b := Backoff{Initial: 3 * time.Millisecond, Max: 40 * time.Millisecond}
	bound := 3 * time.Millisecond
	for i := range 200 {
		got := b.Next()
		if got < bound/2 || got > bound {
			t.Fatalf("wait %d = %v, want within [%v, %v]", i+1, got, bound/2, bound)
		}
		bound = min(2*bound, 40*time.Millisecond)
	}
}

func TestWait(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ctx := context.Background()
	if Wait(ctx, time.Hour, now, now.Add(time.Minute)) {
		t.Error("Wait started a wait that ends past the deadline")
	}
	if !Wait(ctx, time.Millisecond, now, now.Add(time.Minute)) {
		t.Error("Wait refused a wait within the deadline")
	}
	if !Wait(ctx, time.Millisecond, now, time.Time{}) {
		t.Error("Wait with no deadline refused")
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if Wait(canceled, time.Hour, now, time.Time{}) {
		t.Error("Wait on a done context waited")
	}
}
