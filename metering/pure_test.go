package metering

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/metership/metership/conf"
	"github.com/metership/metership/record"
)

func TestHourOfMillis(t *testing.T) {
	tests := []struct {
		at   time.Time
		want time.Time
	}{
		{time.Date(2025, 6, 15, 10, 0, 0, 0, time.UTC), time.Date(2025, 6, 15, 10, 0, 0, 0, time.UTC)},
		{time.Date(2025, 6, 15, 10, 59, 59, 999e6, time.UTC), time.Date(2025, 6, 15, 10, 0, 0, 0, time.UTC)},
		{time.Date(2025, 6, 15, 11, 0, 0, 0, time.UTC), time.Date(2025, 6, 15, 11, 0, 0, 0, time.UTC)},
		{time.Date(2025, 6, 15, 23, 30, 0, 0, time.FixedZone("UTC+5", 5*3600)), time.Date(2025, 6, 15, 18, 0, 0, 0, time.UTC)},
		{time.Date(2025, 6, 15, 23, 30, 0, 0, time.FixedZone("UTC+5:30", 5*3600+1800)), time.Date(2025, 6, 15, 18, 0, 0, 0, time.UTC)},
		{time.Unix(-1, 0), time.Unix(-3600, 0)},
	}
	for _, tt := range tests {
		if got := hourTime(hourOfMillis(tt.at.UnixMilli())); !got.Equal(tt.want) {
			t.Errorf("hour of %s = %s, want %s", tt.at, got, tt.want)
		}
	}
}

