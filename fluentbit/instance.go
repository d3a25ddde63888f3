package fluentbit

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/zeebo/xxh3"
	"go.uber.org/zap"

	"github.com/metership/metership/buffer"
	"github.com/metership/metership/conf"
	"github.com/metership/metership/engine"
	"github.com/metership/metership/pipeline"
	"github.com/metership/metership/record"
)

// Fluent Bit return codes (FLB_ERROR, FLB_OK, FLB_RETRY in fluent-bit-go's
// output package and flb_plugin.h).
const (
	FLBError = 0
	FLBOK    = 1
	FLBRetry = 2
)

// maxIdleFlushers bounds the flushers (Ingester, batch and decoder
// buffers) kept between flushes: more than Fluent Bit's usual Workers.
const maxIdleFlushers = 8

// fullWarnEvery spaces the warnings about a full buffer.
const fullWarnEvery = 30 * time.Second

// Instance is one configured output: an engine over its own buffer_dir and
// a pool of decoders and Ingesters for concurrent flushes.
type Instance struct {
	log             *zap.Logger
	eng             *engine.Engine
	pipe            *pipeline.Pipeline
	shutdownTimeout time.Duration
	maxLine         int

	// flushers keeps idle flushers for the next flush. A channel rather
	// than a sync.Pool: its batch buffers survive garbage collections, and
	// its size bounds the memory kept for concurrent Workers.
	flushers chan *flusher

	// chunks remembers partly committed and recently committed chunks
	// (chunks.go).
	chunks *chunkMemory

	// lastFullWarn is when a full buffer was last logged (Unix nanos).
	lastFullWarn atomic.Int64

	// mu is held shared by Flush and exclusively by Exit, so Exit waits
	// for flushes in progress and no flush starts after it.
	mu     sync.RWMutex
	closed bool
}

// flusher is the per-goroutine state of a flush: decoder buffers, an
// Ingester and scratch space. Instances pool them.
type flusher struct {
	in      *pipeline.Ingester
	dec     decoder
	maxLine int // records.max_line_size
	id      []byte
	dl      []byte
}

// NewInstance configures and starts one output from its Fluent Bit
// properties: defaults, then config_file, then every property set, then
// the same validation as the agent. Each problem is logged naming its
// property. log nil means a stderr logger built from log_level and
// log_format. Two instances on one buffer_dir fail with an error wrapping
// buffer.ErrLocked.
func NewInstance(get func(name string) string, log *zap.Logger) (*Instance, error) {
	return newInstance(get, log, engine.Options{})
}

// newInstance is NewInstance with engine options (tests inject disk
// faults); the logger and registerer are its own.
func newInstance(get func(name string) string, log *zap.Logger, eopts engine.Options) (*Instance, error) {
	cfg, problems, err := LoadConfig(get)
	if err != nil {
		if log == nil {
			log = engine.NewLogger(conf.Log{Level: "info", Format: "json"}, os.Stderr).Named("metership")
		}
		for _, p := range problems {
			fields := []zap.Field{zap.String("property", p.Property), zap.String("error", p.Msg)}
			if p.Key != "" {
				fields = append(fields, zap.String("key", p.Key))
			}
			log.Error("invalid property; the metership output is not started", fields...)
		}
		return nil, err
	}
	if log == nil {
		log = engine.NewLogger(cfg.Log, os.Stderr).Named("metership")
	}
	log = log.With(zap.String("buffer_dir", cfg.Buffer.Dir))
	if len(cfg.Sources) > 0 {
		log.Warn("sources in config_file are ignored by the Fluent Bit plugin: Fluent Bit's inputs feed it")
	}
	eopts.Logger = log
	eng, err := engine.Start(context.Background(), cfg, eopts)
	if err != nil {
		if errors.Is(err, buffer.ErrLocked) {
			err = fmt.Errorf("buffer_dir %s is already used by another metership output (another [OUTPUT] in this Fluent Bit, or another process); give each output its own buffer_dir: %w", cfg.Buffer.Dir, err)
		} else {
			err = fmt.Errorf("start: %w", err)
		}
		log.Error("the metership output is not started", zap.Error(err))
		return nil, err
	}
	x := &Instance{
		log:             log,
		eng:             eng,
		pipe:            eng.Pipeline(),
		shutdownTimeout: cfg.Agent.ShutdownTimeout.D(),
		maxLine:         int(cfg.Records.MaxLineSize),
		chunks:          newChunkMemory(eng.Pipeline().Buffer().Checkpoints()),
		flushers:        make(chan *flusher, maxIdleFlushers),
	}
	log.Info("metership output started",
		zap.String("output_url", cfg.Output.URL),
		zap.String("records_format", cfg.Records.Format),
		zap.String("metering_mode", string(cfg.Metering.Mode)))
	return x, nil
}

