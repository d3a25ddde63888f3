// Package pipeline wires the core together: records are parsed into a
// batch, the batch is made durable in the buffer, sealed segments are
// counted by metering (when on), encoded into objects, uploaded, and only
// then acknowledged. Both mains (the agent and the Fluent Bit plugin) drive
// the same Pipeline.
//
// Shutdown order: stop the inputs (no more Commit calls), Drain (seal and
// ship what is buffered, bounded by a deadline), cancel the context given
// to Run and wait for it, then Close. Anything not shipped by then stays in
// the buffer and is shipped by the next start.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/metership/metership/buffer"
	"github.com/metership/metership/conf"
	"github.com/metership/metership/internal/ctxtime"
	"github.com/metership/metership/internal/retry"
	"github.com/metership/metership/record"
	"github.com/metership/metership/ship"
)

// Counter is the metering hook. Ingesters sum each batch as they parse it
// (NewBatchCount) and write the sums with the batch; a sealed segment is
// then counted into the hourly ledger from the frames the encoder reads
// anyway (those sums, or the records where there are none), so each
// segment is read once. Counting must be idempotent per segment (a
// segment is counted again after a crash between the count and its Ack);
// a merged count is durable once Sync returns nil, and segments are
// acknowledged only then. engine wires metering.Meter in.
type Counter interface {
	BeginCount(seq uint64) SegmentCount
	// NewBatchCount returns a count of one batch's records made while
	// they are parsed, written with the batch as a buffer.FrameAggregate
	// so that counting its segment need not parse them again; nil when the
	// counter cannot make one yet.
	NewBatchCount() BatchCount
	// Sync makes every count merged so far durable, in one write.
	Sync() error
}

// BatchCount sums an Ingester's batch: Add every accepted record (with the
// fields the parser located, when it did), Aggregate before the write,
// Reset after it.
type BatchCount interface {
	Add(tsMillis int64, loc *record.Located, line []byte)
	Aggregate() []byte
	Reset()
}

// SegmentCount is one segment's count in progress: Add every frame, then
// Merge (into the counter's totals, in memory; durable after the
// counter's next Sync), then Close.
type SegmentCount interface {
	Add(f buffer.Frame)
	Merge(ctx context.Context) error
	Close()
}

// Options are the non-config inputs of New.
type Options struct {
	Logger     *zap.Logger
	Registerer prometheus.Registerer // nil: metrics are kept but not exported
	Counter    Counter               // nil: metering off
	// UnhealthyAfter is how long uploads may keep failing before Ready
	// reports false; default 5m.
	UnhealthyAfter time.Duration
	Now            func() time.Time
}

// Uploaders are where objects go: Records for record objects, DeadLetters
// for dead-letter objects (often the same uploader). New wraps both in the
// retry, timeout and key-collision stages.
type Uploaders struct {
	Records, DeadLetters ship.Uploader
}

// Pipeline is one running instance of the core.
type Pipeline struct {
	cfg     conf.Config
	log     *zap.Logger
	buf     *buffer.Buffer
	enc     *ship.Encoder
	out     ship.Uploader
	dlq     ship.Uploader
	counter Counter
	metrics *Metrics
	now     func() time.Time

	// Shipped segments (uploaded, and counted when metering is on) wait
	// in shipped to be acknowledged in groups by ackLoop, after one ledger
	// write (Counter.Sync) for their counts. draining > 0 while Drain
	// waits: a group is then acknowledged at once; hurry wakes ackLoop
	// when Drain starts.
	shipped  chan *buffer.Segment
	draining atomic.Int32
	hurry    chan struct{}
	ackDelay time.Duration // maxAckDelay, or flush_interval if shorter
	// acking is held by ackLoop from a group's AckAll to its stats, so
	// Drain, woken by the last Ack, returns with the stats up to date.
	acking chan struct{}

	unhealthyAfter time.Duration
	failingSince   atomic.Int64 // unix nanos of the first failure since the last success; 0 = healthy
	lastUploadOK   atomic.Int64

	stats Stats
}

// Stats are running totals, for summaries, tests and /metrics (the
// matching metership_*_total counters read them).
type Stats struct {
	RecordsAccepted atomic.Int64
	RecordsRejected atomic.Int64
	ObjectsWritten  atomic.Int64
	ObjectBytes     atomic.Int64
	DeadLetterObjs  atomic.Int64
	RecordsShipped  atomic.Int64
	DeadLetters     atomic.Int64
	SegmentsShipped atomic.Int64
}

