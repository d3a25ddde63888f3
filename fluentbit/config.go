package fluentbit

import (
	"errors"
	"fmt"
	"strings"

	"github.com/metership/metership/conf"
	"github.com/metership/metership/engine"
)

// ErrConfig is wrapped by NewInstance errors caused by the properties: an
// unreadable config_file, a value that does not parse, or a setting that
// fails validation.
var ErrConfig = errors.New("fluentbit: invalid configuration")

// Problem is one configuration error, named the way the user wrote it.
type Problem struct {
	// Property is the Fluent Bit property at fault (e.g. output_url), or ""
	// for a key only a config_file can set (e.g. sources[0].paths) or one
	// the config_file set wrongly (Line says where).
	Property string
	// Key is the YAML key (e.g. output.url); "" for an unreadable
	// config_file.
	Key string
	// Line is the line of Key in the config_file, 0 if not from it.
	Line int
	// Msg says what is wrong.
	Msg string
}

// String renders the problem as "property: message", or as the YAML key
// (with its line in the config_file) when no property sets it.
func (p Problem) String() string {
	if p.Property != "" {
		return p.Property + ": " + p.Msg
	}
	if p.Line > 0 {
		return fmt.Sprintf("%s: %s (line %d): %s", conf.PropertyConfigFile, p.Key, p.Line, p.Msg)
	}
	return p.Key + ": " + p.Msg
}

// LoadConfig builds and validates the configuration of one output from its
// properties (get returns "" for a property that is not set) with
// engine.Validate, exactly like the agent validates its YAML. On failure
// it returns every problem, each naming its property, and an error
// wrapping ErrConfig.
func LoadConfig(get func(name string) string) (conf.Config, []Problem, error) {
	cfg, err := conf.FromProperties(get)
	var keyErrs conf.Errors
	if err != nil && !errors.As(err, &keyErrs) {
		problems := []Problem{{Property: conf.PropertyConfigFile, Msg: strings.TrimPrefix(err.Error(), conf.PropertyConfigFile+": ")}}
		return conf.Config{}, problems, fmt.Errorf("%w: %s", ErrConfig, joinProblems(problems))
	}
	if err := engine.Validate(cfg, err, false); err != nil {
		var problems []Problem
		var fes conf.Errors
		if errors.As(err, &fes) {
			for _, fe := range fes {
				p := Problem{Property: fe.Property, Key: fe.Key, Line: fe.Line, Msg: fe.Msg}
				if p.Property == "" && p.Line == 0 {
					p.Property = PropertyOf(fe.Key)
				}
				problems = append(problems, p)
			}
		} else {
			problems = []Problem{{Msg: err.Error()}}
		}
		return conf.Config{}, problems, fmt.Errorf("%w: %s", ErrConfig, joinProblems(problems))
	}
	return cfg, nil, nil
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
