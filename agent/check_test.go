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
				`output.url: scheme "ftp" not supported; use s3:// or file://`,
				`output.compression: "zstd" not supported`,
				`output.key_format: "%Q/$UUID": unsupported strftime specifier %Q`,
				`buffer.sync: "sometimes" not supported`,
				`buffer.segment_size: 1KiB must be between 64KiB and 1GiB`,
				`records.format: "csv" not supported`,
				`metering.product_code: required when metering.mode is meter_usage`,
				`metering.dimensions: map at least one meterApiName`,
				`log.level: "loud" not supported`,
			},
		},
		{
			name:     "unknown key",
			yaml:     "outptu:\n  url: s3://b/p\n",
			wantCode: exitConfig,
			want:     []string{"field outptu not found"},
		},
		{
			name:     "bad size",
			yaml:     "buffer:\n  max_size: plenty\n",
			wantCode: exitConfig,
			want:     []string{`"plenty" is not a size`},
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
