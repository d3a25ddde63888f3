package metering

import (
	"maps"
	"slices"
	"sort"
	"time"

	"go.uber.org/zap"
)

// plan turns the usage of closed hours (with final, of every hour up to
// the one in progress) into intents, persists them, and returns every
// pending intent, oldest first.
func (m *Meter) plan(final bool) ([]*intent, error) {
	var pendMin int64
	var hasPend bool
	if m.opts.Pending != nil {
		pendMin, hasPend = m.opts.Pending()
	}
	now := m.now()
	gone := m.goneSegments()

	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.flushLocked(); err != nil {
		return nil, err
	}
	cut := planCut(now, m.set.lateness, final, pendMin, hasPend)
	// While sources read the backlog of a downtime, no hour closes: its
	// usage must land in its own hours. Decided intents are still sent.
	gated := !final && m.catchingUpLocked(now)
	changed := false
	if !gated {
		m.lastCut = cut
		changed = m.closeHoursLocked(cut, now)
	}
	if m.pruneLocked(now) {
		changed = true
	}
	if m.forgetLocked(gone) {
		changed = true
	}
	if changed {
		if err := m.saveLocked(); err != nil {
			return nil, err
		}
		m.crash("intents-saved")
	}
	pending := m.pendingLocked()
	m.updatePendingLocked()
	return pending, nil
}

// planCut is the first hour (unix seconds) a pass leaves open: the hours
// before it are closed. With final the instance stops: no more records
// come for the hour in progress, except those not counted yet.
func planCut(now time.Time, lateness time.Duration, final bool, pendMin int64, hasPend bool) int64 {
	if !final {
		return closedBefore(now, lateness, pendMin, hasPend)
	}
	cut := floorHour(now) + hourSeconds
	if hasPend {
		cut = min(cut, hourOfMillis(pendMin))
	}
	return cut
}

// closeHoursLocked turns the usage of every hour before cut into intents
// (in shared mode, hands it off), after moving usage of hours past the
// reporting window to the oldest reportable one; report_zero adds the
// empty hours of the configured dimensions. It reports whether the ledger
// changed.
func (m *Meter) closeHoursLocked(cut int64, now time.Time) bool {
	oldest := oldestReportable(now, m.set.window, m.set.lateness, cut)
	changed := false
	zero := m.set.reportZero && m.set.mode == ModeMeterUsage
	if zero {
		for _, d := range m.set.dimNames {
			m.led.seriesFor(seriesKey{dimension: d})
		}
	}
	for _, s := range m.led.sortedSeries() {
		if m.carryPastWindowLocked(s, cut, oldest) {
			changed = true
		}
		for _, h := range m.hoursToCloseLocked(s, cut, oldest, zero) {
			if m.opts.Shared != nil {
				m.handOffLocked(s, h, now)
			} else {
				m.createIntentLocked(s, h, now)
			}
			changed = true
		}
	}
	if zero && cut > m.led.zeroFrom {
		m.led.zeroFrom = cut
		changed = true
	}
	return changed
}

// carryPastWindowLocked moves the usage of s's open hours before cut that
// can no longer be reported (older than oldest, or already holding an
// intent) to the first free hour from oldest on. It reports whether it
// moved any.
func (m *Meter) carryPastWindowLocked(s *series, cut, oldest int64) bool {
	// One log line per series: an agent down for days would otherwise
	// log every hour of every dimension.
	var moved int
	var first, last, firstTo, lastTo int64
	for _, h := range slices.Sorted(maps.Keys(s.open)) {
		if h >= cut {
			break
		}
		if h >= oldest && !s.hasIntent(h) {
			continue
		}
		to := s.firstFree(max(h, oldest))
		if to == h {
			continue
		}
		s.moveHour(h, to)
		m.metrics.hoursCarried.WithLabelValues("window").Inc()
		m.sum.Carried++
		if moved == 0 {
			first, firstTo = h, to
		}
		moved++
		last, lastTo = h, to
	}
	if moved == 0 {
		return false
	}
	fields := []zap.Field{zap.String("dimension", s.key.dimension), zap.String("customer", s.key.customer),
		zap.Int("hours", moved), zap.Time("from", hourTime(first)), zap.Time("through", hourTime(last)),
		zap.Time("to", hourTime(firstTo))}
	if lastTo != firstTo {
		fields = append(fields, zap.Time("to_last", hourTime(lastTo)))
	}
	m.log.Warn("usage of hours past the reporting window added to the oldest reportable hour", fields...)
	return true
}

