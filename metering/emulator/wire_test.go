package emulator

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	mm "github.com/aws/aws-sdk-go-v2/service/marketplacemetering"
	"github.com/aws/aws-sdk-go-v2/service/marketplacemetering/types"
)

const testAuth = "AWS4-HMAC-SHA256 Credential=AKIDRAW/20250615/us-east-1/aws-marketplace/aws4_request, SignedHeaders=host;x-amz-date;x-amz-target, Signature=abc123"

// rawCall posts body as operation op with the given Authorization.
func (h *harness) rawCall(op, auth, body string) (*http.Response, string) {
	h.t.Helper()
	req, err := http.NewRequestWithContext(ctx(h.t), http.MethodPost, h.srv.URL+"/", strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "AWSMPMeteringService."+op)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp, string(data)
}

func TestWireErrorShape(t *testing.T) {
	h := newHarness(t, nil)
	ts := testNow.Unix()
	resp, body := h.rawCall(OpMeterUsage, testAuth, `{"ProductCode":"nope","UsageDimension":"api_calls","Timestamp":`+strconv.FormatInt(ts, 10)+`,"UsageQuantity":1}`)
	want := `{"__type":"InvalidProductCodeException","message":"product code \"nope\" is not a product of this seller"}`
	if resp.StatusCode != 400 || body != want {
		t.Fatalf("got %d %s\nwant 400 %s", resp.StatusCode, body, want)
	}
	if got := resp.Header.Get("X-Amzn-ErrorType"); got != CodeInvalidProductCode {
		t.Fatalf("X-Amzn-ErrorType = %q", got)
	}
	if got := resp.Header.Get("Content-Type"); got != "application/x-amz-json-1.1" {
		t.Fatalf("Content-Type = %q", got)
	}
	if resp.Header.Get("X-Amzn-RequestId") == "" {
		t.Fatal("no X-Amzn-RequestId")
	}
}

