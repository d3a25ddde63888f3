package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/metership/metership/agent/tail"
	"github.com/metership/metership/conf"
	"github.com/metership/metership/engine"
)

// loadConfig reads -c FILE (or the embedded defaults) and validates it
// with engine.Validate, printing every error. ok is false when the command must exit 2.
func loadConfig(path string, needSources bool, stderr io.Writer) (conf.Config, bool) {
	var (
		cfg conf.Config
		err error
	)
	if path == "" {
		cfg, err = conf.Parse(nil)
	} else {
		cfg, err = conf.Load(path)
	}
	var keyErrs conf.Errors
	if err != nil && !errors.As(err, &keyErrs) {
		fmt.Fprintf(stderr, "metership: %v\n", err) // unreadable, not YAML, unset ${VAR}
		return cfg, false
	}
	// Key problems are listed together with the rules' in one pass.
	if err := engine.Validate(cfg, err, needSources); err != nil {
		printConfigErrors(stderr, path, err)
		return cfg, false
	}
	return cfg, true
}

func printConfigErrors(w io.Writer, path string, err error) {
	if path == "" {
		path = "(defaults)"
	}
	var errs conf.Errors
	if errors.As(err, &errs) {
		fmt.Fprintf(w, "metership: %s: %d error(s):\n", path, len(errs))
		for _, e := range errs {
			fmt.Fprintf(w, "  %s\n", e.Error())
		}
		return
	}
	fmt.Fprintf(w, "metership: %s: %v\n", path, err)
}

func configFlag(fs *flag.FlagSet) *string {
	p := fs.String("c", os.Getenv("METERSHIP_CONFIG"), "config `FILE` (YAML); default: embedded defaults")
	fs.StringVar(p, "config", *p, "config `FILE` (same as -c)")
	return p
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	cfg, ok := loadConfig(*path, false, stderr)
	if !ok {
		return exitConfig
	}
	fmt.Fprint(stdout, cfg.YAML())
	// Overlapping globs are not an error (a file both match is read once,
	// by the first source), but the second source's tag and settings then
	// do not apply to it: say so.
	for _, o := range tail.Overlaps(tailInputs(cfg.Sources)) {
		fmt.Fprintf(stderr, "metership: warning: %s and %s can match the same file; it is read once, by the first\n", o.First, o.Second)
	}
	fmt.Fprintln(stderr, "metership: configuration OK")
	return exitOK
}