// hoursToCloseLocked lists, in order, the hours of s before cut that get
// an intent now: those with usage and, with zero, for the untagged series
// of a configured dimension, every hour from zeroFrom (or oldest) on
// without one.
func (m *Meter) hoursToCloseLocked(s *series, cut, oldest int64, zero bool) []int64 {
	hours := make(map[int64]bool)
	for h := range s.open {
		if h < cut {
			hours[h] = true
		}
	}
	if zero && s.key.customer == "" && s.key.license == "" {
		for h := max(m.led.zeroFrom, oldest); h < cut; h += hourSeconds {
			if !s.hasIntent(h) {
				hours[h] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(hours))
}

// pendingLocked returns every pending intent, by hour, dimension,
// customer and license.
func (m *Meter) pendingLocked() []*intent {
	var pending []*intent
	for _, s := range m.led.series {
		for _, in := range s.intents {
			if in.Status == statusPending {
				pending = append(pending, in)
			}
		}
	}
	sort.Slice(pending, func(i, j int) bool {
		a, b := pending[i], pending[j]
		if !a.Hour.Equal(b.Hour) {
			return a.Hour.Before(b.Hour)
		}
		if a.Dimension != b.Dimension {
			return a.Dimension < b.Dimension
		}
		if a.Customer != b.Customer {
			return a.Customer < b.Customer
		}
		return a.License < b.License
	})
	return pending
}

// createIntentLocked turns hour h of series s into a pending intent: the
// hour's usage plus the key's carry, rounded down, with allocations.
func (m *Meter) createIntentLocked(s *series, h int64, now time.Time) {
	total := s.carry
	var records int64
	buckets := s.open[h]
	keys := slices.Sorted(maps.Keys(buckets))
	for _, k := range keys {
		total = addSat(total, buckets[k].Nanos)
		records += buckets[k].Records
	}
	q, carry := roundDown(total)
	s.carry = carry
	in := &intent{
		ID:        intentID(m.set.product, h, s.key.customer, s.key.license, s.key.dimension),
		Op:        opMeterUsage,
		Product:   m.set.product,
		Hour:      hourTime(h),
		Customer:  s.key.customer,
		License:   s.key.license,
		Dimension: s.key.dimension,
		Quantity:  q,
		DryRun:    m.set.dryRun,
		Records:   records,
		Status:    statusPending,
		Created:   now.UTC(),
	}
	if len(m.set.tags) > 0 {
		in.Allocations = allocate(q, buckets, keys)
	}
	if m.set.mode == ModeBatchMeterUsage {
		in.Op = opBatch
		if m.set.accountIDs {
			in.CustomerAWSAccountID = s.key.customer
		} else {
			in.CustomerIdentifier = s.key.customer
		}
	} else {
		in.ClientToken = clientToken(m.set.product, s.key.dimension, h, m.opts.InstanceID)
	}
	delete(s.open, h)
	s.intents[h] = in
}

// allocate splits quantity over an hour's buckets by largest remainder.
// More than 2500 buckets (or allocations too large for one request) are
// reduced by merging the smallest buckets into the untagged one. It
// returns nil when there is nothing to allocate.
func allocate(quantity int64, buckets map[string]*bucket, keys []string) []allocation {
	if quantity <= 0 {
		return nil
	}
	type group struct {
		tags  []tag
		nanos int64
	}
	groups := make([]group, 0, len(keys))
	var size int
	for _, k := range keys {
		groups = append(groups, group{tags: buckets[k].Tags, nanos: buckets[k].Nanos})
		size += allocationSize(buckets[k].Tags)
	}
	if len(groups) > maxAllocations || size > maxAllocBytes {
		sort.SliceStable(groups, func(i, j int) bool { return groups[i].nanos > groups[j].nanos })
		var kept []group
		var rest int64
		size = allocationSize(nil)
		for _, g := range groups {
			s := allocationSize(g.tags)
			// The untagged group, and what does not fit, go to one
			// untagged allocation.
			if len(g.tags) == 0 || len(kept) >= maxAllocations-1 || size+s > maxAllocBytes {
				rest = addSat(rest, g.nanos)
				continue
			}
			kept = append(kept, g)
			size += s
		}
		if rest > 0 {
			kept = append(kept, group{nanos: rest})
		}
		sort.SliceStable(kept, func(i, j int) bool { return bucketKey(kept[i].tags) < bucketKey(kept[j].tags) })
		groups = kept
	}
	weights := make([]int64, len(groups))
	for i, g := range groups {
		weights[i] = g.nanos
	}
	shares := largestRemainder(quantity, weights)
	if shares == nil {
		return nil
	}
	var out []allocation
	for i, q := range shares {
		if q > 0 {
			out = append(out, allocation{Quantity: q, Tags: groups[i].tags})
		}
	}
	return out
}

// allocationSize estimates the JSON bytes of one allocation.
func allocationSize(tags []tag) int {
	n := 48
	for _, t := range tags {
		n += 24 + len(t.Key) + len(t.Value)
	}
	return n
}

// pruneLocked drops answered intents older than the window plus
// keepResolvedFor; their hours keep counting as reported.
func (m *Meter) pruneLocked(now time.Time) bool {
	horizon := now.Add(-m.set.window - keepResolvedFor)
	pruned := false
	for _, s := range m.led.series {
		for h, in := range s.intents {
			if in.Status != statusPending && hourTime(h).Before(horizon) {
				delete(s.intents, h)
				s.prunedBefore = max(s.prunedBefore, h+hourSeconds)
				pruned = true
			}
		}
		if len(s.open) == 0 && len(s.intents) == 0 && s.carry == 0 && s.prunedBefore == 0 {
			delete(m.led.series, s.key)
		}
	}
	for k, u := range m.led.unbilled {
		if u.Last.Before(now.Add(-keepUnbilledFor)) {
			delete(m.led.unbilled, k)
			pruned = true
		}
	}
	return pruned
}
