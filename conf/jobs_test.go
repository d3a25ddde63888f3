package conf

import "testing"

func TestJobsDefaults(t *testing.T) {
	cfg, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	j := cfg.Jobs
	if j.Listen != ":9465" || j.Store != "file://./jobs" || len(j.APIKeys) != 0 || j.SMTP.Host != "" || j.Tick.D().Seconds() != 10 {
		t.Fatalf("jobs defaults %+v", j)
	}
}