// New builds the encoder from cfg, which must be valid, and runs the
// core on buf (opened, and so recovered, by the caller) and up. The
// pipeline owns buf from then on: Close closes it. The caller (engine)
// builds the buffer and uploaders first so that metering, which needs the
// buffer's ids, can be built before the pipeline and passed in as
// opts.Counter.
func New(cfg conf.Config, buf *buffer.Buffer, up Uploaders, opts Options) (*Pipeline, error) {
	if buf == nil || up.Records == nil || up.DeadLetters == nil {
		return nil, errors.New("pipeline: a buffer and both uploaders are required")
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	hostname := cfg.Output.Hostname
	if hostname == "" {
		hostname, _ = os.Hostname()
	}
	// Keys are relative to the destination: the uploader adds the bucket
	// prefix (s3) or the directory (file).
	key, err := ship.CompileKeyFormat("", cfg.Output.KeyFormat, hostname)
	if err != nil {
		return nil, fmt.Errorf("output.key_format: %w", err)
	}
	dlKey, err := ship.CompileKeyFormat("", cfg.Output.DeadLetterKeyFormat, hostname)
	if err != nil {
		return nil, fmt.Errorf("output.dead_letter_key_format: %w", err)
	}
	enc, err := ship.NewEncoder(ship.EncoderOptions{
		Key:           key,
		DeadLetterKey: dlKey,
		Compression:   cfg.Output.Compression,
		Format:        cfg.Output.Format,
	})
	if err != nil {
		return nil, err
	}

	p := &Pipeline{
		cfg:            cfg,
		log:            log,
		buf:            buf,
		enc:            enc,
		counter:        opts.Counter,
		now:            now,
		unhealthyAfter: opts.UnhealthyAfter,
	}
	if p.unhealthyAfter <= 0 {
		p.unhealthyAfter = 5 * time.Minute
	}
	p.shipped = make(chan *buffer.Segment, maxAckGroup)
	p.hurry = make(chan struct{}, 1)
	p.acking = make(chan struct{}, 1)
	p.ackDelay = min(maxAckDelay, cfg.Buffer.FlushInterval.D())
	p.out = p.withRetry(up.Records)
	p.dlq = p.withRetry(up.DeadLetters)
	p.metrics = newMetrics(opts.Registerer, p)
	rep := p.buf.Stats().Recovered
	if rep.Segments > 0 || rep.TruncatedBytes > 0 || len(rep.MovedAside) > 0 {
		log.Info("buffer recovered",
			zap.Int("segments", rep.Segments),
			zap.Int64("truncated_bytes", rep.TruncatedBytes),
			zap.Int("dropped_uncommitted_frames", rep.DroppedFrames),
			zap.Strings("moved_aside", rep.MovedAside))
	}
	return p, nil
}

// withRetry wraps an uploader in the retry and per-attempt timeout stages.
// Retries never give up on their own: data waits on disk until the
// destination takes it or the pipeline shuts down.
func (p *Pipeline) withRetry(u ship.Uploader) ship.Uploader {
	return ship.Retry{
		Next:    ship.Timeout{Next: ship.Collisions{Next: u, OnCollision: p.noteCollision, OnUnverified: p.noteUnverified}, Duration: 2 * time.Minute},
		Initial: 200 * time.Millisecond,
		Max:     30 * time.Second,
		OnError: func(err error, attempt int, permanent bool, wait time.Duration) {
			p.noteUploadFailure()
			lvl := p.log.Warn
			if permanent {
				lvl = p.log.Error
			}
			lvl("upload failed; will retry, data stays in the buffer",
				zap.Error(err), zap.Int("attempt", attempt), zap.Bool("permanent", permanent), zap.Duration("retry_in", wait))
		},
	}
}

// noteCollision reports an object whose key was taken by another object
// (typically another buffer writing with the same agent.id before instance
// ids, or a copied buffer directory): it is written under freshKey, not
// counted as done.
func (p *Pipeline) noteCollision(obj *ship.Object, err error, freshKey string) {
	if p.metrics != nil {
		p.metrics.KeyCollisions.Inc()
	}
	p.log.Error("object key already holds a different object; writing this one under a fresh key",
		zap.Error(err), zap.String("fresh_key", freshKey), zap.Int("records", obj.Records), zap.Bool("dead_letters", obj.DeadLetter))
}

// noteUnverified reports a 412 whose object could not be read to compare
// it (no s3:GetObject): counted as done, as keys are unique per buffer.
func (p *Pipeline) noteUnverified(obj *ship.Object, err error) {
	p.log.Warn("object key exists and could not be read to rule out a key collision; counted as done (grant s3:GetObject to check)",
		zap.Error(err), zap.Int("records", obj.Records))
}

func (p *Pipeline) noteUploadFailure() {
	if p.metrics != nil {
		p.metrics.UploadsFailed.Inc()
	}
	p.failingSince.CompareAndSwap(0, p.now().UnixNano())
}

// Buffer exposes the buffer (checkpoints, stats).
func (p *Pipeline) Buffer() *buffer.Buffer { return p.buf }

// Stats exposes running totals.
func (p *Pipeline) Stats() *Stats { return &p.stats }

// Config returns the configuration the pipeline runs with.
func (p *Pipeline) Config() conf.Config { return p.cfg }

// Ready reports whether the pipeline takes and ships records: false while
// the buffer cannot take writes (a disk error since the last write that
// succeeded: a full disk, a failed fsync being recovered from, or a
// failed buffer), and once uploads have failed continuously for longer
// than UnhealthyAfter.
func (p *Pipeline) Ready() (bool, string) {
	if ok, why := p.Healthy(); !ok {
		return false, why
	}
	if st := p.buf.Stats(); st.DiskError != nil {
		return false, fmt.Sprintf("buffer writes failing for %s (inputs are held back, nothing acknowledged is lost): %v",
			p.now().Sub(st.DiskErrorSince).Round(time.Second), st.DiskError)
	}
	since := p.failingSince.Load()
	if since == 0 {
		return true, "ok"
	}
	d := p.now().Sub(time.Unix(0, since))
	if d > p.unhealthyAfter {
		return false, fmt.Sprintf("uploads failing for %s", d.Round(time.Second))
	}
	return true, "ok (uploads retrying)"
}

// Healthy reports whether the pipeline can go on without a restart:
// false once the buffer has failed for good (a disk error it could not
// recover from in place; buffer.ErrFailed). A restart recovers every
// acknowledged record from buffer.dir.
func (p *Pipeline) Healthy() (bool, string) {
	if err := p.buf.Stats().Failed; err != nil {
		return false, fmt.Sprintf("buffer failed after a disk error, restart needed (recovery at start keeps every acknowledged record): %v", err)
	}
	return true, "ok"
}

// Run ships sealed segments until ctx is done: one goroutine seals the
// active segment when it is older than buffer.flush_interval,
// output.concurrency workers count, encode and upload sealed segments,
// and ackLoop acknowledges them in groups. It returns nil when ctx is
// cancelled; segments not yet acknowledged then stay on disk and ship
// again after a restart.
func (p *Pipeline) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.sealLoop(ctx)
	}()
	n := p.cfg.Output.Concurrency
	if n < 1 {
		n = 1
	}
	errc := make(chan error, n)
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.ackLoop(ctx)
	}()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- p.shipLoop(ctx)
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *Pipeline) sealLoop(ctx context.Context) {
	age := p.cfg.Buffer.FlushInterval.D()
	// Check often enough that a batch ships within ~10% of its age limit.
	tick := age / 10
	if tick > time.Second {
		tick = time.Second
	}
	if tick < 10*time.Millisecond {
		tick = 10 * time.Millisecond
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := p.buf.SealOlderThan(age); err != nil {
				p.log.Error("sealing the active segment failed", zap.Error(err))
			}
		}
	}
}

