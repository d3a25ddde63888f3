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
	log := engine.NewLogger(cfg.Log, stderr)
	defer func() { _ = log.Sync() }()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	inputCtx, stopInputs := context.WithCancel(context.Background())
	defer stopInputs()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	rt, err := engine.Start(inputCtx, cfg, withTestFaults(engine.Options{Logger: log, Registerer: reg}))
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
	// Every tailer is given every restored checkpoint; a tailer ignores
	// those no file of its globs matches.
	restored := rt.Pipeline().Buffer().Checkpoints()
	tailers := make([]*tail.Tailer, 0, len(cfg.Sources))
	for i, src := range cfg.Sources {
		t, err := newTailer(cfg, src, rt.Pipeline(), restored, log.With(zap.Int("source", i)), tailMetrics)
		if err != nil {
			log.Error("cannot start source", zap.Int("source", i), zap.Error(err))
			stopInputs()
			shutdownHTTP(srv)
			_ = rt.Finish(context.Background(), false)
			return exitFailure
		}
		tailers = append(tailers, t)
	}
	reg.MustRegister(newFileCollector(tailers))
	for i, t := range tailers {
		inputs.Add(1)
		go func() {
			defer inputs.Done()
			if err := t.Run(inputCtx); err != nil && !errors.Is(err, context.Canceled) {
				inputErrs <- fmt.Errorf("sources[%d]: %w", i, err)
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

func newTailer(cfg conf.Config, src conf.Source, p *pipeline.Pipeline, restored []buffer.Checkpoint, log *zap.Logger, m *tail.Metrics) (*tail.Tailer, error) {
	sink, err := newTailSink(cfg, src, p, m)
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
		Paths:           src.Paths,
		Exclude:         src.Exclude,
		StartAt:         src.StartAt,
		RefreshInterval: src.RefreshInterval.D(),
		RotateWait:      src.RotateWait.D(),
		MaxLineSize:     int(cfg.Records.MaxLineSize),
		MaxChunkBytes:   chunkBytes,
		// Lines are ~100-200 bytes: let the byte limit end a chunk, so a
		// file read fast costs one commit (fsync) per MiB.
		MaxChunkLines: 16 << 10,
		PollInterval:  pollInterval,
		Checkpoints:   restored,
		Logger:        log,
		Metrics:       m,
	}, sink)
}

// tailSink turns tailed chunks into durable batches. Consume runs on one
// goroutine per file, so each call borrows its own Ingester.
type tailSink struct {
	p    *pipeline.Pipeline
	tag  string
	pool sync.Pool
	// keep is how much of a too-long line is dead-lettered, and reason
	// says so: records.max_line_size, or less when the buffer is so small
	// that the escaped line (up to 6 bytes a byte) could not fit in it.
	keep    int
	reason  string
	metrics *tail.Metrics
}

func newTailSink(cfg conf.Config, src conf.Source, p *pipeline.Pipeline, m *tail.Metrics) (*tailSink, error) {
	keep := min(int(cfg.Records.MaxLineSize), int(cfg.Buffer.MaxSize/8), buffer.MaxFrameData/8)
	s := &tailSink{
		p:       p,
		tag:     src.Tag,
		keep:    keep,
		metrics: m,
		reason:  fmt.Sprintf("line exceeds records.max_line_size (%d bytes); only its first %d bytes are kept here", cfg.Records.MaxLineSize, keep),
	}
	// Fail at start, not at the first line, if the ingester cannot be built.
	in, err := s.newIngester()
	if err != nil {
		return nil, err
	}
	s.pool.Put(in)
	return s, nil
}

// Consume commits the chunk's lines and its checkpoint as one batch. Blank
// lines are skipped (they are neither records nor errors) but still
// covered by the checkpoint.
func (s *tailSink) Consume(ctx context.Context, c *tail.Chunk) error {
	in, err := s.ingester()
	if err != nil {
		return err
	}
	defer s.pool.Put(in)
	for i := range c.Lines {
		s.add(in, c, i)
	}
	in.SetCheckpoint(c.Checkpoint.Source, c.Checkpoint.Offset, c.Checkpoint.Meta)
	err = in.Commit()
	if errors.Is(err, buffer.ErrTooLarge) {
		in.Discard()
		return s.consumeOneByOne(ctx, in, c)
	}
	if errors.Is(err, buffer.ErrFull) {
		// Back-pressure: hold the batch until an upload frees room (a
		// blind retry by the reader would resume up to its RetryMax late).
		s.metrics.SinkFull.Add(1)
		err = in.CommitWait(ctx)
	}
	if err != nil {
		// The tailer keeps its position and re-sends the same chunk after
		// a backoff: a failing buffer or a shutdown, never loss.
		in.Discard()
		return fmt.Errorf("%s: %w", c.Path, err)
	}
	return nil
}

func (s *tailSink) ingester() (*pipeline.Ingester, error) {
	if in, _ := s.pool.Get().(*pipeline.Ingester); in != nil {
		return in, nil
	}
	return s.newIngester()
}

// newIngester makes an Ingester whose waits for buffer space count as the
// tail readers' back-pressure.
func (s *tailSink) newIngester() (*pipeline.Ingester, error) {
	in, err := s.p.NewIngester(s.tag)
	if err != nil {
		return nil, err
	}
	in.OnPause(func(d time.Duration) { s.metrics.BackPressureNanos.Add(int64(d)) })
	return in, nil
}

// add adds line i of c to the batch.
func (s *tailSink) add(in *pipeline.Ingester, c *tail.Chunk, i int) {
	l := &c.Lines[i]
	switch {
	case l.TooLong:
		in.Reject(l.Data[:min(len(l.Data), s.keep)], l.Offset, c.Path, s.reason)
	case record.Blank(l.Data):
	default:
		in.Add(l.Data, record.Source{ID: c.Source, Offset: l.Offset}, c.Path)
	}
}

// consumeOneByOne commits a chunk too large for the buffer (dead letters
// of lines whose JSON escaping blew them up, with a small
// buffer.max_size) one line at a time, each batch with the checkpoint just
// past its line. A single line always fits: the Ingester shortens a dead
// letter to half of max_size. It waits for space rather than returning
// buffer.ErrFull: the tailer would re-send the lines already committed. An
// error (ctx done) leaves the buffer's checkpoint after the last committed
// line, where the next start resumes.
func (s *tailSink) consumeOneByOne(ctx context.Context, in *pipeline.Ingester, c *tail.Chunk) error {
	for i := range c.Lines {
		end := c.Checkpoint.Offset
		if i+1 < len(c.Lines) {
			end = c.Lines[i+1].Offset
		}
		s.add(in, c, i)
		in.SetCheckpoint(c.Checkpoint.Source, end, c.Checkpoint.Meta)
		if err := in.CommitWait(ctx); err != nil {
			in.Discard()
			return fmt.Errorf("%s: %w", c.Path, err)
		}
	}
	// A chunk without lines cannot be too large; nothing is left.
	return nil
}

// checkpointGrace is how long a restored tail checkpoint may stay
// unclaimed before it is forgotten: time for the first scans to find
// every file, and for files rotated while the agent was down to be found
// and read (a rotated file is followed for rotate_wait after its last
// growth).
func checkpointGrace(sources []conf.Source) time.Duration {
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
		in.SetCheckpoint(cp.Source, -1, nil)
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
		gc.log.Info("forgot the checkpoint of a file that is gone", zap.String("source", cp.Source), zap.String("path", path), zap.Int64("offset", cp.Offset))
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
			count[cp.Source]++
		}
	}
	var out []buffer.Checkpoint
	for _, cp := range first {
		if count[cp.Source] == len(gc.tailers) {
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
