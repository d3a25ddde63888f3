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
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/metership/metership/agent/tail"
	"github.com/metership/metership/conf"
	"github.com/metership/metership/engine"
	"github.com/metership/metership/pipeline"
	"github.com/metership/metership/record"
)

// cmdRun is the long-running agent: tail the configured sources into the
// buffer, ship sealed segments, report metering, serve /healthz, /readyz
// and /metrics. SIGTERM/SIGINT: stop reading, seal, upload, report, exit 0
// within agent.shutdown_timeout (what cannot be uploaded in time stays in
// buffer.dir for the next start).
func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	cfg, ok := loadConfig(*path, true, stderr)
	if !ok {
		return exitConfig
	}
	log := newLogger(cfg.Log, stderr)
	defer func() { _ = log.Sync() }()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	inputCtx, stopInputs := context.WithCancel(context.Background())
	defer stopInputs()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	rt, err := engine.Start(inputCtx, cfg, engine.Options{Logger: log, Registerer: reg})
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		return exitFailure
	}

	srv, err := startHTTP(cfg.Server.Listen, rt.Pipeline(), reg, log)
	if err != nil {
		log.Error("cannot serve HTTP", zap.String("server.listen", cfg.Server.Listen), zap.Error(err))
		_ = rt.Finish(context.Background(), false)
		return exitFailure
	}

	tailMetrics := &tail.Metrics{}
	registerTailMetrics(reg, tailMetrics)
	var inputs sync.WaitGroup
	inputErrs := make(chan error, len(cfg.Sources))
	for i, src := range cfg.Sources {
		t, err := newTailer(cfg, src, rt.Pipeline(), log.With(zap.Int("source", i)), tailMetrics)
		if err != nil {
			log.Error("cannot start source", zap.Int("source", i), zap.Error(err))
			stopInputs()
			_ = rt.Finish(context.Background(), false)
			return exitFailure
		}
		inputs.Add(1)
		go func() {
			defer inputs.Done()
			if err := t.Run(inputCtx); err != nil && !errors.Is(err, context.Canceled) {
				inputErrs <- fmt.Errorf("sources[%d]: %w", i, err)
			}
		}()
	}
	log.Info("metership running", zap.String("version", version), zap.String("agent_id", rt.Pipeline().Buffer().AgentID()),
		zap.String("output", cfg.Output.URL), zap.String("metering", cfg.Metering.Mode), zap.Int("sources", len(cfg.Sources)))

	code := exitOK
wait:
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGHUP {
				// Reloading in place would mean swapping the buffer or the
				// output under in-flight segments; a restart is just as
				// fast and loses nothing, so we ask for one instead.
				log.Warn("SIGHUP: configuration reload is not supported; restart the agent to apply changes (nothing is lost on restart)")
				continue
			}
			log.Info("shutting down", zap.String("signal", s.String()))
			break wait
		case err := <-inputErrs:
			log.Error("source failed; shutting down", zap.Error(err))
			code = exitFailure
			break wait
		}
	}
	// Order: stop reading (every line read is already durable), then
	// drain and report within the shutdown timeout, then stop HTTP.
	stopInputs()
	inputs.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Agent.ShutdownTimeout.D())
	defer cancel()
	if err := rt.Finish(ctx, true); err != nil {
		log.Warn("shutdown incomplete; the rest stays in buffer.dir and ships on the next start", zap.Error(err))
	}
	shutdownHTTP(srv)
	st := rt.Pipeline().Stats()
	log.Info("stopped", zap.Int64("records_accepted", st.RecordsAccepted.Load()), zap.Int64("records_rejected", st.RecordsRejected.Load()),
		zap.Int64("objects_written", st.ObjectsWritten.Load()))
	return code
}

func newTailer(cfg conf.Config, src conf.Source, p *pipeline.Pipeline, log *zap.Logger, m *tail.Metrics) (*tail.Tailer, error) {
	return tail.New(tail.Options{
		Paths:           src.Paths,
		Exclude:         src.Exclude,
		StartAt:         src.StartAt,
		RefreshInterval: src.RefreshInterval.D(),
		RotateWait:      src.RotateWait.D(),
		MaxLineSize:     int(cfg.Records.MaxLineSize),
		Checkpoints:     p.Buffer().Checkpoints(),
		Logger:          log,
		Metrics:         m,
	}, &tailSink{p: p, tag: src.Tag, maxLine: int(cfg.Records.MaxLineSize)})
}

// tailSink turns tailed chunks into durable batches. Consume runs on one
// goroutine per file, so each call borrows its own Ingester.
type tailSink struct {
	p       *pipeline.Pipeline
	tag     string
	maxLine int
	pool    sync.Pool
}

func (s *tailSink) Consume(ctx context.Context, c *tail.Chunk) error {
	in, _ := s.pool.Get().(*pipeline.Ingester)
	if in == nil {
		var err error
		if in, err = s.p.NewIngester(s.tag); err != nil {
			return err
		}
	}
	defer s.pool.Put(in)
	for _, l := range c.Lines {
		switch {
		case l.TooLong:
			in.Reject(l.Data, l.Offset, c.Path, fmt.Sprintf("line exceeds records.max_line_size (%d bytes); only its first bytes are kept here", s.maxLine))
		case len(trimSpace(l.Data)) == 0:
		default:
			in.Add(l.Data, record.Source{ID: c.Source, Offset: l.Offset}, c.Path)
		}
	}
	in.SetCheckpoint(c.Checkpoint.Source, c.Checkpoint.Offset, c.Checkpoint.Meta)
	if err := in.Commit(); err != nil {
		// The tailer re-sends the same chunk after a backoff.
		in.Discard()
		return err
	}
	return nil
}

func registerTailMetrics(reg prometheus.Registerer, m *tail.Metrics) {
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f)
	}
	reg.MustRegister(
		counter("metership_tail_lines_read_total", "Lines read from tailed files and made durable.", func() float64 { return float64(m.LinesRead.Load()) }),
		counter("metership_tail_bytes_read_total", "Bytes of tailed files made durable.", func() float64 { return float64(m.BytesRead.Load()) }),
		counter("metership_tail_lines_too_long_total", "Lines longer than records.max_line_size.", func() float64 { return float64(m.TooLongLines.Load()) }),
		counter("metership_tail_rotations_total", "Rotated files read to their end.", func() float64 { return float64(m.Rotations.Load()) }),
		counter("metership_tail_truncations_total", "Files found truncated (copytruncate) and restarted.", func() float64 { return float64(m.Truncations.Load()) }),
		counter("metership_tail_backpressure_seconds_total", "Time tail readers spent paused because the buffer was full or failing.", m.BackPressureSeconds),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "metership_tail_files", Help: "Files being tailed."}, func() float64 { return float64(m.FilesTailed.Load()) }),
	)
}

func startHTTP(listen string, p *pipeline.Pipeline, reg *prometheus.Registry, log *zap.Logger) (*http.Server, error) {
	if listen == "" || listen == "off" {
		return nil, nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := p.Ready()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, why)
	})
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Info("serving /healthz, /readyz, /metrics", zap.String("addr", ln.Addr().String()))
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("HTTP server stopped", zap.Error(err))
		}
	}()
	return srv, nil
}

func shutdownHTTP(srv *http.Server) {
	if srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
}
