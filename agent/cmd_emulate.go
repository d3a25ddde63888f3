package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/metership/metership/conf"
	"github.com/metership/metership/engine"
	"github.com/metership/metership/metering/emulator"
)

// cmdEmulate runs the AWS Marketplace Metering emulator for users' own
// tests and demos.
func cmdEmulate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("emulate-metering", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8787", "`ADDR` to listen on")
	cfgPath := fs.String("config", "", "emulator config `FILE` (YAML: region, products, entitled_customers, windows); default: product metership-demo")
	level := fs.String("log-level", "info", "debug logs every request")
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	cfg := emulator.DefaultConfig()
	if *cfgPath != "" {
		var err error
		if cfg, err = emulator.LoadConfig(*cfgPath); err != nil {
			fmt.Fprintf(stderr, "metership: %v\n", err)
			return exitConfig
		}
	}
	log := engine.NewLogger(conf.Log{Level: *level, Format: "console"}, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(stdout, "AWS Marketplace Metering emulator on http://%s (state: GET /_state)\n", *listen)
	if err := emulator.Serve(ctx, *listen, cfg, log); err != nil {
		fmt.Fprintf(stderr, "metership: %v\n", err)
		return exitFailure
	}
	return exitOK
}