func TestWireSuccessShape(t *testing.T) {
	h := newHarness(t, nil)
	// A fractional epoch timestamp, as the SDK sends with milliseconds.
	resp, body := h.rawCall(OpMeterUsage, testAuth, `{"ProductCode":"metership-demo","UsageDimension":"api_calls","Timestamp":1749990600.25,"UsageQuantity":3}`)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var out map[string]string
	if err := json.Unmarshal([]byte(body), &out); err != nil || len(out) != 1 || out["MeteringRecordId"] == "" {
		t.Fatalf("body %s: %v", body, err)
	}
	rec := h.em.State().Records[0]
	if want := time.Date(2025, 6, 15, 12, 30, 0, 250e6, time.UTC); !rec.Timestamp.Equal(want) || rec.Instance != "AKIDRAW" {
		t.Fatalf("record %+v", rec)
	}

	// BatchMeterUsage echoes each UsageRecord byte for byte.
	rec1 := `{"CustomerIdentifier":"cust-a","Dimension":"users","Quantity":2,"Timestamp":1749990600.125}`
	resp, body = h.rawCall(OpBatchMeterUsage, testAuth, `{"ProductCode":"saas-product","UsageRecords":[`+rec1+`]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	id := h.em.State().Records[1].MeteringRecordID
	want := `{"Results":[{"MeteringRecordId":"` + id + `","Status":"Success","UsageRecord":` + rec1 + `}],"UnprocessedRecords":[]}`
	if body != want {
		t.Fatalf("body\n got %s\nwant %s", body, want)
	}
}

func TestWireProtocolErrors(t *testing.T) {
	h := newHarness(t, nil)
	valid := `{"ProductCode":"metership-demo","UsageDimension":"api_calls","Timestamp":1749990600,"UsageQuantity":1}`
	tests := []struct {
		name   string
		method string
		path   string
		target string
		ctype  string
		auth   string
		body   string
		status int
		code   string
	}{
		{"GET /", http.MethodGet, "/", "AWSMPMeteringService.MeterUsage", "application/x-amz-json-1.1", testAuth, "", 404, CodeUnknownOperation},
		{"unknown operation", http.MethodPost, "/", "AWSMPMeteringService.DeleteUsage", "application/x-amz-json-1.1", testAuth, valid, 400, CodeUnknownOperation},
		{"other service", http.MethodPost, "/", "AmazonS3.MeterUsage", "application/x-amz-json-1.1", testAuth, valid, 400, CodeUnknownOperation},
		{"wrong content type", http.MethodPost, "/", "AWSMPMeteringService.MeterUsage", "application/json", testAuth, valid, 400, CodeSerialization},
		{"no authorization", http.MethodPost, "/", "AWSMPMeteringService.MeterUsage", "application/x-amz-json-1.1", "", valid, 403, CodeMissingAuthenticationToken},
		{"not SigV4", http.MethodPost, "/", "AWSMPMeteringService.MeterUsage", "application/x-amz-json-1.1", "Bearer xyz", valid, 403, CodeIncompleteSignature},
		{"no signature", http.MethodPost, "/", "AWSMPMeteringService.MeterUsage", "application/x-amz-json-1.1", "AWS4-HMAC-SHA256 Credential=AKID/20250615/us-east-1/aws-marketplace/aws4_request", valid, 403, CodeIncompleteSignature},
		{"short scope", http.MethodPost, "/", "AWSMPMeteringService.MeterUsage", "application/x-amz-json-1.1", "AWS4-HMAC-SHA256 Credential=AKID/us-east-1/aws-marketplace, Signature=ab", valid, 403, CodeIncompleteSignature},
		{"wrong service", http.MethodPost, "/", "AWSMPMeteringService.MeterUsage", "application/x-amz-json-1.1", strings.Replace(testAuth, "aws-marketplace", "metering.marketplace", 1), valid, 403, CodeInvalidSignature},
		{"wrong region", http.MethodPost, "/", "AWSMPMeteringService.MeterUsage", "application/x-amz-json-1.1", strings.Replace(testAuth, "us-east-1", "us-west-2", 1), valid, 400, CodeInvalidEndpointRegion},
		{"malformed JSON", http.MethodPost, "/", "AWSMPMeteringService.MeterUsage", "application/x-amz-json-1.1", testAuth, `{"ProductCode":`, 400, CodeSerialization},
		{"wrong member type", http.MethodPost, "/", "AWSMPMeteringService.MeterUsage", "application/x-amz-json-1.1", testAuth, `{"ProductCode":7}`, 400, CodeSerialization},
		{"fractional quantity", http.MethodPost, "/", "AWSMPMeteringService.MeterUsage", "application/x-amz-json-1.1", testAuth, strings.Replace(valid, `"UsageQuantity":1`, `"UsageQuantity":1.5`, 1), 400, CodeValidation},
		{"quantity over int32", http.MethodPost, "/", "AWSMPMeteringService.MeterUsage", "application/x-amz-json-1.1", testAuth, strings.Replace(valid, `"UsageQuantity":1`, `"UsageQuantity":2147483648`, 1), 400, CodeValidation},
		{"string timestamp", http.MethodPost, "/", "AWSMPMeteringService.MeterUsage", "application/x-amz-json-1.1", testAuth, strings.Replace(valid, `1749990600`, `"yesterday"`, 1), 400, CodeSerialization},
		{"batch without records", http.MethodPost, "/", "AWSMPMeteringService.BatchMeterUsage", "application/x-amz-json-1.1", testAuth, `{"ProductCode":"saas-product"}`, 400, CodeValidation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(ctx(t), tt.method, h.srv.URL+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-Amz-Target", tt.target)
			req.Header.Set("Content-Type", tt.ctype)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := h.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct {
				Type    string `json:"__type"`
				Message string `json:"message"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status || body.Type != tt.code || resp.Header.Get("X-Amzn-ErrorType") != tt.code || body.Message == "" {
				t.Fatalf("got %d %+v, want %d %s", resp.StatusCode, body, tt.status, tt.code)
			}
		})
	}
	if st := h.em.State(); len(st.Records) != 0 {
		t.Fatalf("%d records", len(st.Records))
	}
}

