// Command metership ships usage meter records from applications to S3 (the
// Amberflo ingestion layout by default) and reports hourly usage to AWS
// Marketplace. This package only adapts flags and signals onto the core
// packages.
package main

import (
	"fmt"
	"io"
	"os"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitConfig  = 2
)

const usage = `metership ships usage meter records to S3 and AWS Marketplace.

Usage:
  metership run   [-c FILE]              run the agent (tail sources, ship, report)
  metership ship  [-c FILE] [PATH|-]...  push files or stdin through the pipeline once
  metership check [-c FILE]              validate and print the effective config
  metership emulate-metering [--listen ADDR]  run the local AWS Marketplace Metering emulator
  metership jobs serve [-c FILE]         serve the export Jobs API (jobs.listen, default :9465)
  metership metering status [-c FILE]    replicas' shared metering: partials, claims, answers
  metership version                      print version information

Without -c the embedded defaults are used: output to file://./out/ingest/amberdata,
buffer in ./data.
`

func main() {
	os.Exit(runMain(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func runMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitConfig
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(rest, stdout, stderr)
	case "ship":
		return cmdShip(rest, stdin, stdout, stderr)
	case "check":
		return cmdCheck(rest, stdout, stderr)
	case "emulate-metering":
		return cmdEmulate(rest, stdout, stderr)
	case "jobs":
		return cmdJobs(rest, stdout, stderr)
	case "metering":
		return cmdMetering(rest, stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, versionString())
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "metership: unknown command %q\n\n%s", cmd, usage)
	return exitConfig
}
