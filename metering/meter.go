package metering

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	mm "github.com/aws/aws-sdk-go-v2/service/marketplacemetering"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/metership/metership/buffer"
	"github.com/metership/metership/conf"
	"github.com/metership/metership/internal/fsutil"
)

// Modes of metering.mode that New accepts.
const (
	ModeMeterUsage      = conf.MeteringMeterUsage
	ModeBatchMeterUsage = conf.MeteringBatchMeterUsage
)

// Sentinel errors.
var (
	// ErrInvalidConfig is returned by New, wrapped with the offending key,
	// when the metering config or Options cannot work.
	ErrInvalidConfig = errors.New("metering: invalid configuration")
	// ErrCorruptLedger is returned by New when the ledger file does not
	// verify. New refuses to guess: an empty ledger would re-report hours
	// and lose carried fractions. Move the file aside to start over.
	ErrCorruptLedger = errors.New("metering: corrupt ledger")
	// ErrNotReported is returned by ReportClosed when usage of a closed
	// hour is still unanswered (throttling, outage, a permanent API error)
	// when it gives up; the intent stays in the ledger for the next pass.
	ErrNotReported = errors.New("metering: usage not reported")
)

// API is the part of the Marketplace Metering client the reporter uses;
// *marketplacemetering.Client satisfies it.
type API interface {
	MeterUsage(ctx context.Context, in *mm.MeterUsageInput, optFns ...func(*mm.Options)) (*mm.MeterUsageOutput, error)
	BatchMeterUsage(ctx context.Context, in *mm.BatchMeterUsageInput, optFns ...func(*mm.Options)) (*mm.BatchMeterUsageOutput, error)
}

// Backoff bounds the wait between retries of a throttled or failed call:
// it starts at Initial, doubles up to Max, and is jittered.
type Backoff struct {
	Initial time.Duration // default 1s
	Max     time.Duration // default 1m
}

// Options are the non-config inputs of New.
type Options struct {
	// Dir holds the ledger and the dead-letter directory; the agent passes
	// <buffer.dir>/metering, so the buffer's directory lock covers it.
	Dir string
	// InstanceID identifies this agent in MeterUsage ClientTokens (the
	// buffer's instance id, unique to its directory, not agent.id, which
	// replicas may share). Two agents must never share one.
	InstanceID string
	// Client calls AWS Marketplace (NewClient), or the emulator in tests.
	Client     API
	Logger     *zap.Logger
	Registerer prometheus.Registerer // nil: metrics are kept, not exported
	Now        func() time.Time      // default time.Now
	// Live reports whether a buffer segment still exists. A counted segment
	// that is gone was acknowledged and never comes back, so its sequence
	// is dropped from the ledger. Nil keeps every counted sequence. It is
	// called without the Meter's lock (it may call Counted).
	Live func(seq uint64) bool
	// Pending returns the smallest record time (Unix ms) among records not
	// yet counted (the active segment and sealed segments not yet given to
	// Count); ok false when there are none. An hour is not reported while
	// records for it may still be counted. Nil means nothing is pending.
	// It may call Counted.
	Pending func() (minTimeMillis int64, ok bool)
	Backoff Backoff
	// MaxRetryElapsed bounds how long one pass retries throttling, 5xx and
	// network errors before leaving the intents for the next pass;
	// default 30m.
	MaxRetryElapsed time.Duration
	// CallTimeout bounds one API call, SDK retries included; default 30s.
	CallTimeout time.Duration
	// Tick is how often Run reports closed hours; default 1m.
	Tick time.Duration
	// Shared, in batch_meter_usage mode, takes closed hours' usage instead
	// of this agent reporting it (metering.state_url; see shared.go).
	Shared SharedState
	// CatchUpSources is how many sources will call SourceCaughtUp once
	// they have read what their files held at the start. Until they all
	// have (or metering.catch_up_timeout has passed), no hour closes, so
	// a backlog left by downtime is billed in its own hours. 0: none.
	CatchUpSources int

	// reportWorkers bounds concurrent MeterUsage calls; default 4 (tests
	// that count calls around a crash use 1).
	reportWorkers int
	// answerSaveEvery is how long answers may wait in memory while a
	// pass goes on calling; default 1s.
	answerSaveEvery time.Duration

	// crashPoint, when set (tests), is called at named points of Count and
	// of reporting so a child process can SIGKILL itself exactly there.
	crashPoint func(point string)
	// onRetry, when set (tests), is called after each retryable failure.
	onRetry func(err error)
}