// Waits of the pipeline's own retries (internal/retry's equal jitter).
// A segment not shipped is picked up again after 1-2 s: the uploader's
// Retry stage below already backed off for up to its MaxElapsed. A ledger
// sync or an ack (local disk) is retried from 100-200 ms up to 15-30 s.
const (
	reshipWait    = 2 * time.Second
	localRetry    = 200 * time.Millisecond
	localRetryMax = 30 * time.Second
)

func (p *Pipeline) shipLoop(ctx context.Context) error {
	bo := retry.Backoff{Initial: reshipWait, Max: reshipWait}
	for {
		seg, err := p.buf.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, buffer.ErrClosed) {
				return nil
			}
			return fmt.Errorf("buffer: %w", err)
		}
		if err := p.shipSegment(ctx, seg); err != nil {
			p.buf.Release(seg)
			if ctx.Err() != nil {
				return nil
			}
			p.log.Error("segment not shipped; it stays in the buffer", zap.Uint64("segment", seg.Seq), zap.Error(err))
			if !ctxtime.Sleep(ctx, bo.Next()) {
				return nil
			}
		}
	}
}

// shipSegment is encode (and count) -> upload every object -> ack. A
// segment is acknowledged (deleted) only when it is both counted durably
// and uploaded; a crash anywhere before Ack repeats idempotent steps.
func (p *Pipeline) shipSegment(ctx context.Context, seg *buffer.Segment) error {
	var src ship.FrameSource = seg
	var cnt SegmentCount
	if p.counter != nil {
		// One pass: the encoder's read of the frames also feeds the count.
		cnt = p.counter.BeginCount(seg.Seq)
		defer cnt.Close()
		src = &countingSource{seg: seg, cnt: cnt}
	}
	objs, err := p.enc.Encode(p.buf.ObjectKeyID(seg.Seq), seg.Seq, src)
	if errors.Is(err, buffer.ErrCorrupt) {
		return p.salvage(seg, err)
	}
	if err != nil {
		return fmt.Errorf("encode segment %d: %w", seg.Seq, err)
	}
	defer p.enc.Release(objs)
	if err := p.upload(ctx, objs); err != nil {
		return err
	}
	if cnt != nil {
		if err := cnt.Merge(ctx); err != nil { // in memory: fails only when ctx is done
			return err
		}
	}
	// ackLoop acknowledges the segment, with others, after the ledger
	// write that makes its count durable.
	select {
	case p.shipped <- seg:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// One acknowledgement covers at most maxAckGroup segments, and the first
// of them waits at most maxAckDelay (or flush_interval, if shorter) for
// others to join.
const (
	maxAckGroup = 64
	maxAckDelay = 100 * time.Millisecond
)

// bufferPressed reports whether the buffer is at least half full: acks
// then free space at once, so that inputs held back by a full buffer do
// not also wait for a group to fill.
func (p *Pipeline) bufferPressed() bool {
	return p.buf.Stats().BytesOnDisk >= int64(p.cfg.Buffer.MaxSize)/2
}

// ackLoop acknowledges the segments shipSegment uploaded (and counted) in
// groups: an Ack persists the buffer's state and syncs its directory, and
// with metering on the counts must first reach the ledger, an fsync'd
// rewrite. Done per segment, those writes cost more CPU than counting
// the segment's records from their aggregates; done per group, once. A
// group is acknowledged maxAckDelay after its first segment arrived
// (sooner once maxAckGroup are waiting), and at once, with whatever else
// is already waiting, while Drain waits or the buffer is half full. The
// delay is short so that Acks (each deletes a segment file) stay spread
// out rather than bunched when Drain starts. Segments wait a little
// longer for their Ack; a crash before it only repeats idempotent steps
// (upload: 412; count: the ledger does not hold it yet).
func (p *Pipeline) ackLoop(ctx context.Context) {
	timer := time.NewTimer(p.ackDelay)
	timer.Stop()
	var group []*buffer.Segment
	defer func() {
		timer.Stop()
		for _, seg := range group {
			p.buf.Release(seg)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case seg := <-p.shipped:
			if len(group) == 0 {
				timer.Reset(p.ackDelay)
			}
			group = append(group, seg)
			if len(group) < maxAckGroup && p.draining.Load() == 0 && !p.bufferPressed() {
				continue
			}
		case <-timer.C:
		case <-p.hurry:
		}
		group = p.takeShipped(group)
		if len(group) == 0 {
			continue
		}
		timer.Stop()
		if p.counter != nil {
			sync := func(context.Context) error { return p.counter.Sync() }
			if p.retry(ctx, group[0], "metering could not write its ledger", sync) != nil {
				return
			}
		}
		// A failed AckAll is retried as is (removing a file already gone
		// is not an error); shutdown leaves the group in the buffer, to be
		// shipped again by the next start.
		ack := func(context.Context) error { return p.buf.AckAll(group) }
		p.acking <- struct{}{}
		if p.retry(ctx, group[0], "shipped segments could not be acknowledged", ack) != nil {
			<-p.acking
			return
		}
		p.stats.SegmentsShipped.Add(int64(len(group)))
		<-p.acking
		group = group[:0]
	}
}

// takeShipped adds to group, without waiting, the shipped segments
// already queued, up to maxAckGroup: one write then covers a backlog.
func (p *Pipeline) takeShipped(group []*buffer.Segment) []*buffer.Segment {
	for len(group) < maxAckGroup {
		select {
		case seg := <-p.shipped:
			group = append(group, seg)
		default:
			return group
		}
	}
	return group
}

// salvage handles a sealed segment found damaged on disk (it verified
// when the buffer opened or was written by this process, so the disk
// changed under it): retried as is, it would fail forever and, as the
// oldest, hold back every segment after it. buffer.Salvage sets a copy
// aside and keeps the intact commits, which ship on the next Next.
func (p *Pipeline) salvage(seg *buffer.Segment, cause error) error {
	bad, err := p.buf.Salvage(seg)
	if err != nil {
		return fmt.Errorf("segment %d is damaged (%v) and could not be salvaged: %w", seg.Seq, cause, err) //nolint:errorlint // only the salvage error is the cause; the damage is told, not wrapped
	}
	p.metrics.SegmentsDamaged.Inc()
	p.log.Error("buffer segment damaged on disk after it was sealed; a copy is set aside and its intact part is shipped",
		zap.Uint64("segment", seg.Seq), zap.String("set_aside", bad), zap.Int("records_kept", seg.Records), zap.NamedError("damage", cause))
	return nil
}

// upload writes a segment's objects to the output (records) and the
// dead-letter destination.
func (p *Pipeline) upload(ctx context.Context, objs []ship.Object) error {
	for i := range objs {
		obj := &objs[i]
		if !obj.DeadLetter {
			if ct := p.cfg.Output.ContentType; ct != "" {
				obj.ContentType = ct
			}
			if ce := p.cfg.Output.ContentEncoding; ce != "" {
				obj.ContentEncoding = ce
			}
		}
		up := p.out
		if obj.DeadLetter {
			up = p.dlq
		}
		start := p.now()
		if err := up.Put(ctx, obj); err != nil {
			return fmt.Errorf("upload %s: %w", obj.Key, err)
		}
		p.metrics.UploadLatency.Observe(p.now().Sub(start).Seconds())
		p.metrics.UploadsOK.Inc()
		p.failingSince.Store(0)
		p.lastUploadOK.Store(p.now().UnixNano())
		if obj.DeadLetter {
			p.stats.DeadLetterObjs.Add(1)
			p.stats.DeadLetters.Add(int64(obj.Records))
		} else {
			p.stats.ObjectsWritten.Add(1)
			p.stats.RecordsShipped.Add(int64(obj.Records))
		}
		p.stats.ObjectBytes.Add(int64(len(obj.Body)))
	}
	return nil
}

// countingSource passes a segment's frames to the encoder and to a count.
// The encoder reads them exactly once (a second pass would count twice,
// so it is refused).
type countingSource struct {
	seg  *buffer.Segment
	cnt  SegmentCount
	read bool
}

func (c *countingSource) Frames(fn func(buffer.Frame) error) error {
	if c.read {
		return errors.New("pipeline: segment frames read twice while counting")
	}
	c.read = true
	return c.seg.Frames(func(f buffer.Frame) error {
		c.cnt.Add(f)
		return fn(f)
	})
}

// retry calls fn until it succeeds or ctx is done, backing off
// (localRetry..localRetryMax).
func (p *Pipeline) retry(ctx context.Context, seg *buffer.Segment, what string, fn func(context.Context) error) error {
	bo := retry.Backoff{Initial: localRetry, Max: localRetryMax}
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		p.log.Error(what+"; retrying", zap.Uint64("segment", seg.Seq), zap.Int("attempt", attempt), zap.Error(err))
		if !ctxtime.Sleep(ctx, bo.Next()) {
			return ctx.Err()
		}
	}
}

// Drain seals the active segment and waits until every sealed segment is
// shipped, or ctx is done. Run must be running.
func (p *Pipeline) Drain(ctx context.Context) error {
	p.draining.Add(1)
	defer p.draining.Add(-1)
	select {
	case p.hurry <- struct{}{}:
	default:
	}
	if err := p.buf.Seal(); err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	if err := p.buf.WaitEmpty(ctx); err != nil {
		return fmt.Errorf("%d segment(s) not yet shipped, left in the buffer: %w", p.buf.Stats().SegmentsSealed, err)
	}
	// The last Ack woke WaitEmpty: let ackLoop count that group first
	// (everything is shipped either way; only the stats could lag).
	select {
	case p.acking <- struct{}{}:
		<-p.acking
	case <-ctx.Done():
	}
	return nil
}

// Close closes the buffer. Call after Run has returned.
func (p *Pipeline) Close() error { return p.buf.Close() }