// Pipeline exposes the running pipeline (stats, buffer) for tests and
// diagnostics.
func (x *Instance) Pipeline() *pipeline.Pipeline { return x.pipe }

// Flush appends one Fluent Bit chunk under tag and returns the Fluent Bit
// code: FLBOK once every event is durable (records, and dead letters for
// bad ones), FLBRetry when the buffer is full, failing or closed. It never
// waits for buffer space. data is not retained.
func (x *Instance) Flush(data []byte, tag string) int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if x.closed {
		x.log.Warn("flush after exit; Fluent Bit will retry the chunk", zap.String("tag", tag))
		return FLBRetry
	}
	key := chunkKey(tag, data)
	if x.chunks.isDone(key) {
		// Fluent Bit died between FLB_OK and deleting the chunk, and sent
		// it again after restarting: its records are already durable.
		x.log.Info("chunk sent again is already in the buffer; not appended twice", zap.String("tag", tag))
		return FLBOK
	}
	f, err := x.getFlusher()
	if err != nil {
		x.log.Error("cannot prepare a flush; Fluent Bit will retry the chunk", zap.Error(err))
		return FLBRetry
	}
	defer x.putFlusher(f)
	f.in.SetTag(tag)

	from, dropped := x.chunks.begin(key, f.in)
	done, err := f.load(data, tag, from, &key)
	if err == nil {
		x.chunks.committed(key, dropped, -1)
		return FLBOK
	}
	f.in.Discard()
	if done > from {
		// The first piece carried the drops; the retry skips what is
		// durable (after a restart of Fluent Bit too).
		x.chunks.committed(key, dropped, done)
	}
	x.commitFailed(err, tag)
	return FLBRetry
}

// commitFailed logs why a chunk is refused. A full buffer is expected
// back-pressure, so it is logged at most once per fullWarnEvery.
func (x *Instance) commitFailed(err error, tag string) {
	if errors.Is(err, buffer.ErrFull) {
		now := time.Now().UnixNano()
		last := x.lastFullWarn.Load()
		if now-last >= int64(fullWarnEvery) && x.lastFullWarn.CompareAndSwap(last, now) {
			x.log.Warn("buffer full (uploads are not keeping up or failing); Fluent Bit will retry chunks until there is room",
				zap.String("tag", tag), zap.Error(err))
		}
		return
	}
	x.log.Error("buffer write failed; Fluent Bit will retry the chunk", zap.String("tag", tag), zap.Error(err))
}

func (x *Instance) getFlusher() (*flusher, error) {
	select {
	case f := <-x.flushers:
		return f, nil
	default:
	}
	in, err := x.pipe.NewIngester("")
	if err != nil {
		return nil, err
	}
	return &flusher{in: in, maxLine: x.maxLine}, nil
}

func (x *Instance) putFlusher(f *flusher) {
	select {
	case x.flushers <- f:
	default:
	}
}

