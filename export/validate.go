package export

import (
	"fmt"
	"net/mail"
	"strings"

	"github.com/metership/metership/conf"
	"github.com/metership/metership/ship"
)

// ValidateConfig checks the jobs section with the Jobs API's rules
// (engine.Validate runs it).
func ValidateConfig(j conf.Jobs) conf.Errors {
	var v conf.Errors
	conf.CheckListen(&v, "jobs.listen", j.Listen, ":9465, 127.0.0.1:9465")
	for i, k := range j.APIKeys {
		if len(k) < 16 {
			// The key is the only thing between the network and every
			// job: refuse guessable ones. The key itself is never echoed.
			v.Add(fmt.Sprintf("jobs.api_keys[%d]", i), "too short (%d characters); use at least 16, e.g. openssl rand -hex 24", len(k))
		}
	}
	if j.Store == "" {
		v.Add("jobs.store", "required (s3://bucket/prefix or file:///dir/prefix)")
	} else if err := ship.CheckURL(j.Store); err != nil {
		v.Add("jobs.store", "%v", err)
	}
	if j.Tick <= 0 {
		v.Add("jobs.tick", "must be positive")
	}
	if s := j.SMTP; s.Host != "" {
		if s.Port < 1 || s.Port > 65535 {
			v.Add("jobs.smtp.port", "%d is not a port in 1..65535", s.Port)
		}
		if s.From == "" {
			v.Add("jobs.smtp.from", "required with jobs.smtp.host (the sender address)")
		} else if _, err := mail.ParseAddress(s.From); err != nil {
			v.Add("jobs.smtp.from", "%q is not an email address", s.From)
		}
		if s.Password != "" && s.Username == "" {
			v.Add("jobs.smtp.username", "required with jobs.smtp.password")
		}
	}
	if e := j.S3.Endpoint; e != "" {
		conf.CheckHTTPURL(&v, "jobs.s3.endpoint", e)
	}
	if j.S3.RoleARN != "" && !strings.HasPrefix(j.S3.RoleARN, "arn:") {
		v.Add("jobs.s3.role_arn", "%q is not an ARN", j.S3.RoleARN)
	}
	return v
}
