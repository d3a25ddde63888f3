package fluentbit

import (
	"errors"
	"fmt"
	"strings"

	"github.com/metership/metership/conf"
)

// ErrConfig is wrapped by NewInstance errors caused by the properties: an
// unreadable config_file, a value that does not parse, or a setting that
// fails validation.
var ErrConfig = errors.New("fluentbit: invalid configuration")

// Problem is one configuration error, named the way the user wrote it.
type Problem struct {
	// Property is the Fluent Bit property at fault (e.g. output_url), or ""
	// for a key only a config_file can set (e.g. sources[0].paths).
	Property string
	// Key is the YAML key (e.g. output.url), or "" when the property did
	// not parse.
	Key string
	// Msg says what is wrong.
	Msg string
}

// String renders the problem as "property: message" (the YAML key when no
// property sets it).
func (p Problem) String() string {
	name := p.Property
	if name == "" {
		name = p.Key
	}
	return name + ": " + p.Msg
}

// LoadConfig builds and validates the configuration of one output from its
// properties (get returns "" for a property that is not set), exactly like
// the agent validates its YAML. On failure it returns every problem, each
// naming its property, and an error wrapping ErrConfig.
func LoadConfig(get func(name string) string) (conf.Config, []Problem, error) {
	cfg, err := conf.FromProperties(get)
	if err != nil {
		problems := parseProblems(err)
		return conf.Config{}, problems, fmt.Errorf("%w: %s", ErrConfig, joinProblems(problems))
	}
	if err := cfg.Validate(false); err != nil {
		var problems []Problem
		var fes conf.Errors
		if errors.As(err, &fes) {
			for _, fe := range fes {
				problems = append(problems, Problem{Property: PropertyOf(fe.Key), Key: fe.Key, Msg: fe.Msg})
			}
		} else {
			problems = []Problem{{Msg: err.Error()}}
		}
		return conf.Config{}, problems, fmt.Errorf("%w: %s", ErrConfig, joinProblems(problems))
	}
	return cfg, nil, nil
}

// parseProblems splits the errors of conf.FromProperties, each "name: msg".
func parseProblems(err error) []Problem {
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	problems := make([]Problem, 0, len(errs))
	for _, e := range errs {
		name, msg, ok := strings.Cut(e.Error(), ": ")
		if !ok {
			name, msg = "", e.Error()
		}
		problems = append(problems, Problem{Property: name, Msg: msg})
	}
	return problems
}

func joinProblems(problems []Problem) string {
	parts := make([]string, len(problems))
	for i, p := range problems {
		parts[i] = p.String()
	}
	return strings.Join(parts, "; ")
}

// PropertyOf returns the Fluent Bit property that sets a YAML key: the key
// with its first '.' replaced by '_', without any map entry
// (records.fields.customerId -> records_fields). Keys no property sets
// (sources[0].paths) return "".
func PropertyOf(key string) string {
	sec, rest, ok := strings.Cut(key, ".")
	if !ok || strings.ContainsAny(sec, "[]") {
		return ""
	}
	field, _, _ := strings.Cut(rest, ".")
	return sec + "_" + field
}