// Exit drains the instance: no flush starts after it, the buffer is
// sealed and uploaded (and metering hours reported, with
// metering_report_on_stop the one in progress too) within
// agent_shutdown_timeout, and what could not be uploaded stays in
// buffer_dir for the next start. It returns FLBOK; a second call does
// nothing.
func (x *Instance) Exit() int {
	x.mu.Lock()
	if x.closed {
		x.mu.Unlock()
		return FLBOK
	}
	x.closed = true
	x.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), x.shutdownTimeout)
	defer cancel()
	start := time.Now()
	if err := x.eng.Finish(ctx, true); err != nil {
		x.log.Warn("metership output stopped; what was not uploaded stays in buffer_dir for the next start",
			zap.Duration("took", time.Since(start)), zap.Error(err))
	} else {
		st := x.pipe.Stats()
		x.log.Info("metership output stopped; everything buffered was uploaded",
			zap.Duration("took", time.Since(start)),
			zap.Int64("records_accepted", st.RecordsAccepted.Load()),
			zap.Int64("records_rejected", st.RecordsRejected.Load()),
			zap.Int64("records_shipped", st.RecordsShipped.Load()),
			zap.Int64("dead_letters", st.DeadLetters.Load()))
	}
	_ = x.log.Sync()
	return FLBOK
}

// load adds the chunk's events, from event index from on, to the
// Ingester's batch and, given the chunk's key, commits it: whole, or in
// pieces when it becomes Full (the pipeline's one split rule), each piece
// carrying the chunk's progress so a retry skips what is durable. done is
// the index of the first event not yet durable. Without a key (a
// benchmark of decoding alone) it never commits.
func (f *flusher) load(data []byte, tag string, from int, key *xxh3.Uint128) (done int, err error) {
	d := &f.dec
	d.reset(data)
	done = from
	idx := 0
	for ; d.more(); idx++ {
		start := d.pos
		if idx < from {
			if d.skip() != nil {
				// Reached the undecodable rest, already durable as one
				// dead letter.
				break
			}
			continue
		}
		ev, derr := d.nextEvent()
		if derr != nil {
			f.rejectRest(data[start:], idx, tag, derr)
			idx++
			break
		}
		switch ev.kind {
		case eventMarker:
		case eventBad:
			f.in.Reject(ev.line, int64(idx), tag, ev.reason)
		default:
			f.add(ev, idx, tag)
		}
		if key != nil && f.in.Full() {
			// The piece and the chunk's progress are durable together.
			markProgress(f.in, *key, idx+1)
			if err := f.in.Commit(); err != nil {
				return done, err
			}
			done = idx + 1
		}
	}
	if key == nil {
		return idx, nil
	}
	markWhole(f.in, *key, time.Now(), from > 0 || done > from)
	if err := f.in.Commit(); err != nil {
		return done, err
	}
	return idx, nil
}

// add hands one record to the Ingester with its Fluent Bit identity: the
// source is tag@event-time-nanoseconds and the offset the event's index in
// the chunk, so a re-sent chunk derives the same uniqueIds. The text of a
// {"log": text} record is a line like a tailed file's, under the same line
// policy (a trailing '\r' is not part of it).
func (f *flusher) add(ev event, idx int, tag string) {
	var millis int64
	if ev.hasTime {
		millis = ev.timeNanos / 1e6
	}
	f.id = append(f.id[:0], tag...)
	f.id = append(f.id, '@')
	f.id = strconv.AppendInt(f.id, ev.timeNanos, 10)
	// The Ingester copies what it keeps, so the id may alias f.id.
	id := unsafe.String(unsafe.SliceData(f.id), len(f.id))
	line := ev.line
	if ev.text {
		line = pipeline.TrimEOL(line)
	}
	f.in.AddLine(line, false, record.Origin{ID: id, Offset: int64(idx), TimeMillis: millis}, tag)
}

// rejectRest dead-letters the undecodable rest of a chunk as one entry:
// the base64 of its bytes (at most records.max_line_size characters).
func (f *flusher) rejectRest(rest []byte, idx int, tag string, err error) {
	limit := f.maxLine / 4 * 3
	reason := err.Error() + "; line is the base64 of the undecodable rest of the chunk"
	if len(rest) > limit {
		reason += fmt.Sprintf(" (its first %d of %d bytes)", limit, len(rest))
		rest = rest[:limit]
	}
	f.dl = base64.StdEncoding.AppendEncode(f.dl[:0], rest)
	f.in.Reject(f.dl, int64(idx), tag, reason)
}
