package shared

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	mm "github.com/aws/aws-sdk-go-v2/service/marketplacemetering"
	"github.com/aws/aws-sdk-go-v2/service/marketplacemetering/types"
	"github.com/aws/smithy-go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/metership/metership/internal/ctxtime"
	"github.com/metership/metership/internal/retry"
	"github.com/metership/metership/metering"
)

// Sentinel errors.
var (
	// ErrInvalidConfig is returned by New, wrapped with what is wrong.
	ErrInvalidConfig = errors.New("shared: invalid configuration")
	// ErrNotSettled is returned by Wait when the agent's closed hours are
	// not all claimed (and its partials merged or carried) in time.
	ErrNotSettled = errors.New("shared: hours not settled")
)

const (
	maxBatchRecords = 25
	// lookback bounds the claims an agent reads each step: the window
	// plus a day, beyond which nothing can be sent or is still pending.
	lookbackExtra = 24 * time.Hour
)

var agentIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// Config configures an Agent.
type Config struct {
	Store Store
	// Dir holds the agent's journal (next to the metering ledger).
	Dir string
	// Agent is this replica's id: stable per buffer across restarts,
	// unique across replicas (the buffer's agent id).
	Agent   string
	Product string
	// AccountIDs: customers are CustomerAWSAccountId, not
	// CustomerIdentifier (metering.customer_id_type aws_account_id).
	AccountIDs bool
	// Allocate: metering.allocation_tags are set; records carry
	// UsageAllocations.
	Allocate bool
	// Window is the API's window (metering.window); Lateness and
	// MergeGrace: an hour H is claimed once every live agent wrote its
	// partial and now >= H+1h+Lateness, or once now >= H+1h+Lateness+
	// MergeGrace regardless.
	Window, Lateness, MergeGrace time.Duration
	// DryRun logs the claims' records instead of sending them.
	DryRun     bool
	Client     metering.API
	Logger     *zap.Logger
	Registerer prometheus.Registerer // nil: no metrics exported
	Now        func() time.Time
	// Tick is how often Run steps and the heartbeat is rewritten;
	// default 1m. An agent whose heartbeat is older than 3 ticks is not
	// waited for.
	Tick time.Duration
	// Stagger is how long the agent ranked r among an hour's agents waits
	// (r times) before claiming or sending the hour itself: one agent
	// normally does the work, another takes over when it is gone.
	// Default Tick; 0 keeps the default, negative means no wait (tests).
	Stagger     time.Duration
	CallTimeout time.Duration // default 30s
	// MaxRetryElapsed bounds one sending pass's retries; default 5m.
	MaxRetryElapsed time.Duration
	// Backoff between retries: Initial doubling up to Max, jittered.
	BackoffInitial, BackoffMax time.Duration

	// crash, in tests, is called at named points so a child process can
	// SIGKILL itself there.
	crash func(point string)
}

// Agent is one replica's side of the shared protocol: it writes its
// partials and heartbeat, claims ready hours, sends claims, and carries
// its own late partials. Every step is idempotent; Hand and Step are safe
// for concurrent use.
type Agent struct {
	cfg Config
	log *zap.Logger

	stepMu sync.Mutex // one Step at a time
	// mu guards j and the fields below.
	mu        sync.Mutex
	j         *journal
	upSince   time.Time
	beatAt    time.Time
	beatState string // what the last heartbeat said of NextHour, Cut, Open
	// catchingUp: the agent's input is not all read yet (CatchUp until
	// the first Step); its heartbeat tells claimers to wait for it.
	catchingUp bool
	latest     time.Time // latest claim hour seen
	sum        Summary
	stepErrors int
	// stopped: Stop found nothing unwritten; heartbeats say so.
	stopped bool
	// conflicts counts records of this agent's sends that AWS answered
	// DuplicateRecord (it holds another quantity).
	conflicts int
	// liveReplicas and stalledReplicas are what the last watchPeers saw.
	liveReplicas, stalledReplicas int

	// peers caches the other replicas' stale heartbeats, by agent id, so
	// each is read once, and watchedAt is when watchPeers last listed
	// them (used by Step only, under stepMu).
	peers     map[string]peerBeat
	watchedAt time.Time
}

// peerBeat is what a stale heartbeat said, as of its modification time.
type peerBeat struct {
	modified time.Time
	stopped  bool
}

// Summary is what this agent did since New, for the CLI.
type Summary struct {
	PartialsWritten int
	PartialsLate    int // carried into a later partial
	HoursClaimed    int // claims this agent made
	// RecordsSent and Quantities count the records this agent sent that
	// AWS accepted (another replica may have sent the same claim too).
	RecordsSent int
	Quantities  map[string]int64
}

// Summary returns what this agent did since New.
func (a *Agent) Summary() Summary {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.sum
	s.Quantities = maps.Clone(a.sum.Quantities)
	return s
}

