package export_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/metership/metership/conf"
	"github.com/metership/metership/engine"
	"github.com/metership/metership/export"
	"github.com/metership/metership/internal/testutil/fakeclock"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The AWS SDK's and net/http's idle keep-alive connections.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
	)
}

const testKey = "test-key-0123456789abcdef"

// env is a Jobs API over a config, served by httptest.
type env struct {
	t     *testing.T
	cfg   conf.Config
	svc   *export.Service
	http  *httptest.Server
	clock *fakeclock.Clock
}

// fileConfig is a config with file:// output and store under a temp dir.
func fileConfig(t *testing.T) conf.Config {
	t.Helper()
	dir := t.TempDir()
	cfg, err := conf.Parse([]byte(fmt.Sprintf(`
output:
  url: file://%s/ingest/amberdata
jobs:
  api_keys: [%q]
  store: file://%s/jobs
`, dir, testKey, dir)))
	if err != nil {
		t.Fatal(err)
	}
	if err := engine.Validate(cfg, nil, false); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func newEnv(t *testing.T, cfg conf.Config, now time.Time, opts export.Options) *env {
	t.Helper()
	clock := fakeclock.New(now)
	opts.Now = clock.Now
	svc, err := export.New(context.Background(), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(svc.Handler(nil))
	t.Cleanup(srv.Close)
	return &env{t: t, cfg: cfg, svc: svc, http: srv, clock: clock}
}

// do sends a request with the test key and decodes a JSON answer into out
// (when not nil); it returns the status and the raw body.
func (e *env) do(method, path string, body any, out any) (int, []byte) {
	e.t.Helper()
	return doKey(e.t, e.http.URL, testKey, method, path, body, out)
}

func doKey(t *testing.T, base, key, method, path string, body any, out any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil && len(raw) > 0 && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, raw)
		}
	}
	return resp.StatusCode, raw
}

// jobView is a job as the API returns it.
type jobView struct {
	export.Job
	LastRun *export.Run `json:"lastRun"`
}

func (e *env) create(body map[string]any) jobView {
	e.t.Helper()
	var v jobView
	if st, raw := e.do("POST", "/jobs", body, &v); st != http.StatusCreated {
		e.t.Fatalf("create: %d %s", st, raw)
	}
	return v
}

func (e *env) get(id string) jobView {
	e.t.Helper()
	var v jobView
	if st, raw := e.do("GET", "/jobs/"+id, nil, &v); st != http.StatusOK {
		e.t.Fatalf("get %s: %d %s", id, st, raw)
	}
	return v
}

func (e *env) tick() int {
	e.t.Helper()
	n, err := e.svc.Scheduler.Tick(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func exportOptions() export.Options { return export.Options{} }
