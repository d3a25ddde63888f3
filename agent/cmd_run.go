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
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/metership/metership/agent/tail"
	"github.com/metership/metership/buffer"
	"github.com/metership/metership/conf"
	"github.com/metership/metership/engine"
	"github.com/metership/metership/internal/ctxtime"
	"github.com/metership/metership/pipeline"
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
	log := engine.NewLogger(cfg.Log, stderr)
	defer func() { _ = log.Sync() }()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	inputCtx, stopInputs := context.WithCancel(context.Background())
	defer stopInputs()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfo())
	// Metering keeps hours open until every source has read what its
	// files held at the start (metering.catch_up_timeout at most).
	rt, err := engine.Start(inputCtx, cfg, withTestFaults(engine.Options{Logger: log, Registerer: reg, CatchUpSources: min(len(cfg.Sources), 1)})) // one tailer reads every source
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
	forgotten := registerTailMetrics(reg, tailMetrics)
	var inputs sync.WaitGroup
	inputErrs := make(chan error, len(cfg.Sources))
	// One tailer follows every source, so a file matched by several
	// sources' globs is read once (by the first source that matched it).
	var tailers []*tail.Tailer
	if len(cfg.Sources) > 0 {
		t, err := newTailer(cfg, rt.Pipeline(), rt.Pipeline().Buffer().Checkpoints(), log, tailMetrics, rt.SourceCaughtUp)
		if err != nil {
			log.Error("cannot start sources", zap.Error(err))
			stopInputs()
			shutdownHTTP(srv)
			_ = rt.Finish(context.Background(), false)
			return exitFailure
		}
		tailers = append(tailers, t)
		for _, o := range tail.Overlaps(tailInputs(cfg.Sources)) {
			log.Warn("globs overlap; a file both match is read once, by the first", zap.String("first", o.First), zap.String("second", o.Second))
		}
	}
	reg.MustRegister(newFileCollector(tailers))
	for _, t := range tailers {
		inputs.Add(1)
		go func() {
			defer inputs.Done()
			if err := t.Run(inputCtx); err != nil && !errors.Is(err, context.Canceled) {
				inputErrs <- fmt.Errorf("sources: %w", err)
			}
		}()
	}
	inputs.Add(1)
	go func() {
		defer inputs.Done()
		gc := checkpointGC{p: rt.Pipeline(), tailers: tailers, grace: checkpointGrace(cfg.Sources), log: log, forgotten: forgotten}
		if err := gc.run(inputCtx); err != nil && !errors.Is(err, context.Canceled) {
			log.Warn("forgetting stale tail checkpoints failed; they are kept and tried again at the next start", zap.Error(err))
		}
	}()
	// Start-up garbage (the AWS SDK's configuration and CA bundle, the
	// config file, the buffer's recovery) would otherwise stay resident
	// until the scavenger returns it, minutes later; a sidecar spends most
	// of its life idle, so hand it back once, now.
	debug.FreeOSMemory()
	log.Info("metership running", zap.String("version", version), zap.String("agent_id", rt.Pipeline().Buffer().AgentID()),
		zap.String("output", cfg.Output.URL), zap.String("metering", string(cfg.Metering.Mode)), zap.Int("sources", len(cfg.Sources)))

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
		case <-rt.Pipeline().Buffer().Failed():
			// A disk error the buffer could not recover from in place:
			// exit non-zero so the supervisor restarts the agent, whose
			// recovery at start keeps every acknowledged record.
			_, why := rt.Pipeline().Healthy()
			log.Error("buffer failed; exiting to be restarted", zap.String("reason", why))
			code = exitFailure
			break wait
		}
	}
	// Order: stop reading (every line read is already durable), then
	// drain and report (with metering.report_on_stop, the hour in
	// progress too) within the shutdown timeout, then stop HTTP. Every
	// wait honours the timeout: what is left stays in buffer.dir and the
	// ledger, and is logged, for the next start.
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

