package engine

import (
	"strings"

	"github.com/metership/metership/conf"
	"github.com/metership/metership/export"
	"github.com/metership/metership/metering"
	"github.com/metership/metership/metering/shared"
	"github.com/metership/metership/record"
	"github.com/metership/metership/ship"
)

// Validate is the one validation entry point: `metership check`, the
// start-up of run, ship and jobs serve, and the Fluent Bit plugin all call
// it. loadErr is what conf.Parse, conf.Load or conf.FromProperties
// returned with cfg: its key problems (a conf.Errors: unknown keys,
// values that do not parse) are reported together with those of the
// rules, so one pass lists every problem; any other load error (YAML
// syntax, an unset ${VAR}) is returned as it is.
//
// The rules live with the packages that use the settings: conf's own
// (ranges, enums, addresses), ship's (output URLs, key formats), record's
// (records.fields), metering's and metering/shared's, export's (jobs).
// The result is nil or a conf.Errors, sorted by key, each with its line
// in the file when it came from one. needSources is true for `metership
// run`, which has nothing to do without inputs.
func Validate(cfg conf.Config, loadErr error, needSources bool) error {
	return cfg.Report(loadErr,
		cfg.Check(needSources),
		outputRules(cfg.Output),
		recordRules(cfg.Records),
		metering.ValidateConfig(cfg.Metering),
		shared.ValidateConfig(cfg.Metering),
		export.ValidateConfig(cfg.Jobs),
	)
}

// outputRules checks the destinations and key formats with ship's own
// parsers (conf has required them).
func outputRules(o conf.Output) conf.Errors {
	var v conf.Errors
	for _, u := range []struct{ key, url string }{
		{"output.url", o.URL},
		{"output.dead_letter_url", o.DeadLetterURL},
	} {
		if u.url == "" {
			continue
		}
		if err := ship.CheckURL(u.url); err != nil {
			v.Add(u.key, "%v", err)
		}
	}
	for _, kf := range []struct{ key, format string }{
		{"output.key_format", o.KeyFormat},
		{"output.dead_letter_key_format", o.DeadLetterKeyFormat},
	} {
		if kf.format == "" {
			continue
		}
		if err := ship.CheckKeyFormat(kf.format); err != nil {
			v.Add(kf.key, "%v", err)
		}
	}
	return v
}

// recordRules checks records.fields with the mapping record compiles.
func recordRules(r conf.Records) conf.Errors {
	var v conf.Errors
	if r.Format != "json" {
		return nil
	}
	if err := record.CompileFields(r.Fields); err != nil {
		// One "records.fields.<name>: message" line per problem.
		for _, line := range strings.Split(err.Error(), "\n") {
			key, msg, _ := strings.Cut(line, ": ")
			v.Add(key, "%s", msg)
		}
	}
	return v
}
