package metering

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"go.uber.org/zap"
)

// Replicas (metering.state_url, package metering/shared).
//
// In batch_meter_usage mode with a shared state, a closed hour's usage is
// not rounded and sent by this agent: BatchMeterUsage accepts one record
// per (product, customer, dimension, hour) from all senders together, so
// each replica's exact totals go to the shared protocol, which merges
// them. The ledger's intent protocol is kept as it is: a closed hour of a
// key becomes an intent of op "shared" holding the hour's exact usage,
// written to the ledger (with the usage removed from the open hours)
// before it is handed over, and handed over again, unchanged, until the
// SharedState has taken it durably. SharedState.Hand is idempotent per
// HourUsage.ID, as AWS is per ClientToken, so a crash between the hand-over
// and the write of its answer changes nothing.

// opShared is the op of an intent handed to Options.Shared.
const opShared = "shared"

// statusHanded: the SharedState took the intent's usage durably.
const statusHanded = "handed"

// NanosPerUnit is the resolution of HourUsage: billionths of a unit.
const NanosPerUnit = nanosPerUnit

// MaxQuantity is the largest quantity one usage record may carry.
const MaxQuantity = maxQuantity

// SharedState takes closed-hour usage in batch_meter_usage mode when
// metering.state_url is set (Options.Shared). package metering/shared
// implements it.
type SharedState interface {
	// Hand takes usage durably; a usage whose ID it has taken before is
	// ignored. closedBefore is the agent's closure cut: every hour before
	// it is closed here, and all its usage is in this or an earlier call.
	// Hand is called on every reporting pass, with no usage too.
	Hand(ctx context.Context, closedBefore time.Time, usage []HourUsage) error
}

// HourUsage is the exact usage of one key in one closed hour.
type HourUsage struct {
	// ID is unique per (product, hour, customer, license, dimension).
	ID        string
	Hour      time.Time
	Customer  string
	License   string
	Dimension string
	Buckets   []UsageBucket
}

// UsageBucket is the usage of one allocation tag set.
type UsageBucket struct {
	Tags    []UsageTag `json:"tags,omitempty"`
	Nanos   int64      `json:"nanos"`
	Records int64      `json:"records"`
}

// UsageTag is one allocation tag.
type UsageTag struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// UsageAllocation is one UsageAllocation of a record.
type UsageAllocation struct {
	Quantity int64      `json:"quantity"`
	Tags     []UsageTag `json:"tags,omitempty"`
}

// BucketKey identifies a tag set independent of tag order.
func BucketKey(tags []UsageTag) string { return bucketKey(toTags(tags)) }

// Allocate splits quantity over buckets by largest remainder exactly as
// the single-agent reporter does (AWS's limits included); buckets must be
// in BucketKey order. nil when there is nothing to allocate.
func Allocate(quantity int64, buckets []UsageBucket) []UsageAllocation {
	m := make(map[string]*bucket, len(buckets))
	keys := make([]string, 0, len(buckets))
	for _, b := range buckets {
		k := BucketKey(b.Tags)
		m[k] = &bucket{Tags: toTags(b.Tags), Nanos: b.Nanos, Records: b.Records}
		keys = append(keys, k)
	}
	var out []UsageAllocation
	for _, a := range allocate(quantity, m, keys) {
		out = append(out, UsageAllocation{Quantity: a.Quantity, Tags: fromTags(a.Tags)})
	}
	return out
}

// OldestReportable is the oldest hour whose usage is still sent, as the
// single-agent reporter computes it (the window minus its safety margin,
// which depends on lateness).
func OldestReportable(now time.Time, window, lateness time.Duration) time.Time {
	return hourTime(oldestReportable(now, window, lateness, math.MaxInt64))
}

// WithinWindow reports whether a call for hour h made now is inside the
// API's window.
func WithinWindow(h, now time.Time, window time.Duration) bool {
	return withinWindow(h.Unix(), now, window)
}

func toTags(ts []UsageTag) []tag {
	if len(ts) == 0 {
		return nil
	}
	out := make([]tag, len(ts))
	for i, t := range ts {
		out[i] = tag(t)
	}
	return out
}

func fromTags(ts []tag) []UsageTag {
	if len(ts) == 0 {
		return nil
	}
	out := make([]UsageTag, len(ts))
	for i, t := range ts {
		out[i] = UsageTag(t)
	}
	return out
}

// handOffLocked turns closed hour h of series s into a pending shared
// intent with the hour's exact usage (no carry, no rounding: the shared
// claim does both on the merged totals).
func (m *Meter) handOffLocked(s *series, h int64, now time.Time) {
	in := &intent{
		ID:        intentID(m.set.product, h, s.key.customer, s.key.license, s.key.dimension),
		Op:        opShared,
		Product:   m.set.product,
		Hour:      hourTime(h),
		Customer:  s.key.customer,
		License:   s.key.license,
		Dimension: s.key.dimension,
		Status:    statusPending,
		Created:   now.UTC(),
	}
	for _, k := range slices.Sorted(maps.Keys(s.open[h])) {
		b := s.open[h][k]
		in.Buckets = append(in.Buckets, b)
		in.Records += b.Records
	}
	delete(s.open, h)
	s.intents[h] = in
}

// reportShared is report with a SharedState: closed hours (with final,
// every hour up to the one in progress: a stopping replica writes its
// partial of that hour now, as it will not write it later) become shared
// intents (plan), which are handed over until taken.
func (m *Meter) reportShared(ctx context.Context, final bool) error {
	pending, err := m.plan(final)
	if err != nil {
		return err
	}
	// plan's cut: every hour before it is closed here (the catch-up gate
	// keeps it where it was), and its usage is in the intents handed below
	// or in earlier hand-overs.
	m.mu.Lock()
	cut := m.lastCut
	m.mu.Unlock()
	var usage []HourUsage
	var decided []*intent
	for _, in := range pending {
		if in.Op != opShared {
			// Intents of an earlier run without state_url were decided
			// alone: they are sent as they were persisted.
			decided = append(decided, in)
			continue
		}
		u := HourUsage{ID: in.ID, Hour: in.Hour, Customer: in.Customer, License: in.License, Dimension: in.Dimension}
		for _, b := range in.Buckets {
			u.Buckets = append(u.Buckets, UsageBucket{Tags: fromTags(b.Tags), Nanos: b.Nanos, Records: b.Records})
		}
		usage = append(usage, u)
	}
	if len(decided) > 0 {
		if _, err := m.sendBatches(ctx, decided, time.Now().Add(m.opts.MaxRetryElapsed)); err != nil {
			return err
		}
	}
	m.crash("before-hand")
	if err := m.opts.Shared.Hand(ctx, hourTime(cut), usage); err != nil {
		return fmt.Errorf("%w: shared state: %w", ErrNotReported, err)
	}
	m.crash("after-hand")
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, in := range pending {
		if in.Op == opShared {
			in.Status = statusHanded
			in.Resolved = m.now().UTC()
		}
	}
	m.updatePendingLocked()
	if len(usage) > 0 {
		m.log.Debug("closed-hour usage handed to the shared state", zap.Int("keys", len(usage)))
		m.dirty = true
		return m.flushLocked()
	}
	return nil
}