// dimension is one metering.dimensions entry.
type dimension struct {
	name   string
	factor factor
}

// settings are the parsed metering config.
type settings struct {
	mode         conf.MeteringMode
	product      string
	dims         map[string]dimension // meterApiName -> dimension
	dimNames     []string             // distinct Marketplace dimensions, sorted
	tags         []string
	accountIDs   bool
	licenseConst string
	licenseDim   string
	lateness     time.Duration
	window       time.Duration
	reportZero   bool
	dryRun       bool
	reportOnStop bool
	maxCarry     time.Duration // 0: no limit
	catchUp      time.Duration
}

var accountIDPattern = regexp.MustCompile(`^[0-9]{12}$`)

// parseSettings reads a metering section checked by ValidateConfig (run
// by engine.Validate); it does not check it again, only parses what it
// needs.
func parseSettings(cfg conf.Metering) (settings, error) {
	s := settings{
		mode:       cfg.Mode,
		product:    cfg.ProductCode,
		dims:       make(map[string]dimension, len(cfg.Dimensions)),
		tags:       slices.Clone(cfg.AllocationTags),
		accountIDs: cfg.CustomerIDType == "aws_account_id",
		lateness:   cfg.Lateness.D(),
		window:     cfg.Window.D(),
		reportZero: cfg.ReportZero,
		dryRun:     cfg.DryRun,

		reportOnStop: cfg.ReportOnStop,
		maxCarry:     cfg.MaxCarry.D(),
		catchUp:      cfg.CatchUpTimeout.D(),
	}
	if s.mode != ModeMeterUsage && s.mode != ModeBatchMeterUsage {
		return s, fmt.Errorf("%w: metering.mode: %q: New needs %s or %s", ErrInvalidConfig, cfg.Mode, ModeMeterUsage, ModeBatchMeterUsage)
	}
	names := map[string]bool{}
	for api, spec := range cfg.Dimensions {
		name, f, err := ParseDimension(spec)
		if err != nil {
			return s, fmt.Errorf("%w: metering.dimensions.%s: %w", ErrInvalidConfig, api, err)
		}
		s.dims[api] = dimension{name: name, factor: parseFactor(spec, f)}
		names[name] = true
	}
	s.dimNames = slices.Sorted(maps.Keys(names))
	if lic, ok := strings.CutPrefix(cfg.LicenseARN, "dimension:"); ok {
		s.licenseDim = lic
	} else {
		s.licenseConst = cfg.LicenseARN
	}
	return s, nil
}

// Meter counts sealed buffer segments into an hourly ledger on disk and
// reports closed hours to AWS Marketplace. Count, ReportClosed, Run and
// Summary are safe for concurrent use.
type Meter struct {
	set     settings
	opts    Options
	log     *zap.Logger
	metrics *metrics
	api     API
	now     func() time.Time

	scanners sync.Pool

	// reportSem (capacity 1) serialises reporting passes, so an intent is
	// never in two calls at once. A channel, not a mutex, so that waiting
	// for a pass in progress honours the waiter's context.
	reportSem chan struct{}
	// kick asks Run for a pass now (hours closed when the catch-up gate
	// opened), without waiting for the tick.
	kick chan struct{}

	// mu guards everything below; it is never held during an API call.
	mu  sync.Mutex
	led *ledger
	// dirty: led holds changes not yet durable (a ledger write failed, or
	// counts Merge and answers resolve keep for a grouped write). Nothing
	// that depends on them (Count's nil, a segment's Ack, an API call)
	// happens before a write succeeds.
	dirty bool
	// savedAt is when the ledger was last written.
	savedAt time.Time
	sum     Summary
	// oldestPending is the start (unix seconds) of the oldest hour counted
	// in sum.Pending; 0 when none.
	oldestPending int64
	// lastCut is the first hour not closed at the last pass: where an
	// expired intent's usage goes is chosen against it.
	lastCut int64
	// catchUpLeft counts sources still reading their start-up backlog;
	// no hour closes while it is > 0 and now is before catchUpUntil.
	catchUpLeft  int
	catchUpUntil time.Time
}

