package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/metership/metership/internal/testutil/childproc"
	"github.com/metership/metership/internal/testutil/s3server"
)

// binPath is the metership binary built once for the package's tests, so
// end-to-end and crash tests run the real CLI as a separate process.
var binPath string

func TestMain(m *testing.M) {
	var dir string
	var err error
	if binPath, dir, err = childproc.BuildAgent("."); err != nil {
		fmt.Fprintln(os.Stderr, "building metership:", err)
		os.Exit(1)
	}
	code := m.Run()
	if code == 0 {
		// The in-process commands (check, version) and the tests' own
		// servers must not leave goroutines behind.
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// s3Config renders a config that ships to the test server.
func s3Config(t *testing.T, srv *s3server.Server, endpoint, bufferDir, extra string) string {
	t.Helper()
	if endpoint == "" {
		endpoint = srv.Endpoint()
	}
	y := fmt.Sprintf(`agent:
  id: test-agent
buffer:
  dir: %s
  segment_size: 64KiB
  max_size: 64MiB
  flush_interval: 200ms
output:
  url: s3://%s/ingest/amberdata
  endpoint: %s
  force_path_style: true
  region: us-east-1
server:
  listen: "127.0.0.1:0"
log:
  level: warn
%s`, bufferDir, srv.Bucket(), endpoint, extra)
	path := filepath.Join(t.TempDir(), "metership.yaml")
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// agentCmd prepares the binary with the test server's credentials.
func agentCmd(srv *s3server.Server, args ...string) *exec.Cmd {
	cmd := exec.Command(binPath, args...)
	cmd.Env = append(os.Environ(),
		"AWS_ACCESS_KEY_ID="+srv.AccessKey(),
		"AWS_SECRET_ACCESS_KEY="+srv.SecretKey(),
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null",
	)
	return cmd
}

func runAgent(t *testing.T, srv *s3server.Server, stdin io.Reader, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := agentCmd(srv, args...)
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &out, &errb
	err := cmd.Run()
	code = 0
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// shipped is what the bucket holds, decoded.
type shipped struct {
	records     map[string][]map[string]any // object key -> records
	deadLetters map[string][]map[string]any
	rawLines    map[string][]string
}

var amberKey = regexp.MustCompile(`^ingest/amberdata/(\d\d-\d\d-\d\d\d\d)/[0-9a-f-]{36}\.gz$`)
var deadKey = regexp.MustCompile(`^failed-requests/(\d\d-\d\d-\d\d\d\d)/[0-9a-f-]{36}\.gz$`)

// readBucket downloads and decodes every object, failing on anything that
// is not valid gzip NDJSON under an expected key.
func readBucket(t *testing.T, srv *s3server.Server) shipped {
	t.Helper()
	s := shipped{records: map[string][]map[string]any{}, deadLetters: map[string][]map[string]any{}, rawLines: map[string][]string{}}
	for _, o := range srv.ListObjects(t) {
		body := srv.GetObject(t, o.Key)
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("%s: not gzip: %v", o.Key, err)
		}
		raw, err := io.ReadAll(zr)
		if err != nil {
			t.Fatalf("%s: corrupt gzip: %v", o.Key, err)
		}
		if len(raw) == 0 || raw[len(raw)-1] != '\n' {
			t.Fatalf("%s: NDJSON must end with a newline", o.Key)
		}
		var into map[string][]map[string]any
		switch {
		case amberKey.MatchString(o.Key):
			into = s.records
		case deadKey.MatchString(o.Key):
			into = s.deadLetters
		default:
			t.Fatalf("unexpected object key %q", o.Key)
		}
		sc := bufio.NewScanner(bytes.NewReader(raw))
		sc.Buffer(make([]byte, 4<<20), 4<<20)
		for sc.Scan() {
			var v map[string]any
			dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
			dec.UseNumber()
			if err := dec.Decode(&v); err != nil {
				t.Fatalf("%s: invalid JSON line %q: %v", o.Key, sc.Text(), err)
			}
			into[o.Key] = append(into[o.Key], v)
			s.rawLines[o.Key] = append(s.rawLines[o.Key], sc.Text())
		}
	}
	return s
}

// checkRecordObjects asserts the Amberflo contract for every record object
// and returns the records by uniqueId, failing on any duplicate.
func checkRecordObjects(t *testing.T, s shipped) map[string]map[string]any {
	t.Helper()
	byID := map[string]map[string]any{}
	allowed := map[string]bool{"customerId": true, "meterApiName": true, "meterValue": true, "meterTimeInMillis": true, "dimensions": true, "uniqueId": true}
	for key, recs := range s.records {
		date := amberKey.FindStringSubmatch(key)[1]
		for _, r := range recs {
			for f := range r {
				if !allowed[f] {
					t.Fatalf("%s: unexpected field %q in %v", key, f, r)
				}
			}
			ms, err := r["meterTimeInMillis"].(json.Number).Int64()
			if err != nil {
				t.Fatalf("%s: meterTimeInMillis not an integer: %v", key, r)
			}
			if got := time.UnixMilli(ms).UTC().Format("01-02-2006"); got != date {
				t.Fatalf("record of %s in object dated %s (%s)", got, date, key)
			}
			id, _ := r["uniqueId"].(string)
			if id == "" {
				t.Fatalf("%s: record without uniqueId: %v", key, r)
			}
			if _, dup := byID[id]; dup {
				t.Fatalf("uniqueId %s shipped twice", id)
			}
			byID[id] = r
		}
	}
	return byID
}

func mustContain(t *testing.T, s, sub string) {
	t.Helper()
	if !strings.Contains(s, sub) {
		t.Fatalf("output does not contain %q:\n%s", sub, s)
	}
}