// tailInputs are the config's sources as tail inputs.
func tailInputs(sources []conf.Input) []tail.Input {
	inputs := make([]tail.Input, len(sources))
	for i, src := range sources {
		inputs[i] = tail.Input{
			Name:       fmt.Sprintf("sources[%d]", i),
			Paths:      src.Paths,
			Exclude:    src.Exclude,
			StartAt:    src.StartAt,
			RotateWait: src.RotateWait.D(),
		}
	}
	return inputs
}

func newTailer(cfg conf.Config, p *pipeline.Pipeline, restored []buffer.Checkpoint, log *zap.Logger, m *tail.Metrics, caughtUp func()) (*tail.Tailer, error) {
	tags := make([]string, len(cfg.Sources))
	refresh := cfg.Sources[0].RefreshInterval.D()
	for i, src := range cfg.Sources {
		tags[i] = src.Tag
		refresh = min(refresh, src.RefreshInterval.D())
	}
	sink, err := tail.NewPipelineSink(p, tags, m)
	if err != nil {
		return nil, err
	}
	// A chunk is one commit: keep it within the Ingester's batch limit so
	// a commit fits in the buffer (and a segment) whatever the sizes are.
	chunkBytes := p.BatchLimit(tail.DefaultMaxChunkBytes)
	// inotify wakes readers at once; polling is only the safety net (and
	// the mechanism on filesystems without inotify), where a second of
	// latency is nothing next to buffer.flush_interval, and an idle
	// sidecar then checks each file once a second instead of four times.
	const pollInterval = time.Second
	return tail.New(tail.Options{
		Inputs:          tailInputs(cfg.Sources),
		RefreshInterval: refresh,
		MaxLineSize:     int(cfg.Records.MaxLineSize),
		MaxChunkBytes:   chunkBytes,
		// Lines are ~100-200 bytes: let the byte limit end a chunk, so a
		// file read fast costs one commit (fsync) per MiB.
		MaxChunkLines: 16 << 10,
		PollInterval:  pollInterval,
		Checkpoints:   restored,
		Logger:        log,
		Metrics:       m,
		OnCaughtUp:    caughtUp,
	}, sink)
}

// checkpointGrace is how long a restored tail checkpoint may stay
// unclaimed before it is forgotten: time for the first scans to find
// every file, and for files rotated while the agent was down to be found
// and read (a rotated file is followed for rotate_wait after its last
// growth).
func checkpointGrace(sources []conf.Input) time.Duration {
	var grace time.Duration
	for _, s := range sources {
		grace = max(grace, 2*s.RotateWait.D()+s.RefreshInterval.D())
	}
	return grace
}

// checkpointGC forgets restored tail checkpoints that no file claims:
// files deleted, or rotated out of reach, while the agent was down. The
// tailers never drop them themselves (Tailer.Unclaimed), so without this
// the buffer's checkpoint map would grow with every such file forever.
type checkpointGC struct {
	p         *pipeline.Pipeline
	tailers   []*tail.Tailer
	grace     time.Duration
	log       *zap.Logger
	forgotten prometheus.Counter
}

// run waits out the grace period, then commits one batch that forgets every
// tail checkpoint that all tailers leave unclaimed (each tailer is given
// every checkpoint, so one unclaimed by a single tailer may belong to
// another source). A file that shows up later in this run still resumes
// from its checkpoint (the tailer keeps what it was given) and checkpoints
// it again with its next lines; one that shows up only after a restart is
// read as a new file, its records keeping their uniqueIds when its
// fingerprint is unchanged, so downstream dedup still works.
func (gc *checkpointGC) run(ctx context.Context) error {
	if len(gc.tailers) == 0 {
		return nil
	}
	if !ctxtime.Sleep(ctx, gc.grace) {
		return ctx.Err()
	}
	stale := gc.unclaimedByAll()
	if len(stale) == 0 {
		return nil
	}
	in, err := gc.p.NewIngester("")
	if err != nil {
		return err
	}
	for _, cp := range stale {
		in.SetCheckpoint(cp.Key, -1, nil)
	}
	if err := in.CommitWait(ctx); err != nil {
		return fmt.Errorf("forget %d checkpoint(s): %w", len(stale), err)
	}
	gc.forgotten.Add(float64(len(stale)))
	for _, cp := range stale {
		path := ""
		if id, err := tail.DecodeMeta(cp.Meta); err == nil {
			path = id.Path
		}
		gc.log.Info("forgot the checkpoint of a file that is gone", zap.String("source", cp.Key), zap.String("path", path), zap.Int64("offset", cp.Offset))
	}
	return nil
}