// Summary is what this Meter did since New, for the CLI.
type Summary struct {
	// HoursReported counts usage records AWS accepted.
	HoursReported int
	// Quantities sums the accepted quantities per Marketplace dimension.
	Quantities map[string]int64
	// Conflicts counts records AWS already held with another quantity.
	Conflicts int
	// Carried counts hours whose usage moved to another hour (window, late
	// records, refused timestamps).
	Carried int
	// NotSubscribed counts records refused with CustomerNotSubscribed.
	NotSubscribed int
	// DryRun counts records validated with DryRun and not recorded.
	DryRun int
	// Pending counts hours with usage not yet accepted (now, not since New).
	Pending int
	// RecordsCounted and RecordsUnmapped count meter records seen by Count.
	RecordsCounted  int64
	RecordsUnmapped int64
	// RecordsUnbillable counts records with a bad value or customer id.
	RecordsUnbillable int64
	// RecordsRescanned counts records whose segment's count parsed them
	// again, their batch having no aggregate of the current key shape.
	RecordsRescanned int64
	// UnbilledRecords counts records not billed because their hour was
	// older than metering.max_carry when counted; Unbilled sums their
	// usage per Marketplace dimension, in billionths of a unit.
	UnbilledRecords int64
	Unbilled        map[string]int64
}

