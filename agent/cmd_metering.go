package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/metership/metership/engine"
	"github.com/metership/metership/metering/shared"
)

// cmdMetering runs `metership metering SUBCOMMAND`.
func cmdMetering(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "status" {
		fmt.Fprintln(stderr, "usage: metership metering status [-c FILE] [--hours N]")
		return exitConfig
	}
	return cmdMeteringStatus(args[1:], stdout, stderr)
}

// cmdMeteringStatus prints, per recent hour, the replicas' partials, the
// claim, the reported totals, AWS's answers, carried and unbilled usage
// (metering.state_url), then this replica's own journal.
func cmdMeteringStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("metering status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	hours := fs.Int("hours", 12, "how many recent hours to show")
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	cfg, ok := loadConfig(*path, false, stderr)
	if !ok {
		return exitConfig
	}
	if cfg.Metering.StateURL == "" {
		fmt.Fprintln(stderr, "metership: metering.state_url is not set: this agent reports alone (its ledger is in buffer.dir/metering)")
		return exitConfig
	}
	if *hours < 1 {
		fmt.Fprintln(stderr, "metership: --hours must be at least 1")
		return exitConfig
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store, err := shared.Open(ctx, cfg.Metering.StateURL, engine.SharedS3Options(cfg))
	if err != nil {
		fmt.Fprintf(stderr, "metership: %v\n", err)
		return exitFailure
	}
	defer store.Close() //nolint:errcheck // only read from: a close error changes nothing printed
	now := time.Now().UTC().Truncate(time.Hour)
	st, err := shared.ReadStatus(ctx, store, cfg.Metering.ProductCode, now.Add(-time.Duration(*hours)*time.Hour), now.Add(time.Hour))
	if err != nil {
		fmt.Fprintf(stderr, "metership: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "product %s, state %s\n", cfg.Metering.ProductCode, cfg.Metering.StateURL)
	shared.WriteStatus(stdout, st)
	if err := shared.WriteLocalStatus(stdout, filepath.Join(cfg.Buffer.Dir, "metering")); err != nil {
		fmt.Fprintf(stderr, "metership: %v\n", err)
		return exitFailure
	}
	return exitOK
}
