package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/metership/metership/engine"
	"github.com/metership/metership/export"
)

// cmdJobs runs `metership jobs serve`: the export Jobs API on jobs.listen
// and its scheduler, until SIGTERM/SIGINT.
func cmdJobs(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "serve" {
		fmt.Fprintln(stderr, "usage: metership jobs serve [-c FILE]")
		return exitConfig
	}
	fs := flag.NewFlagSet("jobs serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	if err := fs.Parse(args[1:]); err != nil {
		return exitConfig
	}
	cfg, ok := loadConfig(*path, false, stderr)
	if !ok {
		return exitConfig
	}
	if len(cfg.Jobs.APIKeys) == 0 {
		fmt.Fprintln(stderr, "metership: jobs.api_keys: set at least one key; every Jobs API call needs one")
		return exitConfig
	}
	log := engine.NewLogger(cfg.Log, stderr)
	defer func() { _ = log.Sync() }()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	reg := prometheus.NewRegistry()
	reg.MustRegister(buildInfo())
	svc, err := export.New(ctx, cfg, export.Options{Logger: log, Registerer: reg})
	if err != nil {
		fmt.Fprintf(stderr, "metership: %v\n", err)
		return exitFailure
	}
	ln, err := net.Listen("tcp", cfg.Jobs.Listen)
	if err != nil {
		fmt.Fprintf(stderr, "metership: jobs.listen: %v\n", err)
		return exitFailure
	}
	srv := &http.Server{
		Handler:           svc.Handler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})),
		ReadHeaderTimeout: 10 * time.Second,
	}
	log.Info("serving the export Jobs API", zap.String("addr", ln.Addr().String()))
	svc.Scheduler.EnableKick()
	done := make(chan struct{})
	go func() {
		defer close(done)
		svc.Scheduler.Loop(ctx, cfg.Jobs.Tick.D())
	}()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	code := exitOK
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(stderr, "metership: jobs API: %v\n", err)
			code = exitFailure
		}
		stop()
	}
	shutdown, cancel := context.WithTimeout(context.Background(), cfg.Agent.ShutdownTimeout.D())
	defer cancel()
	_ = srv.Shutdown(shutdown)
	<-done
	return code
}