func TestSideEndpoints(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client("AKIDPOD1")
	if _, err := h.meter(c, "api_calls", testNow, 5, "tok", alloc(5, tag("team", "a"))); err != nil {
		t.Fatal(err)
	}
	if _, err := h.meter(c, "api_calls", testNow, 6, ""); err == nil {
		t.Fatal("want DuplicateRequestException")
	}
	if _, err := h.batch(h.client("AKIDSAAS"), "saas-product", byAccount("123456789012", "users", testNow, 2)); err != nil {
		t.Fatal(err)
	}

	resp := h.do(http.MethodGet, "/_state", "")
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var got State
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("%v: %s", err, raw)
	}
	if want := h.em.State(); !reflect.DeepEqual(got, want) {
		t.Fatalf("GET /_state\n got %+v\nwant %+v", got, want)
	}
	for _, key := range []string{
		`"product_code":"metership-demo"`, `"dimension":"api_calls"`, `"hour":"2025-06-15T12:00:00Z"`, `"quantity":5`,
		`"allocations":[{"quantity":5,"tags":[{"key":"team","value":"a"}]}]`, `"instance":"AKIDPOD1"`, `"client_token":"tok"`,
		`"customer_aws_account_id":"123456789012"`, `"error":"DuplicateRequestException"`, `"recorded_quantity":5`, `"attempted_quantity":6`,
		`"requests":{"BatchMeterUsage":1,"MeterUsage":2}`, `"errors":{"DuplicateRequestException":1}`, `"record_statuses":{"Success":1}`,
	} {
		if !strings.Contains(string(raw), key) {
			t.Errorf("/_state lacks %s:\n%s", key, raw)
		}
	}

	resp = h.do(http.MethodPost, "/_faults", `{"throttle":1,"internal":2,"unprocessed":3,"latency":"1ms","disabled_api":false}`)
	if resp.StatusCode != 200 {
		t.Fatalf("POST /_faults: %d", resp.StatusCode)
	}
	if f, want := h.em.State().Faults, (Faults{Throttle: 1, Internal: 2, Unprocessed: 3, Latency: time.Millisecond}); f != want {
		t.Fatalf("faults %+v, want %+v", f, want)
	}
	if resp := h.do(http.MethodPost, "/_faults", `{"throttle":-1}`); resp.StatusCode != 400 {
		t.Fatalf("negative fault: %d", resp.StatusCode)
	}
	if resp := h.do(http.MethodPost, "/_faults", `{"latency":"soon"}`); resp.StatusCode != 400 {
		t.Fatalf("bad latency: %d", resp.StatusCode)
	}

	if resp := h.do(http.MethodPost, "/_reset", ""); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("POST /_reset: %d", resp.StatusCode)
	}
	st := h.em.State()
	if len(st.Records) != 0 || len(st.Conflicts) != 0 || len(st.Requests) != 0 || len(st.Errors) != 0 || st.Faults != (Faults{}) {
		t.Fatalf("after reset: %+v", st)
	}
	// The reset forgot the hour and the token too.
	if _, err := h.meter(c, "api_calls", testNow, 6, "tok"); err != nil {
		t.Fatal(err)
	}

	resp = h.do(http.MethodGet, "/_healthz", "")
	if body, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(body) != "ok\n" {
		t.Fatalf("healthz %d %q", resp.StatusCode, body)
	}
	if resp := h.do(http.MethodPost, "/_state", ""); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /_state: %d", resp.StatusCode)
	}
	if resp := h.do(http.MethodGet, "/_reset", ""); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET /_reset: %d", resp.StatusCode)
	}
}

