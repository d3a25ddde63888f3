package ship

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/aws/smithy-go"

	"github.com/metership/metership/internal/testutil/s3server"
)

// stsEndpoint is a minimal local STS that answers AssumeRole with a fixed
// temporary key pair and session token, and records the calls.
type stsEndpoint struct {
	mu    sync.Mutex
	calls []url.Values
}

func (s *stsEndpoint) handler() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.calls = append(s.calls, r.PostForm)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "text/xml")
		fmt.Fprintf(w, `<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
<AssumeRoleResult><Credentials><AccessKeyId>ASIAROLEKEY</AccessKeyId><SecretAccessKey>role-secret</SecretAccessKey><SessionToken>session-token</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>
<AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/shipper/metership</Arn><AssumedRoleId>AROAEXAMPLE:metership</AssumedRoleId></AssumedRoleUser></AssumeRoleResult>
<ResponseMetadata><RequestId>sts-1</RequestId></ResponseMetadata></AssumeRoleResponse>`)
	}
}

// recordingTransport keeps the headers of the requests it sends.
type recordingTransport struct {
	http.RoundTripper
	mu      sync.Mutex
	headers []http.Header
}

func (rt *recordingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rt.mu.Lock()
	rt.headers = append(rt.headers, r.Header.Clone())
	rt.mu.Unlock()
	return rt.RoundTripper.RoundTrip(r)
}

func (rt *recordingTransport) CloseIdleConnections() {
	rt.RoundTripper.(*http.Transport).CloseIdleConnections()
}

// TestS3AssumeRole checks the RoleARN path: the base credentials call
// AssumeRole with the external id, once, and the S3 requests are signed with
// the role's temporary keys and carry its session token. versitygw has no
// STS, so it refuses the token; the test checks what was sent.
func TestS3AssumeRole(t *testing.T) {
	srv := s3server.Start(t)
	sts := &stsEndpoint{}
	stsSrv := httptest.NewServer(sts.handler())
	defer stsSrv.Close()
	t.Setenv("AWS_ENDPOINT_URL_STS", stsSrv.URL)
	// The SDK refuses a plain *http.Client when a CA bundle is configured.
	t.Setenv("AWS_CA_BUNDLE", "")
	rt := &recordingTransport{RoundTripper: &http.Transport{}}
	u := newS3(t, srv, srv.Endpoint(), func(o *S3Options) {
		o.RoleARN = "arn:aws:iam::123456789012:role/shipper"
		o.ExternalID = "ext-42"
		o.HTTPClient = &http.Client{Transport: rt}
	})
	for i := 0; i < 2; i++ {
		err := u.Put(testCtx(t), &Object{Key: fmt.Sprintf("role-%d.gz", i), Body: []byte("x")})
		var apiErr smithy.APIError
		if !errors.As(err, &apiErr) || !IsPermanent(err) {
			t.Fatalf("Put = %v, want versitygw to refuse the session token", err)
		}
	}
	sts.mu.Lock()
	calls := sts.calls
	sts.mu.Unlock()
	if len(calls) != 1 {
		t.Fatalf("AssumeRole called %d times, want once (credentials cached)", len(calls))
	}
	c := calls[0]
	if c.Get("Action") != "AssumeRole" || c.Get("RoleArn") != "arn:aws:iam::123456789012:role/shipper" ||
		c.Get("ExternalId") != "ext-42" || c.Get("RoleSessionName") != "metership" {
		t.Fatalf("AssumeRole request = %v", c)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	var puts int
	for _, h := range rt.headers {
		auth := h.Get("Authorization")
		switch {
		case strings.Contains(auth, "Credential="+srv.AccessKey()+"/"):
			if h.Get("X-Amz-Security-Token") != "" {
				t.Errorf("AssumeRole call carries a session token")
			}
		case strings.Contains(auth, "Credential=ASIAROLEKEY/"):
			puts++
			if h.Get("X-Amz-Security-Token") != "session-token" {
				t.Errorf("S3 request without the role's session token: %v", h)
			}
		default:
			t.Errorf("request signed with unexpected credentials: %q", auth)
		}
	}
	if puts != 2 {
		t.Errorf("%d S3 requests signed with the role's key, want 2", puts)
	}
}
