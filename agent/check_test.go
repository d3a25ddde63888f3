package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		name     string
		yaml     string
		wantCode int
		want     []string // lines that must appear (stderr for errors, stdout for OK)
	}{
		{
			name:     "valid config prints the effective config",
			yaml:     "output:\n  url: s3://billing/ingest/amberdata\n",
			wantCode: exitOK,
			want:     []string{"url: s3://billing/ingest/amberdata", "key_format: '%m-%d-%Y/$UUID.gz'", "segment_size: 8MiB"},
		},
		{
			name: "every bad key is named at once",
			yaml: `output:
  url: ftp://x/y
  compression: zstd
  key_format: "%Q/$UUID"
buffer:
  sync: sometimes
  segment_size: 1KiB
records:
  format: csv
metering:
  mode: meter_usage
log:
  level: loud
`,
			wantCode: exitConfig,
			want: []string{
				`output.url (line 2): scheme "ftp" not supported; use s3:// or file://`,
				`output.compression (line 3): "zstd" not supported; use gzip, none`,
				`output.key_format (line 4): "%Q/$UUID": unsupported strftime specifier %Q`,
				`buffer.sync (line 6): "sometimes" not supported; use always, interval, never`,
				`buffer.segment_size (line 7): 1KiB must be between 64KiB and 1GiB`,
				`records.format (line 9): "csv" not supported; use meter, json`,
				// Absent keys have no line.
				`metering.product_code: required when metering.mode is meter_usage`,
				`metering.dimensions: map at least one meterApiName to a Marketplace dimension`,
				`log.level (line 13): "loud" not supported; use debug, info, warn, error`,
			},
		},
		{
			name:     "unknown key",
			yaml:     "outptu:\n  url: s3://b/p\n",
			wantCode: exitConfig,
			want:     []string{"outptu (line 1): unknown key; use one of agent, sources, records, buffer, output, metering, jobs, server, log"},
		},
		{
			name:     "bad size",
			yaml:     "buffer:\n  max_size: plenty\n",
			wantCode: exitConfig,
			want:     []string{`buffer.max_size (line 2): "plenty" is not a size; use e.g. 8MiB, 1GiB, 1048576`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "m.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			code := runMain([]string{"check", "-c", path}, nil, &stdout, &stderr)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, stdout.String(), stderr.String())
			}
			out := stdout.String() + stderr.String()
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// TestCheckListsEveryKindOfProblem: an unknown key, a value that does not
// parse and a rule violation (in another package's rules) are all named
// in one pass, each with its key and line, and check exits 2. Before, the
// unknown key stopped the load and hid the other two.
func TestCheckListsEveryKindOfProblem(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.yaml")
	yaml := `output:
  url: ftp://billing/x
buffer:
  segmnt_size: 8MiB
  max_size: lots
`
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := runMain([]string{"check", "-c", path}, nil, &stdout, &stderr); code != exitConfig {
		t.Fatalf("exit %d, want %d\n%s", code, exitConfig, stderr.String())
	}
	want := "metership: " + path + ": 3 error(s):\n" +
		`  buffer.max_size (line 5): "lots" is not a size; use e.g. 8MiB, 1GiB, 1048576` + "\n" +
		"  buffer.segmnt_size (line 4): unknown key; use one of dir, max_size, segment_size, flush_interval, sync, sync_interval\n" +
		`  output.url (line 2): scheme "ftp" not supported; use s3:// or file://` + "\n"
	if stderr.String() != want {
		t.Fatalf("stderr:\n%s\nwant:\n%s", stderr.String(), want)
	}
	if stdout.Len() != 0 {
		t.Fatalf("an invalid configuration was printed:\n%s", stdout.String())
	}
}

func TestVersionAndUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := runMain([]string{"version"}, nil, &stdout, &stderr); code != 0 || !strings.HasPrefix(stdout.String(), "metership ") || !strings.Contains(stdout.String(), "go1.") {
		t.Fatalf("version: %d %q", code, stdout.String())
	}
	stdout.Reset()
	if code := runMain([]string{"frobnicate"}, nil, &stdout, &stderr); code != exitConfig || !strings.Contains(stderr.String(), `unknown command "frobnicate"`) {
		t.Fatalf("unknown command: %d %q", code, stderr.String())
	}
}