// New opens (or creates) the agent's journal in cfg.Dir.
func New(cfg Config) (*Agent, error) {
	switch {
	case cfg.Store == nil:
		return nil, fmt.Errorf("%w: no store", ErrInvalidConfig)
	case cfg.Dir == "":
		return nil, fmt.Errorf("%w: Dir is empty", ErrInvalidConfig)
	case !agentIDPattern.MatchString(cfg.Agent):
		return nil, fmt.Errorf("%w: agent id %q: use 1-128 of A-Z a-z 0-9 . _ -", ErrInvalidConfig, cfg.Agent)
	case cfg.Product == "" || strings.ContainsAny(cfg.Product, "/"):
		return nil, fmt.Errorf("%w: product code %q", ErrInvalidConfig, cfg.Product)
	case cfg.Client == nil:
		return nil, fmt.Errorf("%w: no Marketplace client", ErrInvalidConfig)
	case cfg.Window <= 0:
		return nil, fmt.Errorf("%w: window must be positive", ErrInvalidConfig)
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Tick <= 0 {
		cfg.Tick = time.Minute
	}
	if cfg.Stagger == 0 {
		cfg.Stagger = cfg.Tick
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 30 * time.Second
	}
	if cfg.MaxRetryElapsed <= 0 {
		cfg.MaxRetryElapsed = 5 * time.Minute
	}
	if cfg.BackoffInitial <= 0 {
		cfg.BackoffInitial = time.Second
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = time.Minute
	}
	cfg.BackoffMax = max(cfg.BackoffMax, cfg.BackoffInitial)
	j, err := loadJournal(cfg.Dir, cfg.Agent, cfg.Product, cfg.Now())
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: cfg.Logger.With(zap.String("component", "metering-shared"), zap.String("agent", cfg.Agent)), j: j, upSince: cfg.Now().UTC()}
	if err := a.registerMetrics(cfg.Registerer); err != nil {
		return nil, fmt.Errorf("shared: register metrics: %w", err)
	}
	return a, nil
}

func (a *Agent) crash(point string) {
	if a.cfg.crash != nil {
		a.cfg.crash(point)
	}
}

// Hand takes closed-hour usage from the ledger (metering.SharedState). A
// usage goes into the partial of its hour, or, when this agent's partial
// of that hour is already written, into its next open hour.
func (a *Agent) Hand(_ context.Context, closedBefore time.Time, usage []metering.HourUsage) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	changed := false
	// The ledger marks a hand-over's intents handed (durably) before it
	// makes the next one, so only the last hand-over can come again
	// (after a crash between the two writes): its IDs are all Hand keeps.
	taken := make(map[string]time.Time, len(usage))
	for _, u := range usage {
		h := u.Hour.UTC().Truncate(time.Hour)
		taken[u.ID] = h
		if _, ok := a.j.Taken[u.ID]; ok {
			continue
		}
		a.j.addOpen(a.j.target(h), []Entry{{Series: Series{Customer: u.Customer, License: u.License, Dimension: u.Dimension}, Buckets: u.Buckets}})
		changed = true
	}
	if len(taken) > 0 || len(a.j.Taken) > 0 {
		a.j.Taken = taken
		changed = true
	}
	if closedBefore.After(a.j.Cut) {
		a.j.Cut = closedBefore.UTC()
		changed = true
	}
	if !changed {
		return nil
	}
	return a.j.save(a.cfg.Dir)
}