func TestClosedBefore(t *testing.T) {
	h := func(hh, mm int) time.Time { return time.Date(2025, 6, 15, hh, mm, 0, 0, time.UTC) }
	tests := []struct {
		name       string
		now        time.Time
		lateness   time.Duration
		pending    time.Time
		hasPending bool
		want       time.Time
	}{
		{"lateness not over", h(12, 4), 5 * time.Minute, time.Time{}, false, h(11, 0)},
		{"lateness over", h(12, 5), 5 * time.Minute, time.Time{}, false, h(12, 0)},
		{"zero lateness", h(12, 0), 0, time.Time{}, false, h(12, 0)},
		{"pending record holds its hour", h(12, 30), 5 * time.Minute, h(11, 59), true, h(11, 0)},
		{"pending record at the hour's end closes it", h(12, 30), 5 * time.Minute, h(12, 0), true, h(12, 0)},
		{"old pending record holds every later hour", h(12, 30), 5 * time.Minute, h(8, 15), true, h(8, 0)},
		{"pending in the open hour changes nothing", h(12, 30), 5 * time.Minute, h(12, 10), true, h(12, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := hourTime(closedBefore(tt.now, tt.lateness, tt.pending.UnixMilli(), tt.hasPending))
			if !got.Equal(tt.want) {
				t.Errorf("closedBefore = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestOldestReportable(t *testing.T) {
	h := func(hh, mm int) time.Time { return time.Date(2025, 6, 15, hh, mm, 0, 0, time.UTC) }
	tests := []struct {
		now              time.Time
		window, lateness time.Duration
		want             time.Time
	}{
		// 12:30 - 6h + 1h safety = 07:30 -> 08:00.
		{h(12, 30), 6 * time.Hour, 5 * time.Minute, h(8, 0)},
		// 12:00 - 6h + 1h = 07:00 exactly.
		{h(12, 0), 6 * time.Hour, 5 * time.Minute, h(7, 0)},
		{h(12, 0), 24 * time.Hour, 5 * time.Minute, time.Date(2025, 6, 14, 13, 0, 0, 0, time.UTC)},
		// A 2h window leaves a 27.5m margin (half its 55m slack): 12:10 -
		// 2h + 27.5m = 10:37:30 -> 11:00.
		{h(12, 10), 2 * time.Hour, 5 * time.Minute, h(11, 0)},
		// A 1h10m window, 5m lateness: 5m slack, 2.5m safety. 12:05 -
		// 1h10m + 2.5m = 10:57:30 -> 11:00, closed at 12:05.
		{h(12, 5), 70 * time.Minute, 5 * time.Minute, h(11, 0)},
		// At 12:08 the safety has passed for 11:00 (12:07:30), and 12:00
		// is open; 11:00 is still inside the window with 2m to spare
		// (refused from 12:10): it is the target rather than an hour that
		// may close too late again.
		{h(12, 8), 70 * time.Minute, 5 * time.Minute, h(11, 0)},
		// At 12:09 it is not: 12:00, still open.
		{h(12, 9), 70 * time.Minute, 5 * time.Minute, h(12, 0)},
	}
	for _, tt := range tests {
		cut := closedBefore(tt.now, tt.lateness, 0, false)
		got := hourTime(oldestReportable(tt.now, tt.window, tt.lateness, cut))
		if !got.Equal(tt.want) {
			t.Errorf("oldestReportable(%s, %s, %s) = %s, want %s", tt.now.Format("15:04"), tt.window, tt.lateness, got, tt.want)
		}
		if !withinWindow(oldestReportable(tt.now, tt.window, tt.lateness, cut), tt.now.Add(sendMargin-time.Nanosecond), tt.window) {
			t.Errorf("oldest reportable hour of %s is not sendable for sendMargin", tt.now)
		}
	}
}

// reportSequence applies roundDown hour after hour as the reporter does.
func reportSequence(hours []int64) (quantities []int64, carry int64) {
	for _, n := range hours {
		q, c := roundDown(carry + n)
		quantities = append(quantities, q)
		carry = c
	}
	return quantities, carry
}

func TestCarryRounding(t *testing.T) {
	const u = nanosPerUnit
	tests := []struct {
		name      string
		hours     []int64
		want      []int64
		wantCarry int64
	}{
		{"0.4 three times", []int64{0.4 * u, 0.4 * u, 0.4 * u}, []int64{0, 0, 1}, 0.2 * u},
		{"0.1 ten times is exactly one", []int64{0.1 * u, 0.1 * u, 0.1 * u, 0.1 * u, 0.1 * u, 0.1 * u, 0.1 * u, 0.1 * u, 0.1 * u, 0.1 * u}, []int64{0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 0},
		{"halves are not rounded up twice", []int64{2.5 * u, 2.5 * u, 2.5 * u}, []int64{2, 3, 2}, 0.5 * u},
		{"0.9999 stays unbilled", []int64{0.9999 * u}, []int64{0}, 0.9999 * u},
		{"whole units pass through", []int64{7 * u, 0, 3 * u}, []int64{7, 0, 3}, 0},
		{"over the API maximum carries on", []int64{(maxQuantity + 10) * u, 0}, []int64{maxQuantity, 10}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, carry := reportSequence(tt.hours)
			if fmt.Sprint(got) != fmt.Sprint(tt.want) || carry != tt.wantCarry {
				t.Errorf("quantities %v carry %d, want %v carry %d", got, carry, tt.want, tt.wantCarry)
			}
			var in, out int64
			for i := range tt.hours {
				in += tt.hours[i]
				out += got[i] * u
			}
			if in != out+carry {
				t.Errorf("input %d != reported %d + carry %d", in, out, carry)
			}
		})
	}
}

func TestLargestRemainder(t *testing.T) {
	tests := []struct {
		q       int64
		weights []int64
		want    []int64
	}{
		{10, []int64{1, 1, 1}, []int64{4, 3, 3}},
		{1, []int64{1, 1}, []int64{1, 0}},
		{100, []int64{333, 333, 334}, []int64{33, 33, 34}},
		{7, []int64{0, 5, 0}, []int64{0, 7, 0}},
		{3, []int64{1, 2, 3}, []int64{1, 1, 1}},
		{5, []int64{0, 0}, nil},
		{0, []int64{4, 5}, []int64{0, 0}},
		{maxQuantity, []int64{math.MaxInt64 / 4, math.MaxInt64 / 4, math.MaxInt64 / 4}, []int64{715827883, 715827882, 715827882}},
	}
	for _, tt := range tests {
		got := largestRemainder(tt.q, tt.weights)
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("largestRemainder(%d, %v) = %v, want %v", tt.q, tt.weights, got, tt.want)
		}
	}
	// Property: shares sum exactly and each is the floor or ceiling of
	// the exact proportional share.
	for seed := int64(1); seed < 200; seed++ {
		n := int(seed%17) + 1
		weights := make([]int64, n)
		var total int64
		for i := range weights {
			weights[i] = (seed*7919 + int64(i)*104729) % 1000003
			total += weights[i]
		}
		q := seed * 37 % 1001
		shares := largestRemainder(q, weights)
		var sum int64
		for i, s := range shares {
			sum += s
			exact := float64(q) * float64(weights[i]) / float64(total)
			if float64(s) < math.Floor(exact)-1e-9 || float64(s) > math.Ceil(exact)+1e-9 {
				t.Fatalf("seed %d: share %d of %v is %d, exact %.3f", seed, i, weights, s, exact)
			}
		}
		if sum != q {
			t.Fatalf("seed %d: shares sum to %d, want %d", seed, sum, q)
		}
	}
}

func TestAllocateCapsAt2500(t *testing.T) {
	buckets := map[string]*bucket{}
	var keys []string
	for i := range 3000 {
		tags := []tag{{Key: "team", Value: fmt.Sprintf("t%04d", i)}}
		k := bucketKey(tags)
		buckets[k] = &bucket{Tags: tags, Nanos: int64(i+1) * nanosPerUnit}
		keys = append(keys, k)
	}
	untagged := bucketKey(nil)
	buckets[untagged] = &bucket{Nanos: 5 * nanosPerUnit}
	keys = append(keys, untagged)
	sort.Strings(keys)
	const q = 1_000_000
	allocs := allocate(q, buckets, keys)
	if len(allocs) > maxAllocations {
		t.Fatalf("%d allocations, want <= %d", len(allocs), maxAllocations)
	}
	var sum int64
	seen := map[string]bool{}
	for _, a := range allocs {
		sum += a.Quantity
		k := bucketKey(a.Tags)
		if seen[k] {
			t.Fatalf("tag set %q twice", k)
		}
		seen[k] = true
	}
	if sum != q {
		t.Fatalf("allocations sum to %d, want %d", sum, q)
	}
	if !seen[untagged] {
		t.Fatal("the smallest buckets were not merged into the untagged allocation")
	}
	if !seen[bucketKey([]tag{{Key: "team", Value: "t2999"}})] {
		t.Fatal("the largest bucket lost its own allocation")
	}
}

func TestClientToken(t *testing.T) {
	base := clientToken("prod", "api_calls", 1749988800, "agent-1")
	if base != clientToken("prod", "api_calls", 1749988800, "agent-1") {
		t.Fatal("token is not deterministic")
	}
	if len(base) == 0 || len(base) > 64 {
		t.Fatalf("token %q is %d characters, want 1..64", base, len(base))
	}
	for _, c := range base {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z') {
			t.Fatalf("token %q has %q", base, c)
		}
	}
	others := []string{
		clientToken("prod2", "api_calls", 1749988800, "agent-1"),
		clientToken("prod", "api_calls2", 1749988800, "agent-1"),
		clientToken("prod", "api_calls", 1749988800+3600, "agent-1"),
		clientToken("prod", "api_calls", 1749988800, "agent-2"),
		// Field boundaries are unambiguous.
		clientToken("pro", "dapi_calls", 1749988800, "agent-1"),
	}
	for i, o := range others {
		if o == base {
			t.Errorf("variant %d gives the same token", i)
		}
	}
}

func TestFactor(t *testing.T) {
	tests := []struct {
		spec string
		raw  string
		want int64
	}{
		{"api_calls", "7", 7 * nanosPerUnit},
		{"storage_gb*0.001", "1500", 1.5 * nanosPerUnit},
		{"storage_gb*0.000000001", "1", 1},
		{"storage_gb*0.000000001", "0.5", 0}, // half a nano rounds down
		{"storage_gb*0.000000001", "1000000000000", 1000 * nanosPerUnit},
		{"x*2.5", "0.4", 1 * nanosPerUnit},
		{"x*1e-3", "3000", 3 * nanosPerUnit},
		{"x*0.1", "0.3", 30_000_000},
	}
	for _, tt := range tests {
		_, f, err := ParseDimension(tt.spec)
		if err != nil {
			t.Fatal(err)
		}
		raw, ok := record.ParseNanos([]byte(tt.raw))
		if !ok {
			t.Fatal(tt.raw)
		}
		if got := parseFactor(tt.spec, f).apply(raw); got != tt.want {
			t.Errorf("%s applied to %s = %d nanos, want %d", tt.spec, tt.raw, got, tt.want)
		}
	}
	huge := record.Nanos{Hi: 1}
	if got := parseFactor("x", 1).apply(huge); got != math.MaxInt64 {
		t.Errorf("overflow is not saturated: %d", got)
	}
}

func TestSanitizeTagValue(t *testing.T) {
	tests := []struct{ in, want string }{
		{"team-a", "team-a"},
		{"a/b:c@d.e_f+g=h", "a/b:c@d.e_f+g=h"},
		{"a b!#$%&'()*,;<", "a b!#$%&'()*,;<"},
		{"x>y?z[w]", "x_y_z_w_"},
		{"café", "caf_"},
		{"日本", "__"},
		{strings.Repeat("a", 300), strings.Repeat("a", 256)},
	}
	for _, tt := range tests {
		got := sanitizeTagValue(tt.in)
		if got != tt.want {
			t.Errorf("sanitizeTagValue(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if !ValidTag(got, MaxTagValueLen) {
			t.Errorf("sanitizeTagValue(%q) = %q is not a valid tag value", tt.in, got)
		}
	}
}

// TestParseSettings: metering's rules (ValidateConfig, which
// engine.Validate runs) and what New itself refuses (parseSettings: a
// mode it cannot run, a dimension it cannot parse) name the key.
func TestParseSettings(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*conf.Metering)
		key    string // "" = valid
	}{
		{"valid", func(*conf.Metering) {}, ""},
		{"mode off", func(c *conf.Metering) { c.Mode = "off" }, "metering.mode"},
		{"no product", func(c *conf.Metering) { c.ProductCode = "" }, "metering.product_code"},
		{"bad factor", func(c *conf.Metering) { c.Dimensions["x"] = "d*-1" }, "metering.dimensions.x"},
		{"bad tag", func(c *conf.Metering) { c.AllocationTags = []string{"a{b}"} }, "metering.allocation_tags[0]"},
		{"duplicate tag", func(c *conf.Metering) { c.AllocationTags = []string{"a", "a"} }, "metering.allocation_tags[1]"},
		{"license in meter_usage", func(c *conf.Metering) { c.LicenseARN = "arn:aws:license-manager::1:license:l-1" }, "metering.license_arn"},
		{"license neither arn nor dimension", func(c *conf.Metering) {
			c.Mode = ModeBatchMeterUsage
			c.LicenseARN = "l-1"
		}, "metering.license_arn"},
		{"short window", func(c *conf.Metering) { c.Window = conf.Duration(30 * time.Minute) }, "metering.window"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := meterConfig()
			tt.mutate(&cfg)
			var err error
			if errs := ValidateConfig(cfg); len(errs) > 0 {
				err = errs
			}
			if _, perr := parseSettings(cfg); perr != nil {
				err = errors.Join(err, perr)
			}
			if tt.key == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.key+":") {
				t.Fatalf("error %v, want one naming %s", err, tt.key)
			}
		})
	}
}