// New loads (or creates) the ledger in opts.Dir. cfg.Mode must be
// meter_usage or batch_meter_usage.
func New(cfg conf.Metering, opts Options) (*Meter, error) {
	set, err := parseSettings(cfg)
	if err != nil {
		return nil, err
	}
	if opts.Dir == "" {
		return nil, fmt.Errorf("%w: Options.Dir is empty", ErrInvalidConfig)
	}
	if opts.InstanceID == "" {
		return nil, fmt.Errorf("%w: Options.InstanceID is empty", ErrInvalidConfig)
	}
	if opts.Client == nil {
		return nil, fmt.Errorf("%w: Options.Client is nil", ErrInvalidConfig)
	}
	if opts.Shared != nil && set.mode != ModeBatchMeterUsage {
		return nil, fmt.Errorf("%w: metering.state_url: only used with metering.mode %s", ErrInvalidConfig, ModeBatchMeterUsage)
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Backoff.Initial <= 0 {
		opts.Backoff.Initial = time.Second
	}
	if opts.Backoff.Max <= 0 {
		opts.Backoff.Max = time.Minute
	}
	opts.Backoff.Max = max(opts.Backoff.Max, opts.Backoff.Initial)
	if opts.MaxRetryElapsed <= 0 {
		opts.MaxRetryElapsed = 30 * time.Minute
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 30 * time.Second
	}
	if opts.Tick <= 0 {
		opts.Tick = time.Minute
	}
	if opts.reportWorkers <= 0 {
		opts.reportWorkers = 4
	}
	if opts.answerSaveEvery <= 0 {
		opts.answerSaveEvery = time.Second
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("metering: %w", err)
	}
	m := &Meter{
		set:  set,
		opts: opts,
		log:  opts.Logger.With(zap.String("component", "metering")),
		api:  opts.Client,
		now:  opts.Now,
		sum:  Summary{Quantities: map[string]int64{}, Unbilled: map[string]int64{}},

		reportSem:   make(chan struct{}, 1),
		kick:        make(chan struct{}, 1),
		catchUpLeft: opts.CatchUpSources,
	}
	m.catchUpUntil = m.now().Add(set.catchUp)
	if set.catchUp <= 0 {
		m.catchUpLeft = 0 // catch_up_timeout 0: hours never wait for sources
	}
	m.metrics, err = newMetrics(opts.Registerer, m)
	if err != nil {
		return nil, fmt.Errorf("metering: register metrics: %w", err)
	}
	m.scanners.New = func() any {
		return newScanner(set.tags, set.licenseDim, set.mode == ModeBatchMeterUsage)
	}
	led, existed, err := loadLedger(opts.Dir, opts.InstanceID, m.now())
	if err != nil {
		return nil, err
	}
	m.led = led
	if led.instance != opts.InstanceID {
		// E.g. a ledger from before buffer instance ids (ClientTokens
		// used the agent id, which replicas may share): new intents use
		// this id from now on, so the warning is given once.
		m.log.Warn("ledger was written by another instance id; pending intents keep their original ClientTokens",
			zap.String("ledger_instance", led.instance), zap.String("instance", opts.InstanceID))
		led.instance = opts.InstanceID
		existed = false
	}
	if !existed {
		if err := m.saveLocked(); err != nil {
			return nil, err
		}
	}
	m.metrics.notSubscribed.Set(float64(len(led.notSubscribed)))
	m.updatePendingLocked()
	return m, nil
}

// NewClient builds a Marketplace Metering client with the default AWS
// credential chain (environment, shared config and SSO, IRSA web
// identity, ECS task role, EC2 instance role) in cfg.Region, talking to
// cfg.Endpoint when set (e.g. the emulator).
func NewClient(ctx context.Context, cfg conf.Metering) (*mm.Client, error) {
	var loadOpts []func(*config.LoadOptions) error
	if cfg.Region != "" {
		loadOpts = append(loadOpts, config.WithRegion(cfg.Region))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("metering: load AWS config: %w", err)
	}
	return mm.NewFromConfig(awsCfg, func(o *mm.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	}), nil
}

// Counted reports whether segment seq is counted (durably, unless it was
// merged since the last ledger write). The agent's Pending uses it: an
// hour closed on such counts is written, with them, before it is reported.
func (m *Meter) Counted(seq uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.led.counted[seq]
	return ok
}

// Count adds the records of a sealed segment to the ledger, once per
// segment sequence: counting a segment again (after a crash before its
// Ack) changes nothing. When Count returns nil the segment's usage and its
// sequence are on disk together. Records whose meterApiName has no
// dimension mapping are counted in metrics and not billed.
func (m *Meter) Count(ctx context.Context, seg *buffer.Segment) error {
	c := m.BeginCount(seg.Seq)
	defer c.Close()
	if c.Done() {
		return c.Commit(ctx)
	}
	err := seg.Frames(func(f buffer.Frame) error {
		c.Add(f)
		return nil
	})
	if err != nil {
		return fmt.Errorf("metering: count segment %d: %w", seg.Seq, err)
	}
	return c.Commit(ctx)
}

// Counting is the count of one segment fed by a pass over its frames that
// the caller makes anyway (the encoder's), so a segment is read once.
// BeginCount, Add for every frame, then Commit (retry it until nil), then
// Close. Like Count it is idempotent per segment sequence.
type Counting struct {
	m    *Meter
	seq  uint64
	sc   *scanner
	done bool // already counted: Add does nothing, Commit only makes it durable
	// skip is how many of the next record frames the last merged aggregate
	// frame already counted.
	skip int
}

// BeginCount starts counting segment seq.
func (m *Meter) BeginCount(seq uint64) *Counting {
	c := &Counting{m: m, seq: seq}
	m.mu.Lock()
	_, c.done = m.led.counted[seq]
	m.mu.Unlock()
	if !c.done {
		c.sc = m.scanners.Get().(*scanner)
		c.sc.reset()
	}
	return c
}

// Done reports whether the segment was counted before BeginCount.
func (c *Counting) Done() bool { return c.done }

// Add counts one frame: an aggregate frame of the meter's key shape
// counts the records that follow it in its batch, other records are
// scanned. Dead letters are not usage.
func (c *Counting) Add(f buffer.Frame) {
	if c.sc == nil {
		return
	}
	switch f.Type {
	case buffer.FrameAggregate:
		// A batch's records follow its aggregate before any other
		// batch's frames, so skip is 0 here; if it were not, merging
		// would count records twice, so the frame is left out.
		if c.skip == 0 {
			if n, ok := c.sc.mergeAggregate(f.Data); ok {
				c.skip = n
			}
		}
	case buffer.FrameRecord:
		if c.skip > 0 {
			c.skip--
			return
		}
		c.sc.rescanned++
		c.sc.add(f.Time, f.Data)
	}
}

// Commit merges the counted records into the ledger and writes it with the
// segment's sequence. When it returns nil the count is durable; on error
// call it again (a merged but unwritten count is only written, never added
// twice).
func (c *Counting) Commit(ctx context.Context) error {
	if err := c.Merge(ctx); err != nil {
		return err
	}
	if err := c.m.Sync(); err != nil {
		return fmt.Errorf("metering: count segment %d: %w", c.seq, err)
	}
	c.m.crash("count-saved")
	return nil
}

// Merge adds the counted records to the ledger in memory, marking the
// segment counted. The count becomes durable with the next ledger write
// (Sync, or any write that comes first), which carries every count merged
// before it: a caller that acknowledges segments only after a Sync can
// group many segments into one fsync'd write. A crash before the write
// loses the counts and their "counted" marks together, so the segments,
// still unacknowledged, are counted again.
func (c *Counting) Merge(ctx context.Context) error {
	m := c.m
	if err := ctx.Err(); err != nil {
		return err
	}
	gone := m.goneSegments()
	m.crash("count-scanned")
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, done := m.led.counted[c.seq]; done || c.sc == nil {
		return nil
	}
	m.forgetLocked(gone)
	m.mergeLocked(c.seq, c.sc) // marks the ledger dirty
	return nil
}

// Sync writes the ledger if it holds changes not yet durable: merged
// counts, answers not yet saved, or an earlier failed write.
func (m *Meter) Sync() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.flushLocked()
}

