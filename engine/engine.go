// Package engine assembles a running metership: the pipeline (buffer,
// encoder, uploaders) plus, when metering is on, the hourly ledger and its
// Marketplace reporter. The agent and the Fluent Bit plugin both start one
// Engine; they differ only in where lines come from.
package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"

	mm "github.com/aws/aws-sdk-go-v2/service/marketplacemetering"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/metership/metership/buffer"
	"github.com/metership/metership/conf"
	"github.com/metership/metership/metering"
	"github.com/metership/metership/pipeline"
)

// Engine is a started pipeline (plus metering) with its background
// goroutines.
type Engine struct {
	cfg    conf.Config
	log    *zap.Logger
	pipe   *pipeline.Pipeline
	meter  *meterRuntime
	final  FinalReport
	cancel context.CancelFunc
	wg     sync.WaitGroup
	runErr error
	settle bool
}

// Options are the non-config inputs of Start.
type Options struct {
	Logger     *zap.Logger
	Registerer prometheus.Registerer
	// SettleShared: Finish waits (bounded by its ctx) until the hours this
	// replica closed are claimed and its partials merged or carried
	// (metering.state_url; `ship`).
	SettleShared bool
	// FinalReport says which metering hours Finish reports.
	FinalReport FinalReport
	// CatchUpSources is how many sources will call SourceCaughtUp once
	// they have read what their files held at the start; until then (at
	// most metering.catch_up_timeout) no metering hour closes.
	CatchUpSources int
	// BufferFaults is buffer.Options.Faults (tests only).
	BufferFaults func(buffer.FileOp, string) error
}

// FinalReport values: which metering hours Finish reports.
type FinalReport int

const (
	// FinalOnStop follows metering.report_on_stop: every hour held, the
	// one in progress included, when it is on (a stopping agent or plugin
	// instance); closed hours only when it is off.
	FinalOnStop FinalReport = iota
	// FinalClosed reports closed hours only (ship without --final).
	FinalClosed
	// FinalAll reports every hour held, the one in progress included
	// (ship --final).
	FinalAll
)

// Start opens the buffer (recovering what a previous run left), starts
// shipping and, when metering.mode is not off, counting and reporting.
func Start(ctx context.Context, cfg conf.Config, opts Options) (*Engine, error) {
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	e := &Engine{cfg: cfg, log: log, settle: opts.SettleShared, final: opts.FinalReport}
	metered := cfg.Metering.Mode.On()
	// Loading the AWS configuration for metering (environment, shared
	// files, CA bundle) takes milliseconds: overlap it with building the
	// uploaders and opening the buffer.
	var client chan meteringClient
	if metered {
		client = make(chan meteringClient, 1)
		go func() {
			c, err := metering.NewClient(ctx, cfg.Metering)
			client <- meteringClient{c, err}
		}()
	}
	buf, up, err := openParts(ctx, cfg, opts)
	if metered {
		c := <-client
		if err == nil && c.err != nil {
			_ = buf.Close()
			err = c.err
		}
		if err == nil {
			if e.meter, err = newMeterRuntime(cfg, buf, c.client, log, opts.Registerer, opts.CatchUpSources); err != nil {
				_ = buf.Close()
			}
		}
	}
	if err != nil {
		return nil, err
	}
	popts := pipeline.Options{Logger: log, Registerer: opts.Registerer, UnhealthyAfter: cfg.Server.UnreadyAfter.D()}
	if e.meter != nil {
		popts.Counter = meterCounter{e.meter.meter}
	}
	if e.pipe, err = pipeline.New(cfg, buf, up, popts); err != nil {
		_ = buf.Close()
		if e.meter != nil {
			e.meter.shared.close()
		}
		return nil, err
	}
	// Shipping runs on its own context: a shutdown stops the inputs first,
	// then Finish drains with a deadline, then cancels this.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	e.cancel = cancel
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.runErr = e.pipe.Run(runCtx)
	}()
	if e.meter != nil {
		e.meter.start(runCtx, &e.wg, e.settle)
	}
	return e, nil
}

// openParts builds the uploaders and opens the buffer (in that order, as
// the pipeline did: a bad destination leaves the buffer unopened).
func openParts(ctx context.Context, cfg conf.Config, opts Options) (*buffer.Buffer, pipeline.Uploaders, error) {
	up, err := buildUploaders(ctx, cfg)
	if err != nil {
		return nil, up, err
	}
	buf, err := openBuffer(cfg, nil, opts.BufferFaults)
	return buf, up, err
}

// SourceCaughtUp tells metering that one of Options.CatchUpSources has
// read its start-up backlog. Each source calls it once.
func (e *Engine) SourceCaughtUp() {
	if e.meter != nil {
		e.meter.meter.SourceCaughtUp()
	}
}

// meteringClient is what the goroutine loading the metering client found.
type meteringClient struct {
	client *mm.Client
	err    error
}

// Pipeline is the engine's pipeline (ingesters, buffer, stats).
func (e *Engine) Pipeline() *pipeline.Pipeline { return e.pipe }

// Finish drains (when drain is true: seal, upload everything, bounded by
// ctx), reports metering hours (Options.FinalReport: with
// metering.report_on_stop, every hour held, the one in progress
// included), stops shipping and closes the buffer. Every wait honours
// ctx: anything left stays on disk for the next start, and what metering
// still holds is logged.
func (e *Engine) Finish(ctx context.Context, drain bool) error {
	var errs []error
	if e.meter != nil {
		// The reporting loop may be retrying throttled calls: stop it
		// first, so the final pass does not wait for it.
		e.meter.stop()
	}
	if drain {
		if err := e.pipe.Drain(ctx); err != nil {
			errs = append(errs, fmt.Errorf("shipping: %w", err))
		}
		if e.meter != nil {
			if err := e.meter.report(ctx, e.final); err != nil {
				errs = append(errs, fmt.Errorf("metering: %w", err))
			} else if err := e.meter.shared.finish(ctx, e.settle); err != nil {
				errs = append(errs, fmt.Errorf("metering: %w", err))
			}
		}
	}
	if e.meter != nil {
		e.meter.meter.LogHeld(len(errs) > 0)
	}
	e.cancel()
	e.wg.Wait()
	if e.runErr != nil {
		errs = append(errs, e.runErr)
	}
	if err := e.pipe.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing buffer: %w", err))
	}
	if e.meter != nil {
		e.meter.shared.close()
	}
	return errors.Join(errs...)
}

// MeteringSummary returns the metering summary lines, or nil when off.
func (e *Engine) MeteringSummary() []string {
	if e.meter == nil {
		return nil
	}
	return e.meter.summary()
}