// classify decides what a reporting pass does with a call's error.
func TestClassify(t *testing.T) {
	apiErr := func(code string, status int) error {
		return &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}},
			Err:      &smithy.GenericAPIError{Code: code, Message: "m"},
		}
	}
	httpErr := func(status int) error {
		return &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}}, Err: errors.New("no body")}
	}
	tests := []struct {
		name string
		err  error
		want outcome
		code string
	}{
		{"ok", nil, outOK, ""},
		{"dry run", apiErr("DryRunOperation", 412), outDryRun, "DryRunOperation"},
		{"duplicate", apiErr("DuplicateRequestException", 400), outConflict, "DuplicateRequestException"},
		{"idempotency", apiErr("IdempotencyConflictException", 409), outConflict, "IdempotencyConflictException"},
		{"out of bounds", apiErr("TimestampOutOfBoundsException", 400), outOutOfBounds, "TimestampOutOfBoundsException"},
		{"throttling", apiErr("ThrottlingException", 400), outRetry, "ThrottlingException"},
		{"internal", apiErr("InternalServiceErrorException", 500), outRetry, "InternalServiceErrorException"},
		{"expired token", apiErr("ExpiredTokenException", 400), outRetry, "ExpiredTokenException"},
		{"429 without a known code", apiErr("SomethingNew", 429), outRetry, "SomethingNew"},
		{"invalid product", apiErr("InvalidProductCodeException", 400), outPermanent, "InvalidProductCodeException"},
		{"bare 403", httpErr(403), outPermanent, "HTTP403"},
		{"bare 503", httpErr(503), outRetry, "HTTP503"},
		{"invalid parameters", &smithy.InvalidParamsError{Context: "MeterUsageInput"}, outPermanent, "Network"},
		{"connection refused", errors.New("dial tcp: connection refused"), outRetry, "Network"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, code := classify(context.Background(), tt.err)
			if got != tt.want || code != tt.code {
				t.Fatalf("classify = %v, %q; want %v, %q", got, code, tt.want, tt.code)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if got, _ := classify(ctx, errors.New("x")); got != outCanceled {
		t.Fatalf("classify after cancel = %v", got)
	}
}