func TestStateIsACopy(t *testing.T) {
	h := newHarness(t, nil)
	if _, err := h.meter(h.client("AKIDPOD1"), "api_calls", testNow, 5, "", alloc(5, tag("team", "a"))); err != nil {
		t.Fatal(err)
	}
	st := h.em.State()
	st.Records[0].Quantity = 99
	st.Records[0].Allocations[0].Tags[0].Value = "changed"
	st.Requests[OpMeterUsage] = 99
	again := h.em.State()
	if again.Records[0].Quantity != 5 || again.Records[0].Allocations[0].Tags[0].Value != "a" || again.Requests[OpMeterUsage] != 1 {
		t.Fatalf("State aliases the emulator: %+v", again)
	}
}

func TestFaultsJSON(t *testing.T) {
	f := Faults{Throttle: 2, Internal: 1, Unprocessed: 3, Latency: 250 * time.Millisecond, DisabledAPI: true}
	data, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"throttle":2,"internal":1,"unprocessed":3,"latency":"250ms","disabled_api":true}`; string(data) != want {
		t.Fatalf("got %s, want %s", data, want)
	}
	var back Faults
	if err := json.Unmarshal(data, &back); err != nil || back != f {
		t.Fatalf("round trip %+v, %v", back, err)
	}
}

func TestRegisterUsage(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.NotEntitledInstances = []string{"AKIDLAPSED"} })
	c := h.client("AKIDPOD1")
	out, err := c.RegisterUsage(ctx(t), &mm.RegisterUsageInput{ProductCode: aws.String(DemoProductCode), PublicKeyVersion: aws.Int32(1), Nonce: aws.String("n-1")})
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(aws.ToString(out.Signature), ".")
	if len(parts) != 3 {
		t.Fatalf("signature %q is not a JWT", aws.ToString(out.Signature))
	}
	claimsJSON, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(claimsJSON, &claims); err != nil {
		t.Fatal(err)
	}
	if claims["productCode"] != DemoProductCode || claims["nonce"] != "n-1" || claims["publicKeyVersion"] != 1.0 {
		t.Fatalf("claims %v", claims)
	}

	_, err = c.RegisterUsage(ctx(t), &mm.RegisterUsageInput{ProductCode: aws.String("nope"), PublicKeyVersion: aws.Int32(1)})
	requireAPIError[*types.InvalidProductCodeException](t, err, 400)
	_, err = c.RegisterUsage(ctx(t), &mm.RegisterUsageInput{ProductCode: aws.String(DemoProductCode), PublicKeyVersion: aws.Int32(2)})
	requireAPIError[*types.InvalidPublicKeyVersionException](t, err, 400)
	_, err = h.client("AKIDLAPSED").RegisterUsage(ctx(t), &mm.RegisterUsageInput{ProductCode: aws.String(DemoProductCode), PublicKeyVersion: aws.Int32(1)})
	requireAPIError[*types.CustomerNotEntitledException](t, err, 400)
}

func TestResolveCustomer(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Customers = map[string]Customer{"reg-token-1": {CustomerIdentifier: "cust-a", CustomerAWSAccountID: "123456789012", ProductCode: "saas-product", LicenseArn: testLicense}}
	})
	c := h.client("AKIDSAAS")
	out, err := c.ResolveCustomer(ctx(t), &mm.ResolveCustomerInput{RegistrationToken: aws.String("reg-token-1")})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(out.CustomerIdentifier) != "cust-a" || aws.ToString(out.CustomerAWSAccountId) != "123456789012" ||
		aws.ToString(out.ProductCode) != "saas-product" || aws.ToString(out.LicenseArn) != testLicense {
		t.Fatalf("resolved %+v", out)
	}
	_, err = c.ResolveCustomer(ctx(t), &mm.ResolveCustomerInput{RegistrationToken: aws.String("forged")})
	requireAPIError[*types.InvalidTokenException](t, err, 400)
}