// Close returns the Counting's scratch space; it must not be used after.
func (c *Counting) Close() {
	if c.sc != nil {
		c.m.scanners.Put(c.sc)
		c.sc = nil
	}
}

// mergeLocked adds a scanned segment to the ledger and marks it counted.
func (m *Meter) mergeLocked(seq uint64, sc *scanner) {
	var records, unmapped, badCustomer int64
	unmappedAPIs := map[string]int64{}
	type lateKey struct {
		key  seriesKey
		hour int64
	}
	late := map[lateKey]int64{}
	now := m.now()
	// Hours at or before tooOld ended max_carry ago or earlier: not billed.
	tooOld := int64(math.MinInt64)
	if m.set.maxCarry > 0 {
		tooOld = floorHour(now.Add(-m.set.maxCarry)) - hourSeconds
	}
	type oldUsage struct {
		first, last    int64
		nanos, records int64
	}
	old := map[seriesKey]*oldUsage{}
	for i := range sc.entries {
		e := &sc.entries[i]
		d, ok := m.set.dims[e.api]
		if !ok {
			unmapped += e.records
			unmappedAPIs[e.api] += e.records
			continue
		}
		if m.set.mode == ModeBatchMeterUsage && !m.validCustomer(e.customer) {
			badCustomer += e.records
			m.log.Debug("record not billable: customer id", zap.String("customer", e.customer), zap.Int64("records", e.records))
			continue
		}
		records += e.records
		key := seriesKey{dimension: d.name, customer: e.customer}
		if m.set.mode == ModeBatchMeterUsage {
			key.license = m.set.licenseConst
			if m.set.licenseDim != "" {
				key.license = e.license
			}
		}
		if e.hour <= tooOld {
			nanos := d.factor.apply(e.nanos)
			m.unbilledLocked(key, e.hour, unbilledMaxCarry, nanos, e.records, now)
			o := old[key]
			if o == nil {
				o = &oldUsage{first: e.hour, last: e.hour}
				old[key] = o
			}
			o.first, o.last = min(o.first, e.hour), max(o.last, e.hour)
			o.nanos = addSat(o.nanos, nanos)
			o.records += e.records
			continue
		}
		var tags []tag
		for j, name := range m.set.tags {
			if e.present&(1<<j) != 0 {
				if v := sanitizeTagValue(e.tags[j]); v != "" {
					tags = append(tags, tag{Key: name, Value: v})
				}
			}
		}
		s := m.led.seriesFor(key)
		h := e.hour
		if s.hasIntent(h) {
			h = s.firstFree(h + hourSeconds)
			lk := lateKey{key, e.hour}
			if _, seen := late[lk]; !seen {
				late[lk] = h
				m.metrics.hoursCarried.WithLabelValues("late").Inc()
				m.sum.Carried++
			}
		}
		s.addUsage(h, tags, d.factor.apply(e.nanos), e.records)
	}
	m.led.counted[seq] = struct{}{}
	m.dirty = true
	for lk, to := range late {
		m.log.Info("late records for an already reported hour go to the next open hour",
			zap.String("dimension", lk.key.dimension), zap.String("customer", lk.key.customer),
			zap.Time("hour", hourTime(lk.hour)), zap.Time("to", hourTime(to)), zap.Uint64("segment", seq))
	}
	for _, k := range slices.SortedFunc(maps.Keys(old), compareKeys) {
		o := old[k]
		m.log.Warn("usage older than metering.max_carry is not billed; recorded as unbilled in the ledger",
			zap.String("dimension", k.dimension), zap.String("customer", k.customer),
			zap.Time("from", hourTime(o.first)), zap.Time("through", hourTime(o.last)),
			zap.Int64("records", o.records), zap.String("quantity", FormatQuantity(o.nanos)),
			zap.Duration("max_carry", m.set.maxCarry), zap.Uint64("segment", seq))
	}
	for api, n := range unmappedAPIs {
		m.log.Debug("records with an unmapped meterApiName are not billed", zap.String("meterApiName", api), zap.Int64("records", n), zap.Uint64("segment", seq))
	}
	m.metrics.segmentsCounted.Inc()
	if badCustomer > 0 {
		m.metrics.recordsUnbilled.WithLabelValues("customer").Add(float64(badCustomer))
	}
	if sc.invalid > 0 {
		m.metrics.recordsUnbilled.WithLabelValues("value").Add(float64(sc.invalid))
		m.log.Warn("records with an unusable meterValue are not billed", zap.Int64("records", sc.invalid), zap.Uint64("segment", seq))
	}
	m.sum.RecordsCounted += records
	m.sum.RecordsUnmapped += unmapped
	m.sum.RecordsRescanned += sc.rescanned
	m.sum.RecordsUnbillable += badCustomer + sc.invalid
	m.updatePendingLocked()
}