func (gc *checkpointGC) unclaimedByAll() []buffer.Checkpoint {
	count := map[string]int{}
	var first []buffer.Checkpoint
	for i, t := range gc.tailers {
		u := t.Unclaimed()
		if i == 0 {
			first = u
		}
		for _, cp := range u {
			count[cp.Key]++
		}
	}
	var out []buffer.Checkpoint
	for _, cp := range first {
		if count[cp.Key] == len(gc.tailers) {
			out = append(out, cp)
		}
	}
	return out
}

// registerTailMetrics exports the tailers' shared counters and returns the
// counter of checkpoints forgotten by checkpointGC.
func registerTailMetrics(reg prometheus.Registerer, m *tail.Metrics) prometheus.Counter {
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f)
	}
	forgotten := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "metership_tail_checkpoints_forgotten_total",
		Help: "Restored tail checkpoints forgotten because no file matched them after the grace period.",
	})
	reg.MustRegister(
		counter("metership_tail_lines_read_total", "Lines read from tailed files and made durable.", func() float64 { return float64(m.LinesRead.Load()) }),
		counter("metership_tail_bytes_read_total", "Bytes of tailed files made durable.", func() float64 { return float64(m.BytesRead.Load()) }),
		counter("metership_tail_lines_too_long_total", "Lines longer than records.max_line_size.", func() float64 { return float64(m.TooLongLines.Load()) }),
		counter("metership_tail_rotations_total", "Rotated files read to their end.", func() float64 { return float64(m.Rotations.Load()) }),
		counter("metership_tail_truncations_total", "Files found truncated (copytruncate) and restarted.", func() float64 { return float64(m.Truncations.Load()) }),
		counter("metership_tail_backpressure_seconds_total", "Time tail readers spent paused because the buffer was full (added every second of a pause) or failing (added when the pause ends).", m.BackPressureSeconds),
		counter("metership_tail_sink_full_total", "Chunks that found the buffer full and waited for space.", func() float64 { return float64(m.SinkFull.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "metership_tail_files", Help: "Files being tailed."}, func() float64 { return float64(m.FilesTailed.Load()) }),
		forgotten,
	)
	return forgotten
}

// fileCollector exports, at scrape time, how far each followed file is
// durably read and how large it was at its last check (like promtail's
// read and file bytes), so the lag of every file can be watched. Series
// exist only while a file is followed; the inode label tells apart a file
// renamed away, still drained under its old path, from its successor.
type fileCollector struct {
	tailers      []*tail.Tailer
	offset, size *prometheus.Desc
}

func newFileCollector(tailers []*tail.Tailer) *fileCollector {
	labels := []string{"path", "inode"}
	return &fileCollector{
		tailers: tailers,
		offset:  prometheus.NewDesc("metership_tail_file_offset_bytes", "Offset up to which a followed file is durably buffered.", labels, nil),
		size:    prometheus.NewDesc("metership_tail_file_size_bytes", "Size of a followed file at its last check.", labels, nil),
	}
}

func (c *fileCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.offset
	ch <- c.size
}

func (c *fileCollector) Collect(ch chan<- prometheus.Metric) {
	type key struct{ path, inode string }
	seen := map[key]bool{}
	for _, t := range c.tailers {
		for _, f := range t.Stats() {
			k := key{f.Path, strconv.FormatUint(f.Ino, 10)}
			if seen[k] {
				continue // the same file matched by two sources
			}
			seen[k] = true
			ch <- prometheus.MustNewConstMetric(c.offset, prometheus.GaugeValue, float64(f.Offset), k.path, k.inode)
			ch <- prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(max(f.Size, 0)), k.path, k.inode)
		}
	}
}

func startHTTP(listen string, p *pipeline.Pipeline, reg *prometheus.Registry, log *zap.Logger) (*http.Server, error) {
	if listen == "" || listen == "off" {
		return nil, nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := p.Healthy()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, why)
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
