package emulator

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	mm "github.com/aws/aws-sdk-go-v2/service/marketplacemetering"
	"github.com/aws/aws-sdk-go-v2/service/marketplacemetering/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"go.uber.org/goleak"

	"github.com/metership/metership/internal/testutil/fakeclock"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testNow is the emulator's clock at the start of every test: 12:30 UTC,
// so the current hour is 12:00 and the 6 h window reaches back to 06:30.
var testNow = time.Date(2025, time.June, 15, 12, 30, 0, 0, time.UTC)

// clock is the emulator's time source, moved by the tests.
type clock = fakeclock.Clock

// harness is an emulator behind a real HTTP server on 127.0.0.1.
type harness struct {
	t     *testing.T
	em    *Emulator
	srv   *httptest.Server
	clock *clock
}

// newHarness starts an emulator with the test products; mutate edits the
// config before New.
func newHarness(t *testing.T, mutate func(*Config)) *harness {
	t.Helper()
	clk := fakeclock.New(testNow)
	cfg := DefaultConfig()
	cfg.Products["saas-product"] = Product{
		Dimensions: []string{"users", "gigabytes"},
		Licenses:   []string{"arn:aws:license-manager::123456789012:license:l-one"},
	}
	cfg.Products["any-dimension"] = Product{}
	cfg.Now = clk.Now
	if mutate != nil {
		mutate(&cfg)
	}
	h := &harness{t: t, em: New(cfg), clock: clk}
	h.srv = httptest.NewServer(h.em)
	t.Cleanup(h.srv.Close)
	return h
}

// client returns an SDK client signing with access key akid in Region
// us-east-1 (unless opts change it), retrying quickly.
func (h *harness) client(akid string, opts ...func(*mm.Options)) *mm.Client {
	o := mm.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(h.srv.URL),
		Credentials:  credentials.NewStaticCredentialsProvider(akid, "secret-"+akid, ""),
		HTTPClient:   h.srv.Client(),
		Retryer: retry.NewStandard(func(so *retry.StandardOptions) {
			so.Backoff = retry.NewExponentialJitterBackoff(5 * time.Millisecond)
			so.RateLimiter = ratelimit.None
		}),
	}
	for _, fn := range opts {
		fn(&o)
	}
	return mm.New(o)
}

// withInstance sends X-Emulator-Instance on every request of a client.
func withInstance(instance string) func(*mm.Options) {
	return func(o *mm.Options) {
		o.APIOptions = append(o.APIOptions, smithyhttp.AddHeaderValue(InstanceHeader, instance))
	}
}

// withoutClientValidation drops the SDK's required-member check so tests
// can send what only a hand-written client would.
func withoutClientValidation(o *mm.Options) {
	o.APIOptions = append(o.APIOptions, func(s *middleware.Stack) error {
		_, err := s.Initialize.Remove("OperationInputValidation")
		return err
	})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// meter sends one MeterUsage with an explicit ClientToken.
func (h *harness) meter(c *mm.Client, dimension string, ts time.Time, qty int32, token string, allocs ...types.UsageAllocation) (*mm.MeterUsageOutput, error) {
	in := &mm.MeterUsageInput{
		ProductCode:    aws.String(DemoProductCode),
		UsageDimension: aws.String(dimension),
		Timestamp:      aws.Time(ts),
		UsageQuantity:  aws.Int32(qty),
	}
	if token != "" {
		in.ClientToken = aws.String(token)
	}
	if allocs != nil {
		in.UsageAllocations = allocs
	}
	return c.MeterUsage(ctx(h.t), in)
}

// requireAPIError asserts err is the typed SDK error T with HTTP status.
func requireAPIError[T error](t *testing.T, err error, status int) T {
	t.Helper()
	var target T
	if !errors.As(err, &target) {
		t.Fatalf("error = %v (%T), want %T", err, err, target)
	}
	requireStatus(t, err, status)
	return target
}

// requireGenericCode asserts err is an API error with code and status.
func requireGenericCode(t *testing.T, err error, code string, status int) {
	t.Helper()
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != code {
		t.Fatalf("error = %v, want API error %s", err, code)
	}
	requireStatus(t, err, status)
}

func requireStatus(t *testing.T, err error, status int) {
	t.Helper()
	var respErr *awshttp.ResponseError
	if !errors.As(err, &respErr) {
		t.Fatalf("error %v carries no HTTP response", err)
	}
	if got := respErr.HTTPStatusCode(); got != status {
		t.Fatalf("HTTP status = %d, want %d (%v)", got, status, err)
	}
}

func tag(k, v string) types.Tag { return types.Tag{Key: aws.String(k), Value: aws.String(v)} }

func alloc(q int32, tags ...types.Tag) types.UsageAllocation {
	return types.UsageAllocation{AllocatedUsageQuantity: aws.Int32(q), Tags: tags}
}

// do sends a plain HTTP request to the emulator.
func (h *harness) do(method, path, body string) *http.Response {
	h.t.Helper()
	req, err := http.NewRequestWithContext(ctx(h.t), method, h.srv.URL+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}