// unbilledLocked records usage that is counted but not billed.
func (m *Meter) unbilledLocked(key seriesKey, h int64, reason string, nanos, records int64, now time.Time) {
	k := unbilledKey{key: key, hour: h, reason: reason}
	u := m.led.unbilled[k]
	if u == nil {
		u = &unbilledUsage{Customer: key.customer, License: key.license, Dimension: key.dimension,
			Hour: hourTime(h), Reason: reason, First: now.UTC()}
		m.led.unbilled[k] = u
	}
	u.Nanos = addSat(u.Nanos, nanos)
	u.Records += records
	u.Last = now.UTC()
	m.metrics.usageUnbilled.WithLabelValues(reason).Add(float64(records))
	m.sum.UnbilledRecords += records
	m.sum.Unbilled[key.dimension] = addSat(m.sum.Unbilled[key.dimension], nanos)
}

// compareKeys orders series keys for logs.
func compareKeys(a, b seriesKey) int {
	return cmp.Or(strings.Compare(a.dimension, b.dimension), strings.Compare(a.customer, b.customer), strings.Compare(a.license, b.license))
}

// FormatQuantity renders usage in billionths of a unit (Summary.Unbilled)
// as an exact decimal.
func FormatQuantity(n int64) string {
	s := strconv.FormatInt(n/nanosPerUnit, 10)
	if f := n % nanosPerUnit; f != 0 {
		s += "." + strings.TrimRight(fmt.Sprintf("%09d", f), "0")
	}
	return s
}

