package export_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/metership/metership/conf"
	"github.com/metership/metership/engine"
)

// TestValidateJobs: each bad jobs key is named by the one validation path.
func TestValidateJobs(t *testing.T) {
	for _, c := range []struct{ yaml, key string }{
		{"jobs: {listen: nowhere}", "jobs.listen"},
		{"jobs: {listen: ':99999'}", "jobs.listen"},
		{"jobs: {api_keys: [short]}", "jobs.api_keys[0]"},
		{"jobs: {store: gs://bucket}", "jobs.store"},
		{"jobs: {store: ''}", "jobs.store"},
		{"jobs: {tick: 0s}", "jobs.tick"},
		{"jobs: {smtp: {host: mail.example.com}}", "jobs.smtp.from"},
		{"jobs: {smtp: {host: mail.example.com, from: 'not an address'}}", "jobs.smtp.from"},
		{"jobs: {smtp: {host: mail.example.com, from: a@example.com, port: 0}}", "jobs.smtp.port"},
		{"jobs: {smtp: {host: mail.example.com, from: a@example.com, password: p}}", "jobs.smtp.username"},
		{"jobs: {s3: {endpoint: 'ftp://x'}}", "jobs.s3.endpoint"},
		{"jobs: {s3: {role_arn: role}}", "jobs.s3.role_arn"},
	} {
		cfg, err := conf.Parse([]byte(c.yaml))
		err = engine.Validate(cfg, err, false)
		var errs conf.Errors
		if !errors.As(err, &errs) || len(errs) != 1 || errs[0].Key != c.key {
			t.Errorf("%s: %v, want one error on %s", c.yaml, err, c.key)
		}
	}
	if _, err := conf.Parse([]byte("jobs: {api_key: [x]}")); err == nil {
		t.Error("unknown jobs key accepted")
	}
	good := "jobs: {api_keys: ['0123456789abcdef0'], store: 's3://bucket/jobs', smtp: {host: h, from: a@example.com, username: u, password: p}, s3: {endpoint: 'http://127.0.0.1:9000', force_path_style: true}}"
	cfg, err := conf.Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if err := engine.Validate(cfg, nil, false); err != nil {
		t.Fatal(err)
	}
	// Secrets never reach the printed configuration.
	out := cfg.YAML()
	if strings.Contains(out, "0123456789abcdef0") || strings.Contains(out, "password: p\n") || !strings.Contains(out, "<redacted>") {
		t.Fatalf("secrets printed:\n%s", out)
	}
}
