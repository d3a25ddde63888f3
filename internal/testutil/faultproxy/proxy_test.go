package faultproxy_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/metership/metership/internal/testutil/faultproxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func get(t *testing.T, c *http.Client, url string) (int, string, http.Header, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, url, strings.NewReader("payload"))
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header, nil
}

func TestProxyFaults(t *testing.T) {
	var hosts []string
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		hosts = append(hosts, r.Host)
		w.Write([]byte("echo " + r.URL.Path + " " + string(body)))
	}))
	defer target.Close()
	p := faultproxy.Start(t, target.URL)
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()

	status, body, _, err := get(t, c, p.URL()+"/a/b")
	if err != nil || status != 200 || body != "echo /a/b payload" {
		t.Fatalf("forwarded: %d %q %v", status, body, err)
	}
	if hosts[0] != p.Addr() {
		t.Errorf("target saw Host %q, want the proxy's %q (signatures cover it)", hosts[0], p.Addr())
	}

	p.Fail(2, http.StatusServiceUnavailable)
	for i := 0; i < 2; i++ {
		status, body, _, err = get(t, c, p.URL()+"/x")
		if err != nil || status != 503 || !strings.Contains(body, "<Code>SlowDown</Code>") {
			t.Fatalf("injected %d: %d %q %v", i, status, body, err)
		}
	}
	p.FailAfter(1, 1, http.StatusForbidden)
	if status, _, _, _ = get(t, c, p.URL()+"/x"); status != 200 {
		t.Fatalf("skipped request answered %d", status)
	}
	if status, body, _, _ = get(t, c, p.URL()+"/x"); status != 403 || !strings.Contains(body, "AccessDenied") {
		t.Fatalf("FailAfter: %d %q", status, body)
	}
	if status, _, _, _ = get(t, c, p.URL()+"/x"); status != 200 {
		t.Fatalf("after faults: %d", status)
	}

	p.Down()
	if _, _, _, err = get(t, c, p.URL()+"/x"); err == nil {
		t.Fatal("request through a down proxy succeeded")
	}
	if err := p.Up(); err != nil {
		t.Fatal(err)
	}
	if status, _, _, err = get(t, c, p.URL()+"/x"); err != nil || status != 200 {
		t.Fatalf("after Up: %d %v", status, err)
	}

	p.SetLatency(20 * time.Millisecond)
	start := time.Now()
	get(t, c, p.URL()+"/x")
	if time.Since(start) < 20*time.Millisecond {
		t.Error("latency not applied")
	}

	cnt := p.Counts()
	if cnt.Requests != 8 || cnt.Injected != 3 || cnt.Forwarded != 5 || cnt.Status[200] != 5 || cnt.Methods["PUT 200"] != 5 || p.Status(200) != 5 || p.Requests() != 8 {
		t.Errorf("counts = %+v", cnt)
	}
}