// CatchUp is for a replica that reads a backlog before it reports (a
// `ship` of old files): until its first Step it writes only its heartbeat,
// every Tick, saying it may still write any hour, so the others wait for
// its partials (up to merge_grace) instead of claiming hours early. Its
// ledger may hand usage meanwhile; nothing is published before Step.
func (a *Agent) CatchUp(ctx context.Context) error {
	a.mu.Lock()
	a.catchingUp = true
	a.mu.Unlock()
	t := time.NewTicker(a.cfg.Tick)
	defer t.Stop()
	for {
		a.stepMu.Lock()
		a.mu.Lock()
		on := a.catchingUp
		a.beatAt = time.Time{}
		a.mu.Unlock()
		var err error
		if on {
			err = a.heartbeat(ctx)
		}
		a.stepMu.Unlock()
		if !on {
			return nil
		}
		if err != nil && ctx.Err() == nil {
			a.log.Warn("heartbeat failed; retried next tick", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Run steps every Tick until ctx is done; errors are logged and retried.
func (a *Agent) Run(ctx context.Context) error {
	t := time.NewTicker(a.cfg.Tick)
	defer t.Stop()
	for {
		if err := a.Step(ctx); err != nil && ctx.Err() == nil {
			a.mu.Lock()
			a.stepErrors++
			a.mu.Unlock()
			a.log.Warn("shared metering step failed; retried next tick", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Step does everything due now: heartbeat, this agent's partials of
// closed hours, its late partials' carry, then claims of ready hours and
// the sending of claims without results.
func (a *Agent) Step(ctx context.Context) error {
	a.stepMu.Lock()
	defer a.stepMu.Unlock()
	a.mu.Lock()
	a.catchingUp = false
	a.mu.Unlock()
	var errs []error
	if err := a.heartbeat(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := a.writePartials(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := a.heartbeat(ctx); err != nil {
		errs = append(errs, err)
	}
	// Every 5 ticks: a heartbeat is stale after 3, and the alert on it
	// need not cost a LIST every tick.
	if now := a.cfg.Now(); a.watchedAt.IsZero() || now.Sub(a.watchedAt) >= 5*a.cfg.Tick {
		if err := a.watchPeers(ctx); err != nil {
			errs = append(errs, err)
		} else {
			a.watchedAt = now
		}
	}
	claims, err := a.listClaims(ctx)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	mine, err := a.claimReady(ctx, &claims)
	if err != nil {
		errs = append(errs, err)
	}
	if err := a.sendPending(ctx, claims, mine); err != nil {
		errs = append(errs, err)
	}
	if err := a.settleOwn(ctx, claims); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Settled reports whether every hour this agent closed has its partial
// written, and merged by a claim that AWS has answered, or carried into a
// later partial.
func (a *Agent) Settled() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.unsettledLocked() == 0
}

// unsettledLocked counts the closed hours not settled yet.
func (a *Agent) unsettledLocked() int {
	n := 0
	if a.j.NextHour.Before(a.j.Cut) {
		n += int(a.j.Cut.Sub(a.j.NextHour) / time.Hour)
	}
	for name := range a.j.Open {
		if h, ok := parseHour(name); ok && h.Before(a.j.Cut) && h.Before(a.j.NextHour) {
			n++
		}
	}
	for _, w := range a.j.Written {
		if w.State == stateWritten || w.State == stateMerged && !w.Answered {
			n++
		}
	}
	return n
}

// Wait steps until Settled or ctx is done (`ship` waits so, bounded by
// --timeout): each closed hour it contributed to is claimed, its partial
// merged (and the claim answered) or carried.
func (a *Agent) Wait(ctx context.Context, every time.Duration) error {
	for {
		err := a.Step(ctx)
		if a.Settled() {
			return nil
		}
		if !ctxtime.Sleep(ctx, every) {
			if err == nil {
				err = ctx.Err()
			}
			return fmt.Errorf("%w: %w", ErrNotSettled, err)
		}
	}
}

// heartbeat rewrites agents/<agent>.json once per Tick.
func (a *Agent) heartbeat(ctx context.Context) error {
	now := a.cfg.Now()
	a.mu.Lock()
	hb := Heartbeat{Format: heartbeatFormat, Agent: a.cfg.Agent, Product: a.cfg.Product,
		Started: a.j.Started, UpSince: a.upSince, LastSeen: now.UTC(), OldestOpen: a.j.NextHour, ClosedBefore: a.j.Cut}
	if a.catchingUp {
		hb.ClosedBefore = time.Time{}
	}
	hb.Stopped = a.stopped
	for name := range a.j.Open {
		if h, ok := parseHour(name); ok && h.Before(a.j.NextHour) {
			hb.OpenHours = append(hb.OpenHours, h)
		}
	}
	sort.Slice(hb.OpenHours, func(i, j int) bool { return hb.OpenHours[i].Before(hb.OpenHours[j]) })
	state := fmt.Sprint(hb.OldestOpen, hb.ClosedBefore, hb.OpenHours, hb.Stopped)
	// Due every tick, and at once when what claimers wait on changed.
	due := now.Sub(a.beatAt) >= a.cfg.Tick || a.beatAt.IsZero() || state != a.beatState
	a.mu.Unlock()
	if !due {
		return nil
	}
	if err := a.cfg.Store.Put(ctx, heartbeatKey(a.cfg.Agent), encode(hb)); err != nil {
		return err
	}
	a.mu.Lock()
	a.beatAt, a.beatState = now, state
	a.mu.Unlock()
	return nil
}

// Stop is called after the last Step of a replica that stops: with no
// usage left unwritten, its heartbeat says it stopped, so the others do
// not count it in metership_metering_shared_replicas_stalled. With usage
// unwritten it changes nothing: that replica must come back.
func (a *Agent) Stop(ctx context.Context) error {
	a.mu.Lock()
	if len(a.j.Open) > 0 {
		a.mu.Unlock()
		return nil
	}
	a.stopped = true
	a.mu.Unlock()
	return a.heartbeat(ctx)
}

// watchPeers counts, from the heartbeats, the replicas live now (this one
// included) and those whose heartbeat stopped within the lookback without
// a clean Stop: one that died, was killed or lost the store, whose
// unwritten usage waits in its buffer.dir. A stale heartbeat is read once
// per change.
func (a *Agent) watchPeers(ctx context.Context) error {
	beats, err := a.cfg.Store.List(ctx, heartbeatPrefix(), "")
	if err != nil {
		return err
	}
	if a.peers == nil {
		a.peers = map[string]peerBeat{}
	}
	live, stalled := 1, 0
	seen := map[string]bool{}
	for _, o := range beats {
		id := strings.TrimSuffix(strings.TrimPrefix(o.Key, heartbeatPrefix()), ".json")
		if id == a.cfg.Agent {
			continue
		}
		if a.recent(o) {
			live++
			continue
		}
		if time.Since(o.Modified) > a.cfg.Window+lookbackExtra {
			continue // gone long ago: nothing it held can be billed now
		}
		seen[id] = true
		p, ok := a.peers[id]
		if !ok || !p.modified.Equal(o.Modified) {
			body, err := a.cfg.Store.Get(ctx, o.Key)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			hb, err := decode[Heartbeat](body, heartbeatFormat)
			if err != nil {
				a.log.Warn("unreadable heartbeat", zap.String("key", o.Key), zap.Error(err))
				continue
			}
			p = peerBeat{modified: o.Modified, stopped: hb.Stopped}
			a.peers[id] = p
		}
		if !p.stopped {
			stalled++
		}
	}
	for id := range a.peers {
		if !seen[id] {
			delete(a.peers, id)
		}
	}
	a.mu.Lock()
	a.liveReplicas, a.stalledReplicas = live, stalled
	a.mu.Unlock()
	return nil
}

// writePartials writes this agent's partial of every hour it closed and
// has not written yet, in hour order: hours with usage it never wrote
// (a new agent's backlog), then each hour from NextHour up to the cut. An
// empty hour is written too (so claimers need not wait for it) unless it
// is claimed already.
func (a *Agent) writePartials(ctx context.Context) error {
	a.mu.Lock()
	var backfill []time.Time
	for name := range a.j.Open {
		if h, ok := parseHour(name); ok && h.Before(a.j.NextHour) && h.Before(a.j.Cut) {
			backfill = append(backfill, h)
		}
	}
	a.mu.Unlock()
	sort.Slice(backfill, func(i, j int) bool { return backfill[i].Before(backfill[j]) })
	for _, h := range backfill {
		if err := a.writePartial(ctx, h, false); err != nil {
			return err
		}
	}
	for {
		a.mu.Lock()
		h, cut := a.j.NextHour, a.j.Cut
		a.mu.Unlock()
		if !h.Before(cut) {
			return nil
		}
		if err := a.writePartial(ctx, h, true); err != nil {
			return err
		}
	}
}

// writePartial writes the partial of hour h; frontier: h is NextHour,
// which then moves on.
func (a *Agent) writePartial(ctx context.Context, h time.Time, frontier bool) error {
	a.mu.Lock()
	entries := slices.Clone(a.j.Open[hourName(h)])
	carried := slices.Clone(a.j.CarriedFrom[hourName(h)])
	a.mu.Unlock()

	p := Partial{Format: partialFormat, Product: a.cfg.Product, Agent: a.cfg.Agent, Hour: h,
		Written: a.cfg.Now().UTC(), Entries: entries, CarriedFrom: carried}
	if p.Entries == nil {
		p.Entries = []Entry{}
	}
	key := partialKey(a.cfg.Product, h, a.cfg.Agent)
	var sum string
	var written []Entry
	skip := false
	a.mu.Lock()
	laterClaimed := a.latest.After(h)
	a.mu.Unlock()
	if len(entries) == 0 && len(carried) == 0 {
		// Nothing to say about an hour claimed already (or never to be).
		if laterClaimed {
			skip = true
		} else if _, err := a.cfg.Store.Get(ctx, claimKey(a.cfg.Product, h)); err == nil {
			skip = true
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	if !skip {
		body := encode(p)
		created, err := a.cfg.Store.Create(ctx, key, body)
		if err != nil {
			return err
		}
		a.crash("partial-created")
		sum, written = sha(body), entries
		if !created {
			// Written before a crash lost the journal's record of it,
			// perhaps with less usage than the journal now has for the
			// hour: what it lacks goes to a later partial.
			old, err := a.cfg.Store.Get(ctx, key)
			if err != nil {
				return err
			}
			op, err := decode[Partial](old, partialFormat)
			if err != nil {
				return fmt.Errorf("shared: %s: %w", key, err)
			}
			sum, written = sha(old), op.Entries
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	rest := subtractEntries(a.j.Open[hourName(h)], written)
	delete(a.j.Open, hourName(h))
	delete(a.j.CarriedFrom, hourName(h))
	if !skip {
		a.j.Written = append(a.j.Written, &writtenPartial{Hour: h, SHA256: sum, State: stateWritten, Entries: written})
		a.sum.PartialsWritten++
	}
	if frontier {
		a.j.NextHour = h.Add(time.Hour)
	}
	a.j.addOpen(a.j.target(h.Add(time.Hour)), rest)
	if err := a.j.save(a.cfg.Dir); err != nil {
		return err
	}
	if !skip {
		a.log.Debug("partial written", zap.Time("hour", h), zap.Int("series", len(written)))
	}
	return nil
}

// claimList is what one listing of the product's claims found.
type claimList struct {
	claimed  map[time.Time]bool
	modified map[time.Time]time.Time // when each claim was written
	results  map[time.Time]bool
	expired  map[time.Time]bool
	latest   time.Time // zero: none in the lookback
}

func (a *Agent) lookbackStart() time.Time {
	return a.cfg.Now().Add(-a.cfg.Window - lookbackExtra).UTC().Truncate(time.Hour)
}

func (a *Agent) listClaims(ctx context.Context) (claimList, error) {
	cl := claimList{claimed: map[time.Time]bool{}, modified: map[time.Time]time.Time{}, results: map[time.Time]bool{}, expired: map[time.Time]bool{}}
	prefix := claimPrefix(a.cfg.Product)
	objs, err := a.cfg.Store.List(ctx, prefix, claimKey(a.cfg.Product, a.lookbackStart().Add(-time.Hour)))
	if err != nil {
		return cl, err
	}
	for _, o := range objs {
		name := strings.TrimPrefix(o.Key, prefix)
		if hs, ok := strings.CutSuffix(name, ".result.json"); ok {
			if h, ok := parseHour(hs); ok {
				cl.results[h] = true
			}
			continue
		}
		if hs, ok := strings.CutSuffix(name, ".expired.json"); ok {
			if h, ok := parseHour(hs); ok {
				cl.expired[h] = true
			}
			continue
		}
		if h, ok := parseHour(strings.TrimSuffix(name, ".json")); ok {
			cl.claimed[h] = true
			cl.modified[h] = o.Modified
			if h.After(cl.latest) {
				cl.latest = h
			}
		}
	}
	a.mu.Lock()
	if cl.latest.After(a.latest) {
		a.latest = cl.latest
	}
	a.mu.Unlock()
	return cl, nil
}

// claimReady claims, in hour order, each unclaimed closed hour that is
// ready, stopping at the first that is not: claims are contiguous.
//
// It returns the claims this agent made: it sends them at once.
func (a *Agent) claimReady(ctx context.Context, cl *claimList) (map[time.Time]*Claim, error) {
	now := a.cfg.Now()
	closed := now.Add(-a.cfg.Lateness).UTC().Truncate(time.Hour) // hours before it are closed
	mine := map[time.Time]*Claim{}
	var h time.Time
	if !cl.latest.IsZero() {
		h = cl.latest.Add(time.Hour)
	} else {
		first, ok, err := a.firstPartialHour(ctx)
		if err != nil || !ok {
			return mine, err
		}
		h = first
	}
	for ; h.Before(closed); h = h.Add(time.Hour) {
		c, created, err := a.tryClaim(ctx, h, now, *cl)
		if err != nil || c == nil {
			return mine, err
		}
		if created {
			mine[h] = c
		}
		cl.claimed[h] = true
		cl.modified[h] = c.Created
		cl.latest = h
	}
	return mine, nil
}

// firstPartialHour is the oldest hour in the lookback with partials, where
// the first claim of a product starts.
func (a *Agent) firstPartialHour(ctx context.Context) (time.Time, bool, error) {
	prefix := "partials/" + a.cfg.Product + "/"
	objs, err := a.cfg.Store.List(ctx, prefix, prefix+a.lookbackStart().Add(-time.Hour).Format(hourLayout))
	if err != nil {
		return time.Time{}, false, err
	}
	for _, o := range objs {
		hs, _, _ := strings.Cut(strings.TrimPrefix(o.Key, prefix), "/")
		if h, ok := parseHour(hs); ok {
			return h, true, nil
		}
	}
	return time.Time{}, false, nil
}

// rank orders agents per hour by a hash, so each hour has one agent that
// claims and sends first and a fixed order of stand-ins.
func rank(h time.Time, self string, agents []string) int {
	key := func(id string) uint64 {
		f := fnv.New64a()
		f.Write([]byte(h.UTC().Format(hourLayout) + "/" + id))
		return f.Sum64()
	}
	mine := key(self)
	r := 0
	for _, id := range agents {
		if id != self && (key(id) < mine || key(id) == mine && id < self) {
			r++
		}
	}
	return r
}

// tryClaim writes the claim of hour h if it is ready; nil when it is not
// (yet), else the claim that stands (this agent's or another's).
func (a *Agent) tryClaim(ctx context.Context, h, now time.Time, cl claimList) (c *Claim, created bool, err error) {
	closedAt := h.Add(time.Hour + a.cfg.Lateness)
	objs, err := a.cfg.Store.List(ctx, partialPrefix(a.cfg.Product, h), "")
	if err != nil {
		return nil, false, err
	}
	have := map[string]string{}
	readyAt := closedAt // when the last partial came, at the latest
	for _, o := range objs {
		have[agentFromPartialKey(o.Key)] = o.Key
		readyAt = laterOf(readyAt, o.Modified)
	}
	beats, err := a.cfg.Store.List(ctx, heartbeatPrefix(), "")
	if err != nil {
		return nil, false, err
	}
	// Only the first ranked live agent goes on at once; the others only
	// once it has had a stagger per rank, so the merge (a GET of every
	// partial) is normally made by one agent, not by all.
	r := rank(h, a.cfg.Agent, a.liveIDs(beats))
	staggered := func(from time.Time) bool {
		return a.cfg.Stagger > 0 && now.Before(from.Add(time.Duration(r)*a.cfg.Stagger))
	}
	if staggered(closedAt) {
		return nil, false, nil
	}
	waiting, gaveUp, err := a.waitingFor(ctx, h, now, closedAt, have, beats)
	if err != nil {
		return nil, false, err
	}
	if len(waiting) > 0 {
		a.log.Debug("hour not claimed yet: waiting for partials", zap.Time("hour", h), zap.Strings("agents", waiting))
		return nil, false, nil
	}
	if staggered(laterOf(readyAt, gaveUp)) {
		return nil, false, nil
	}
	var prev *Claim
	if cl.claimed[h.Add(-time.Hour)] {
		if prev, err = a.readClaim(ctx, h.Add(-time.Hour)); err != nil {
			return nil, false, err
		}
	}
	in := decideInput{product: a.cfg.Product, hour: h, claimer: a.cfg.Agent, accountIDs: a.cfg.AccountIDs,
		allocate: a.cfg.Allocate, window: a.cfg.Window, lateness: a.cfg.Lateness, now: now, prev: prev,
		keepFrom: a.lookbackStart().Add(-2 * time.Hour)}
	for _, g := range sortedHours(cl.expired) {
		if !g.Before(h) || prev != nil && slices.ContainsFunc(prev.Absorbed, g.Equal) {
			continue
		}
		body, err := a.cfg.Store.Get(ctx, expiredKey(a.cfg.Product, g))
		if err != nil {
			return nil, false, err
		}
		e, err := decode[Expired](body, expiredFormat)
		if err != nil {
			return nil, false, err
		}
		in.expired = append(in.expired, e)
	}
	for _, id := range slices.Sorted(maps.Keys(have)) {
		body, err := a.cfg.Store.Get(ctx, have[id])
		if err != nil {
			return nil, false, err
		}
		p, err := decode[Partial](body, partialFormat)
		if err != nil {
			// A partial that cannot be read is left out, loudly: its
			// agent carries it, as any partial a claim does not name.
			a.log.Error("partial unreadable; not merged", zap.String("key", have[id]), zap.Error(err))
			continue
		}
		in.partials = append(in.partials, loadedPartial{ref: PartialRef{Agent: id, SHA256: sha(body)}, p: p})
	}
	c = decide(in)
	a.crash("before-claim")
	if created, err = a.cfg.Store.Create(ctx, claimKey(a.cfg.Product, h), encode(c)); err != nil {
		return nil, false, err
	}
	a.crash("claim-created")
	if !created {
		c, err = a.readClaim(ctx, h)
		return c, false, err
	}
	a.mu.Lock()
	a.sum.HoursClaimed++
	a.mu.Unlock()
	a.log.Info("hour claimed", zap.Time("hour", h), zap.Int("partials", len(c.Partials)), zap.Int("records", len(c.Records)))
	return c, true, nil
}

// waitingFor lists the live agents that have not written hour h's partial
// yet and may (Heartbeat.mayWrite), with a heartbeat fresher than 3 ticks,
// for at most merge_grace after the hour closed or the agent started,
// whichever is later (an agent started on a backlog of old hours gets
// its grace too).
func (a *Agent) waitingFor(ctx context.Context, h, now, closedAt time.Time, have map[string]string, beats []Object) (waiting []string, gaveUp time.Time, err error) {
	for _, o := range beats {
		id := strings.TrimSuffix(strings.TrimPrefix(o.Key, heartbeatPrefix()), ".json")
		if _, ok := have[id]; ok || !a.recent(o) {
			continue
		}
		body, err := a.cfg.Store.Get(ctx, o.Key)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, gaveUp, err
		}
		hb, err := decode[Heartbeat](body, heartbeatFormat)
		if err != nil || hb.Product != a.cfg.Product {
			continue
		}
		if now.Sub(hb.LastSeen) > 3*a.cfg.Tick || !hb.mayWrite(h) {
			continue
		}
		if until := laterOf(closedAt, hb.UpSince).Add(a.cfg.MergeGrace); now.Before(until) {
			waiting = append(waiting, id)
		} else {
			gaveUp = laterOf(gaveUp, until)
		}
	}
	return waiting, gaveUp, nil
}

// recent reports whether a heartbeat object was written in the last 3
// ticks (plus a minute for clock skew), by the store's clock against this
// machine's: heartbeats of agents long gone are not even read.
func (a *Agent) recent(o Object) bool {
	return time.Since(o.Modified) <= 3*a.cfg.Tick+time.Minute
}

// liveIDs are the agents with a recent heartbeat, and this one: the
// candidates of the claim and send ranking.
func (a *Agent) liveIDs(beats []Object) []string {
	ids := []string{a.cfg.Agent}
	for _, o := range beats {
		id := strings.TrimSuffix(strings.TrimPrefix(o.Key, heartbeatPrefix()), ".json")
		if id != a.cfg.Agent && a.recent(o) {
			ids = append(ids, id)
		}
	}
	return ids
}

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (a *Agent) readClaim(ctx context.Context, h time.Time) (*Claim, error) {
	body, err := a.cfg.Store.Get(ctx, claimKey(a.cfg.Product, h))
	if err != nil {
		return nil, err
	}
	return decode[Claim](body, claimFormat)
}

// sendPending sends each claim in the lookback that has no result yet:
// its claimer at once, the others in rank order after Stagger each.
func (a *Agent) sendPending(ctx context.Context, cl claimList, mine map[time.Time]*Claim) error {
	var errs []error
	var ids []string
	for _, h := range sortedHours(cl.claimed) {
		if cl.results[h] {
			continue
		}
		c := mine[h]
		if c == nil && a.cfg.Stagger > 0 {
			// Another agent's claim: its claimer sends it at once; the
			// others, in rank order, only when it has not, a stagger
			// each, judged from the listing before reading the claim.
			if ids == nil {
				beats, err := a.cfg.Store.List(ctx, heartbeatPrefix(), "")
				if err != nil {
					errs = append(errs, err)
					continue
				}
				ids = a.liveIDs(beats)
			}
			if a.cfg.Now().Before(cl.modified[h].Add(time.Duration(rank(h, a.cfg.Agent, ids)+1) * a.cfg.Stagger)) {
				continue
			}
		}
		if c == nil {
			var err error
			if c, err = a.readClaim(ctx, h); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if err := a.send(ctx, c); err != nil {
			errs = append(errs, err)
			continue
		}
		cl.results[h] = true // settleOwn sees the answer of this step
	}
	return errors.Join(errs...)
}

// send sends a claim's records exactly as claimed and writes the result
// once every record has a final answer. Another sender's identical call
// is the same request to AWS: Success again, with the same record id.
func (a *Agent) send(ctx context.Context, c *Claim) error {
	res := Result{Format: resultFormat, Hour: c.Hour, Sender: a.cfg.Agent, Records: []RecordResult{}}
	queue := slices.Clone(c.Records)
	answers := map[Series]RecordResult{}
	deadline := time.Now().Add(a.cfg.MaxRetryElapsed)
	bo := retry.Backoff{Initial: a.cfg.BackoffInitial, Max: a.cfg.BackoffMax}
	var expired []Record
	isolate := 0 // records to send one a call: a whole call was refused
	for len(queue) > 0 {
		if !metering.WithinWindow(c.Hour, a.cfg.Now(), a.cfg.Window) {
			expired = append(expired, queue...)
			break
		}
		n := maxBatchRecords
		if isolate > 0 {
			n = 1
		}
		chunk := queue[:min(n, len(queue))]
		if a.cfg.DryRun {
			for _, r := range chunk {
				answers[r.Series] = RecordResult{Series: r.Series, Quantity: r.Quantity, Status: "DryRun"}
				a.log.Info("dry run: would send", zap.Time("hour", c.Hour), zap.String("customer", r.Customer), zap.String("dimension", r.Dimension), zap.Int64("quantity", r.Quantity))
			}
			queue = queue[len(chunk):]
			continue
		}
		out, err := a.callBatch(ctx, c, chunk)
		a.crash("after-call")
		var apiErr smithy.APIError
		switch {
		case err == nil:
			isolate = max(isolate-len(chunk), 0)
			retry := applyResults(chunk, out, answers)
			queue = append(retry, queue[len(chunk):]...)
			if len(retry) == 0 {
				bo.Reset()
				continue
			}
			err = fmt.Errorf("%d unprocessed record(s)", len(retry))
		case ctx.Err() != nil || retry.IsPermanent(err) && !recordError(err):
			// Canceled, or refused for a reason no record can fix (the
			// API disabled, the product unknown, access denied): the
			// claim stays unanswered, sent again next step.
			return fmt.Errorf("shared: BatchMeterUsage for %s: %w", c.Hour.Format(hourLayout), err)
		case errors.As(err, &apiErr) && apiErr.ErrorCode() == "TimestampOutOfBoundsException":
			// AWS's clock says the hour is past the window.
			expired = append(expired, chunk...)
			queue = queue[len(chunk):]
			continue
		case retry.IsPermanent(err) && recordError(err):
			if len(chunk) > 1 {
				// One bad record fails the whole call: send them one
				// by one so the others go through.
				isolate = len(chunk)
				continue
			}
			r := chunk[0]
			answers[r.Series] = RecordResult{Series: r.Series, Quantity: r.Quantity, Status: "Refused: " + errorCode(err)}
			a.log.Error("BatchMeterUsage refused a claimed record; it is not billed", zap.Time("hour", c.Hour),
				zap.String("customer", r.Customer), zap.String("dimension", r.Dimension), zap.Int64("quantity", r.Quantity), zap.Error(err))
			isolate = max(isolate-1, 0)
			queue = queue[1:]
			continue
		}
		if !retry.Wait(ctx, bo.Next(), time.Now(), deadline) {
			return fmt.Errorf("shared: BatchMeterUsage for %s not done: %w", c.Hour.Format(hourLayout), err)
		}
	}
	if len(expired) > 0 {
		// Recorded, not retried: the next claim made bills them, once
		// (Claim.Absorbed). Written before the result, which ends all
		// sending of this claim.
		e := Expired{Format: expiredFormat, Hour: c.Hour}
		for _, r := range expired {
			answers[r.Series] = RecordResult{Series: r.Series, Quantity: r.Quantity, Status: "Expired"}
			e.Records = append(e.Records, Carry{Series: r.Series, Nanos: r.Quantity * metering.NanosPerUnit})
		}
		if _, err := a.cfg.Store.Create(ctx, expiredKey(a.cfg.Product, c.Hour), encode(e)); err != nil {
			return err
		}
		a.log.Error("claim past the API window before all its records were accepted; the next claim bills them",
			zap.Time("hour", c.Hour), zap.Int("records", len(expired)))
	}
	for _, r := range c.Records {
		res.Records = append(res.Records, answers[r.Series])
	}
	res.Sent = a.cfg.Now().UTC()
	if _, err := a.cfg.Store.Create(ctx, resultKey(a.cfg.Product, c.Hour), encode(res)); err != nil {
		return err
	}
	a.crash("result-written")
	a.mu.Lock()
	for _, r := range res.Records {
		if r.Status == string(types.UsageRecordResultStatusSuccess) {
			if a.sum.Quantities == nil {
				a.sum.Quantities = map[string]int64{}
			}
			a.sum.RecordsSent++
			a.sum.Quantities[r.Dimension] += r.Quantity
		}
	}
	a.mu.Unlock()
	for _, r := range res.Records {
		if r.Status == string(types.UsageRecordResultStatusDuplicateRecord) {
			a.mu.Lock()
			a.conflicts++
			a.mu.Unlock()
			a.log.Error("AWS holds another quantity for this customer, dimension and hour", zap.Time("hour", c.Hour),
				zap.String("customer", r.Customer), zap.String("dimension", r.Dimension), zap.Int64("quantity", r.Quantity))
		}
	}
	return nil
}

// recordError reports whether err refuses a call for one of its records'
// contents (all are validated before any is processed).
func recordError(err error) bool {
	switch errorCode(err) {
	case "InvalidUsageDimensionException", "InvalidCustomerIdentifierException", "InvalidLicenseException",
		"InvalidTagException", "InvalidUsageAllocationsException", "ValidationException":
		return true
	}
	return false
}

// errorCode is the AWS error code of err, or its text.
func errorCode(err error) string {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode() != "" {
		return apiErr.ErrorCode()
	}
	return err.Error()
}

func (a *Agent) callBatch(ctx context.Context, c *Claim, chunk []Record) (*mm.BatchMeterUsageOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.CallTimeout)
	defer cancel()
	in := &mm.BatchMeterUsageInput{ProductCode: aws.String(c.Product)}
	for _, r := range chunk {
		in.UsageRecords = append(in.UsageRecords, usageRecord(c.Hour, r))
	}
	return a.cfg.Client.BatchMeterUsage(ctx, in)
}

func usageRecord(h time.Time, r Record) types.UsageRecord {
	u := types.UsageRecord{
		Dimension: aws.String(r.Dimension),
		Timestamp: aws.Time(h),
		Quantity:  aws.Int32(int32(r.Quantity)),
	}
	if r.CustomerAWSAccountID != "" {
		u.CustomerAWSAccountId = aws.String(r.CustomerAWSAccountID)
	} else {
		u.CustomerIdentifier = aws.String(r.CustomerIdentifier)
	}
	if r.License != "" {
		u.LicenseArn = aws.String(r.License)
	}
	for _, al := range r.Allocations {
		ua := types.UsageAllocation{AllocatedUsageQuantity: aws.Int32(int32(al.Quantity))}
		for _, t := range al.Tags {
			ua.Tags = append(ua.Tags, types.Tag{Key: aws.String(t.Key), Value: aws.String(t.Value)})
		}
		u.UsageAllocations = append(u.UsageAllocations, ua)
	}
	return u
}

// applyResults records the final answers of a call and returns the
// records to send again (unprocessed, or not mentioned).
func applyResults(chunk []Record, out *mm.BatchMeterUsageOutput, answers map[Series]RecordResult) []Record {
	got := map[Series]bool{}
	for _, r := range out.Results {
		if r.UsageRecord == nil {
			continue
		}
		s := Series{Dimension: aws.ToString(r.UsageRecord.Dimension), License: aws.ToString(r.UsageRecord.LicenseArn)}
		if r.UsageRecord.CustomerAWSAccountId != nil {
			s.Customer = *r.UsageRecord.CustomerAWSAccountId
		} else {
			s.Customer = aws.ToString(r.UsageRecord.CustomerIdentifier)
		}
		switch r.Status {
		case types.UsageRecordResultStatusSuccess, types.UsageRecordResultStatusDuplicateRecord, types.UsageRecordResultStatusCustomerNotSubscribed:
		default:
			continue
		}
		got[s] = true
		answers[s] = RecordResult{Series: s, Quantity: int64(aws.ToInt32(r.UsageRecord.Quantity)), Status: string(r.Status), MeteringRecordID: aws.ToString(r.MeteringRecordId)}
	}
	var retry []Record
	for _, r := range chunk {
		if !got[r.Series] {
			retry = append(retry, r)
		}
	}
	return retry
}

// settleOwn resolves this agent's written partials: merged when their
// hour's claim names them, else carried into the first hour it has not
// written yet (the claim was made without it, or its hour can no longer
// be claimed because a later hour was claimed first).
func (a *Agent) settleOwn(ctx context.Context, cl claimList) error {
	a.mu.Lock()
	var todo []*writtenPartial
	for _, w := range a.j.Written {
		if w.State == stateWritten || w.State == stateMerged && !w.Answered {
			todo = append(todo, w)
		}
	}
	a.mu.Unlock()
	changed := false
	var errs []error
	for _, w := range todo {
		if w.State == stateMerged {
			switch {
			case cl.results[w.Hour]:
				a.mu.Lock()
				w.Answered, changed = true, true
				a.mu.Unlock()
			case w.Claimer == a.cfg.Agent:
				// This agent claimed the hour and has not sent it (it
				// was restarted): it sends now, not a stagger later.
				c, err := a.readClaim(ctx, w.Hour)
				if err == nil {
					err = a.send(ctx, c)
				}
				if err != nil {
					errs = append(errs, err)
					continue
				}
				a.mu.Lock()
				w.Answered, changed = true, true
				a.mu.Unlock()
			}
			continue
		}
		if !cl.claimed[w.Hour] && (cl.latest.IsZero() || !cl.latest.After(w.Hour)) {
			continue // not claimed yet
		}
		// Read even when the listing (bounded by the lookback) missed it.
		c, err := a.readClaim(ctx, w.Hour)
		if errors.Is(err, ErrNotFound) {
			c = nil // a later hour was claimed first: this one never will be
		} else if err != nil {
			return err
		}
		a.mu.Lock()
		if c != nil && c.merged(a.cfg.Agent, w.SHA256) {
			w.State, w.Claimer, w.Answered = stateMerged, c.Claimer, cl.results[w.Hour]
		} else {
			to := a.j.NextHour
			a.j.addOpen(to, w.Entries)
			a.j.CarriedFrom[hourName(to)] = append(a.j.CarriedFrom[hourName(to)], w.Hour)
			w.State, w.CarriedTo = stateCarried, to
			a.sum.PartialsLate++
			a.log.Warn("partial written after its hour was claimed; its usage is carried into this agent's next open hour",
				zap.Time("hour", w.Hour), zap.Time("to", to), zap.Int("series", len(w.Entries)))
		}
		w.Entries = nil
		changed = true
		a.mu.Unlock()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.j.prune(a.cfg.Now()) {
		changed = true
	}
	if changed {
		errs = append(errs, a.j.save(a.cfg.Dir))
	}
	return errors.Join(errs...)
}

// sortedHours returns the keys in order.
func sortedHours(m map[time.Time]bool) []time.Time {
	out := make([]time.Time, 0, len(m))
	for h := range m {
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out
}
