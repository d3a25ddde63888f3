package metering

import (
	"maps"
	"slices"
	"time"

	"go.uber.org/zap"
)

// SourceCaughtUp tells the Meter that one of Options.CatchUpSources has
// read what its files held when the agent started. Once all have (or
// metering.catch_up_timeout has passed since New), hours close again.
func (m *Meter) SourceCaughtUp() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.catchUpLeft <= 0 {
		return
	}
	m.catchUpLeft--
	if m.catchUpLeft == 0 {
		m.log.Info("every source has read its start-up backlog; hours close again")
		select {
		case m.kick <- struct{}{}:
		default:
		}
	}
}

// catchingUpLocked reports whether hours must stay open because a source
// is still reading its start-up backlog.
func (m *Meter) catchingUpLocked(now time.Time) bool {
	if m.catchUpLeft <= 0 {
		return false
	}
	if !now.Before(m.catchUpUntil) {
		m.log.Warn("metering.catch_up_timeout passed before every source read its start-up backlog; hours close again, and usage read later for a reported hour goes to the next one",
			zap.Int("sources_reading", m.catchUpLeft), zap.Duration("catch_up_timeout", m.set.catchUp))
		m.catchUpLeft = 0
		return false
	}
	return true
}

// LogHeld logs, one line per series, the usage the ledger still holds
// unreported: pending intents (sent again by the next pass or start) and
// hours not yet closed. A stopping agent calls it last, so what the next
// start will report is in its log: at Warn when its last report failed
// (throttling, an outage, the shutdown deadline), else at Info.
func (m *Meter) LogHeld(failed bool) {
	logf := m.log.Info
	if failed {
		logf = m.log.Warn
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.led.sortedSeries() {
		var pending []time.Time
		var quantity int64
		for _, h := range slices.Sorted(maps.Keys(s.intents)) {
			if in := s.intents[h]; in.Status == statusPending {
				pending = append(pending, in.Hour)
				quantity += in.Quantity
			}
		}
		var open []time.Time
		var nanos int64
		for _, h := range slices.Sorted(maps.Keys(s.open)) {
			open = append(open, hourTime(h))
			for _, b := range s.open[h] {
				nanos = addSat(nanos, b.Nanos)
			}
		}
		if len(pending) == 0 && len(open) == 0 {
			continue
		}
		logf("usage stays in the ledger, unreported, for the next start",
			zap.String("dimension", s.key.dimension), zap.String("customer", s.key.customer),
			zap.Times("pending_hours", pending), zap.Int64("pending_quantity", quantity),
			zap.Times("open_hours", open), zap.String("open_usage", FormatQuantity(nanos)))
	}
}