// validCustomer checks a batch-mode customer id against customer_id_type.
func (m *Meter) validCustomer(c string) bool {
	if c == "" || len(c) > 255 {
		return false
	}
	if m.set.accountIDs {
		return accountIDPattern.MatchString(c)
	}
	return true
}

// goneSegments returns the counted sequences whose segments no longer
// exist (Options.Live), asked without holding the lock.
func (m *Meter) goneSegments() []uint64 {
	if m.opts.Live == nil {
		return nil
	}
	m.mu.Lock()
	seqs := make([]uint64, 0, len(m.led.counted))
	for seq := range m.led.counted {
		seqs = append(seqs, seq)
	}
	m.mu.Unlock()
	var gone []uint64
	for _, seq := range seqs {
		if !m.opts.Live(seq) {
			gone = append(gone, seq)
		}
	}
	return gone
}

// forgetLocked drops counted sequences of acknowledged segments; they are
// written out with the next ledger write.
func (m *Meter) forgetLocked(gone []uint64) bool {
	for _, seq := range gone {
		delete(m.led.counted, seq)
	}
	return len(gone) > 0
}

// saveLocked writes the ledger. On failure the ledger stays dirty.
func (m *Meter) saveLocked() error {
	data, err := m.led.encode()
	if err == nil {
		err = fsutil.WriteFileAtomic(m.opts.Dir, ledgerName, data, 0o644, func() { m.crash("ledger-before-rename") })
	}
	if err != nil {
		m.dirty = true
		m.metrics.ledgerWriteFails.Inc()
		return fmt.Errorf("metering: write ledger: %w", err)
	}
	m.dirty = false
	m.savedAt = time.Now()
	return nil
}

// flushLocked writes the ledger if it holds changes not yet written
// (merged counts, grouped answers, or a failed write).
func (m *Meter) flushLocked() error {
	if !m.dirty {
		return nil
	}
	return m.saveLocked()
}

// updatePendingLocked sets the hours_pending gauge and the oldest pending
// hour.
func (m *Meter) updatePendingLocked() {
	n := 0
	oldest := int64(0)
	note := func(h int64) {
		if oldest == 0 || h < oldest {
			oldest = h
		}
	}
	for _, s := range m.led.series {
		n += len(s.open)
		for h := range s.open {
			note(h)
		}
		for _, in := range s.intents {
			if in.Status == statusPending {
				n++
				note(in.Hour.Unix())
			}
		}
	}
	m.sum.Pending = n
	m.oldestPending = oldest
}

// Summary returns what this Meter did since New.
func (m *Meter) Summary() Summary {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sum
	s.Quantities = maps.Clone(m.sum.Quantities)
	s.Unbilled = maps.Clone(m.sum.Unbilled)
	return s
}

func (m *Meter) crash(point string) {
	if m.opts.crashPoint != nil {
		m.opts.crashPoint(point)
	}
}
