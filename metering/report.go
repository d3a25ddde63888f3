package metering

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	mm "github.com/aws/aws-sdk-go-v2/service/marketplacemetering"
	"github.com/aws/aws-sdk-go-v2/service/marketplacemetering/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"go.uber.org/zap"

	"github.com/metership/metership/internal/fsutil"
	"github.com/metership/metership/internal/retry"
)

// Limits of the API the reporter respects.
const (
	maxAllocations  = 2500
	maxBatchRecords = 25
	maxBatchBytes   = 900 << 10 // under the API's 1 MB, with room for the envelope
	maxAllocBytes   = 200 << 10 // one record's allocations, estimated
	keepResolvedFor = 48 * time.Hour
	keepUnbilledFor = 7 * 24 * time.Hour
	maxRounds       = 4
)

// Run reports every closed hour now and then every Options.Tick, and
// just after each hour closes, until ctx is done, then returns nil.
// Failures are logged and retried on the next pass; usage is never
// dropped.
func (m *Meter) Run(ctx context.Context) error {
	t := time.NewTimer(m.opts.Tick)
	defer t.Stop()
	for {
		if err := m.ReportClosed(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("metering: closed hours not all reported; retrying next pass", zap.Error(err))
		}
		// A pass right after each close gives an hour the whole of the
		// time it has before leaving the window, whatever the tick.
		t.Reset(min(m.opts.Tick, nextClose(m.now(), m.set.lateness).Sub(m.now())+time.Second))
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-m.kick:
		}
	}
}

// ReportClosed reports every hour that is closed now: it writes intents
// for the closed hours' usage, then sends every pending intent (including
// those of earlier passes), retrying throttling, 5xx and network errors
// with backoff until ctx is done or Options.MaxRetryElapsed has passed.
// It returns an error wrapping ErrNotReported when usage that should have
// been reported is still unanswered; the intents stay in the ledger.
func (m *Meter) ReportClosed(ctx context.Context) error {
	return m.report(ctx, false)
}

// ReportFinal is ReportClosed for an agent or plugin instance that stops:
// every hour it holds usage for is reported, the one in progress
// included, as AWS allows a resource that will not report again (a
// stopping pod whose ledger may die with it). The ledger then holds an
// intent for that hour, so usage of it counted later (a restart on the
// same ledger) goes to the next hour: never a second call for the hour.
// Records not yet counted (Options.Pending) still hold their hours open.
// It waits for a pass in progress, and retries, only until ctx is done;
// what is left stays in the ledger for the next start.
func (m *Meter) ReportFinal(ctx context.Context) error {
	return m.report(ctx, true)
}

// ReportOnStop is what metering.report_on_stop asks of a stopping agent:
// ReportFinal when it is on, else ReportClosed.
func (m *Meter) ReportOnStop(ctx context.Context) error {
	if m.set.reportOnStop {
		return m.ReportFinal(ctx)
	}
	return m.ReportClosed(ctx)
}

func (m *Meter) report(ctx context.Context, final bool) error {
	// Waiting for another pass (Run's, which may be retrying throttled
	// calls for up to MaxRetryElapsed) honours ctx, so a shutdown is
	// never held past its deadline.
	select {
	case m.reportSem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting for the reporting pass in progress: %w", ErrNotReported, ctx.Err())
	}
	defer func() { <-m.reportSem }()
	if m.opts.Shared != nil {
		return m.reportShared(ctx, final)
	}
	deadline := time.Now().Add(m.opts.MaxRetryElapsed)
	for range maxRounds {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%w: %w", ErrNotReported, err)
		}
		pending, err := m.plan(final)
		if err != nil {
			return err
		}
		if len(pending) == 0 {
			return nil
		}
		var single, batch []*intent
		for _, in := range pending {
			if in.Op == opBatch {
				batch = append(batch, in)
			} else {
				single = append(single, in)
			}
		}
		var moved, movedBatch bool
		if len(single) > 0 {
			if moved, err = m.sendMeterUsage(ctx, single, deadline); err != nil {
				return err
			}
		}
		if len(batch) > 0 {
			if movedBatch, err = m.sendBatches(ctx, batch, deadline); err != nil {
				return err
			}
		}
		if !moved && !movedBatch {
			return nil
		}
	}
	return nil
}

// Operation names stored in intents.
const (
	opMeterUsage = "MeterUsage"
	opBatch      = "BatchMeterUsage"
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
	cut := closedBefore(now, m.set.lateness, pendMin, hasPend)
	if final {
		// The instance stops: no more records come for the hour in
		// progress, except those not counted yet.
		cut = floorHour(now) + hourSeconds
		if hasPend {
			cut = min(cut, hourOfMillis(pendMin))
		}
	}
	// While sources read the backlog of a downtime, no hour closes: its
	// usage must land in its own hours. Decided intents are still sent.
	gated := !final && m.catchingUpLocked(now)
	if !gated {
		m.lastCut = cut
	}
	oldest := oldestReportable(now, m.set.window, m.set.lateness, cut)
	changed := false
	zero := m.set.reportZero && m.set.mode == ModeMeterUsage
	if zero {
		for _, d := range m.set.dimNames {
			m.led.seriesFor(seriesKey{dimension: d})
		}
	}
	for _, s := range m.led.sortedSeries() {
		if gated {
			break
		}
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
			changed = true
			m.metrics.hoursCarried.WithLabelValues("window").Inc()
			m.sum.Carried++
			if moved == 0 {
				first, firstTo = h, to
			}
			moved++
			last, lastTo = h, to
		}
		if moved > 0 {
			fields := []zap.Field{zap.String("dimension", s.key.dimension), zap.String("customer", s.key.customer),
				zap.Int("hours", moved), zap.Time("from", hourTime(first)), zap.Time("through", hourTime(last)),
				zap.Time("to", hourTime(firstTo))}
			if lastTo != firstTo {
				fields = append(fields, zap.Time("to_last", hourTime(lastTo)))
			}
			m.log.Warn("usage of hours past the reporting window added to the oldest reportable hour", fields...)
		}
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
		for _, h := range slices.Sorted(maps.Keys(hours)) {
			if m.opts.Shared != nil {
				m.handOffLocked(s, h, now)
				changed = true
				continue
			}
			m.createIntentLocked(s, h, now)
			changed = true
		}
	}
	if zero && !gated && cut > m.led.zeroFrom {
		m.led.zeroFrom = cut
		changed = true
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
	m.updatePendingLocked()
	return pending, nil
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

// outcome classifies the answer to a call.
type outcome int

const (
	outOK outcome = iota
	outDryRun
	outConflict
	outOutOfBounds
	outRetry
	outPermanent
	outCanceled
)

// classify maps an SDK error to what the reporter does about it.
func classify(ctx context.Context, err error) (outcome, string) {
	if err == nil {
		return outOK, ""
	}
	if ctx.Err() != nil {
		return outCanceled, "Canceled"
	}
	code := "Network"
	var apiErr smithy.APIError
	var re *smithyhttp.ResponseError
	switch {
	case errors.As(err, &apiErr):
		switch code = apiErr.ErrorCode(); code {
		case "DryRunOperation":
			return outDryRun, code
		case "DuplicateRequestException", "IdempotencyConflictException":
			return outConflict, code
		case "TimestampOutOfBoundsException":
			return outOutOfBounds, code
		case "":
			code = "Unknown"
		}
	case errors.As(err, &re):
		code = fmt.Sprintf("HTTP%d", re.HTTPStatusCode())
	}
	// What is worth retrying is the same for every AWS API: the output's
	// rules (throttling and timeout codes, 408, 429, 5xx, network errors).
	if retry.IsPermanent(err) {
		return outPermanent, code
	}
	return outRetry, code
}

// backoff is the wait sequence of one sending loop (Options.Backoff).
func (m *Meter) backoff() *retry.Backoff {
	return &retry.Backoff{Initial: m.opts.Backoff.Initial, Max: m.opts.Backoff.Max}
}

// retryWait sleeps before retrying after err, within deadline; false means
// give up (deadline passed or ctx done).
func (m *Meter) retryWait(ctx context.Context, bo *retry.Backoff, deadline time.Time, err error) bool {
	if m.opts.onRetry != nil {
		m.opts.onRetry(err)
	}
	return retry.Wait(ctx, bo.Next(), time.Now(), deadline)
}

// notReported is the error of a pass that left n intents pending.
func notReported(ctx context.Context, n int, last error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %d usage record(s) still pending: %w", ErrNotReported, n, ctx.Err())
	}
	return fmt.Errorf("%w: %d usage record(s) still pending: %w", ErrNotReported, n, last)
}

// sendMeterUsage sends MeterUsage intents, up to reportWorkers calls at
// a time (each intent is its own hour and dimension: the calls are
// independent). moved reports that an expired intent's quantity went to
// another hour (the caller plans again). When one intent gives up (its
// retries ran past the deadline, or ctx is done) the others stop too and
// stay pending, for the next pass.
func (m *Meter) sendMeterUsage(ctx context.Context, pending []*intent, deadline time.Time) (moved bool, err error) {
	defer m.saveResolved()
	// callCtx stops the other calls when one intent gives up.
	callCtx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		mu      sync.Mutex
		lastErr error
		gaveUp  bool
		next    int
		wg      sync.WaitGroup
	)
	take := func() *intent {
		mu.Lock()
		defer mu.Unlock()
		if gaveUp || next == len(pending) {
			return nil
		}
		next++
		return pending[next-1]
	}
	for range min(m.opts.reportWorkers, len(pending)) {
		wg.Go(func() {
			bo := m.backoff()
			for in := take(); in != nil; in = take() {
				mv, quit, err := m.sendOne(callCtx, in, bo, deadline)
				mu.Lock()
				moved = moved || mv
				// After a give-up the others end canceled: keep the cause.
				if err != nil && !gaveUp {
					lastErr = err
				}
				if quit && !gaveUp {
					gaveUp = true
					stop()
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	m.mu.Lock()
	left := 0
	for _, in := range pending {
		if in.Status == statusPending {
			left++
		}
	}
	m.mu.Unlock()
	if left > 0 {
		return moved, notReported(ctx, left, lastErr)
	}
	return moved, nil
}

// sendOne sends one MeterUsage intent, retrying throttling, 5xx and
// network errors. quit means stop the pass: retries ran out or ctx is
// done. err is the last error when the intent is still pending.
func (m *Meter) sendOne(ctx context.Context, in *intent, bo *retry.Backoff, deadline time.Time) (moved, quit bool, err error) {
	if !withinWindow(in.Hour.Unix(), m.now(), m.set.window) {
		m.expire(in, "hour is past the MeterUsage window")
		return true, false, nil
	}
	for {
		out, callErr := m.callMeterUsage(ctx, in)
		m.crash("after-call")
		res, code := classify(ctx, callErr)
		switch res {
		case outOK:
			bo.Reset()
			m.resolve(in, statusAccepted, aws.ToString(out.MeteringRecordId), "")
			return false, false, nil
		case outDryRun:
			bo.Reset()
			m.resolve(in, statusDryRun, "", "")
			return false, false, nil
		case outConflict:
			m.resolve(in, statusConflict, "", callErr.Error())
			return false, false, nil
		case outOutOfBounds:
			m.expire(in, callErr.Error())
			return true, false, nil
		case outRetry:
			m.metrics.reportErrors.WithLabelValues(code).Inc()
			m.log.Warn("MeterUsage failed; retrying", zap.String("dimension", in.Dimension), zap.Time("hour", in.Hour), zap.Error(callErr))
			if !m.retryWait(ctx, bo, deadline, callErr) {
				return false, true, callErr
			}
		case outCanceled:
			return false, true, callErr
		default:
			m.metrics.reportErrors.WithLabelValues(code).Inc()
			m.log.Error("MeterUsage refused; the intent stays pending and is retried next pass",
				zap.String("dimension", in.Dimension), zap.Time("hour", in.Hour), zap.Int64("quantity", in.Quantity), zap.Error(callErr))
			return false, false, callErr
		}
	}
}

// callMeterUsage sends one intent exactly as persisted.
func (m *Meter) callMeterUsage(ctx context.Context, in *intent) (*mm.MeterUsageOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, m.opts.CallTimeout)
	defer cancel()
	input := &mm.MeterUsageInput{
		ProductCode:      aws.String(in.Product),
		Timestamp:        aws.Time(in.Hour),
		UsageDimension:   aws.String(in.Dimension),
		UsageQuantity:    aws.Int32(int32(in.Quantity)),
		ClientToken:      aws.String(in.ClientToken),
		UsageAllocations: sdkAllocations(in.Allocations),
	}
	if in.DryRun {
		input.DryRun = aws.Bool(true)
	}
	start := time.Now()
	out, err := m.api.MeterUsage(ctx, input)
	m.metrics.reportLatency.Observe(time.Since(start).Seconds())
	return out, err
}

func sdkAllocations(allocs []allocation) []types.UsageAllocation {
	if len(allocs) == 0 {
		return nil
	}
	out := make([]types.UsageAllocation, len(allocs))
	for i, a := range allocs {
		out[i].AllocatedUsageQuantity = aws.Int32(int32(a.Quantity))
		for _, t := range a.Tags {
			out[i].Tags = append(out[i].Tags, types.Tag{Key: aws.String(t.Key), Value: aws.String(t.Value)})
		}
	}
	return out
}

// resolve records the answer to an intent in memory; answers are written
// in groups (every Options.answerSaveEvery, and when the pass ends), not
// one fsync'd ledger rewrite per call. Losing unwritten answers is safe:
// their intents are still pending on disk and are re-sent unchanged, which
// AWS answers idempotently (same ClientToken, same parameters).
func (m *Meter) resolve(in *intent, status, recordID, msg string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.resolveLocked(in, status, recordID, msg)
	m.answeredLocked()
}

// answeredLocked follows answers (and expiries) recorded in memory: the
// ledger is written at most every answerSaveEvery while a pass runs, and
// when it ends (saveResolved).
func (m *Meter) answeredLocked() {
	m.dirty = true
	if time.Since(m.savedAt) >= m.opts.answerSaveEvery {
		m.saveResolvedLocked()
	}
	m.updatePendingLocked()
}

// saveResolved writes answers resolve left in memory.
func (m *Meter) saveResolved() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.saveResolvedLocked()
}

func (m *Meter) saveResolvedLocked() {
	if err := m.flushLocked(); err != nil {
		m.log.Error("metering: ledger write failed; retried on the next change", zap.Error(err))
	}
}

// resolveLocked records the answer to an intent in memory.
func (m *Meter) resolveLocked(in *intent, status, recordID, msg string) {
	now := m.now()
	in.Status = status
	in.Resolved = now.UTC()
	in.RecordID = recordID
	in.Error = msg
	fields := []zap.Field{zap.String("dimension", in.Dimension), zap.Time("hour", in.Hour), zap.Int64("quantity", in.Quantity)}
	if in.Customer != "" {
		fields = append(fields, zap.String("customer", in.Customer))
	}
	switch status {
	case statusAccepted:
		m.metrics.lastSuccess.Set(float64(now.Unix()))
		m.sum.HoursReported++
		m.sum.Quantities[in.Dimension] += in.Quantity
		m.log.Debug("usage reported", append(fields, zap.String("metering_record_id", recordID))...)
	case statusDryRun:
		m.metrics.lastSuccess.Set(float64(now.Unix()))
		m.sum.DryRun++
		m.log.Info("dry run: usage validated, not recorded", fields...)
	case statusConflict:
		m.sum.Conflicts++
		m.log.Error("AWS Marketplace already holds a different quantity for this hour; not re-sent", append(fields, zap.String("error", msg))...)
	case statusNotSubscribed:
		m.sum.NotSubscribed++
		c := m.led.notSubscribed[in.Customer]
		if c == nil {
			c = &customerState{Customer: in.Customer, First: now.UTC()}
			m.led.notSubscribed[in.Customer] = c
		}
		c.Last = now.UTC()
		c.Records++
		c.LastIntent = in.ID
		m.metrics.notSubscribed.Set(float64(len(m.led.notSubscribed)))
		m.log.Error("customer not subscribed; usage dead-lettered, not retried", fields...)
	}
}

// expire marks an intent that can no longer be reported and moves its
// quantity to the oldest reportable hour of its key.
func (m *Meter) expire(in *intent, reason string) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.led.seriesFor(seriesKey{customer: in.Customer, license: in.License, dimension: in.Dimension})
	to := s.firstFree(oldestReportable(now, m.set.window, m.set.lateness, m.lastCut))
	in.Status = statusExpired
	in.Resolved = now.UTC()
	in.Error = reason
	records := in.Records
	if len(in.Allocations) > 0 {
		for _, a := range in.Allocations {
			s.addUsage(to, a.Tags, a.Quantity*nanosPerUnit, records)
			records = 0
		}
	} else if in.Quantity > 0 || records > 0 {
		s.addUsage(to, nil, in.Quantity*nanosPerUnit, records)
	}
	m.metrics.hoursCarried.WithLabelValues("out_of_bounds").Inc()
	m.sum.Carried++
	m.log.Warn("usage hour fell out of the API window before it was accepted; quantity moved to the oldest reportable hour",
		zap.String("dimension", in.Dimension), zap.String("customer", in.Customer), zap.Time("hour", in.Hour),
		zap.Time("to", hourTime(to)), zap.Int64("quantity", in.Quantity), zap.String("reason", reason))
	// Unwritten, the intent is still pending on disk and expires again.
	m.answeredLocked()
}

// batchKey matches a BatchMeterUsage result to its intent.
type batchKey struct {
	customer, license, dimension string
	hour                         int64
}

func recordKey(r *types.UsageRecord) batchKey {
	k := batchKey{dimension: aws.ToString(r.Dimension), license: aws.ToString(r.LicenseArn)}
	if r.CustomerAWSAccountId != nil {
		k.customer = *r.CustomerAWSAccountId
	} else {
		k.customer = aws.ToString(r.CustomerIdentifier)
	}
	if r.Timestamp != nil {
		k.hour = r.Timestamp.Unix()
	}
	return k
}

func (in *intent) batchKey() batchKey {
	return batchKey{customer: in.Customer, license: in.License, dimension: in.Dimension, hour: in.Hour.Unix()}
}

func (in *intent) usageRecord() types.UsageRecord {
	r := types.UsageRecord{
		Dimension:        aws.String(in.Dimension),
		Timestamp:        aws.Time(in.Hour),
		Quantity:         aws.Int32(int32(in.Quantity)),
		UsageAllocations: sdkAllocations(in.Allocations),
	}
	if in.CustomerAWSAccountID != "" {
		r.CustomerAWSAccountId = aws.String(in.CustomerAWSAccountID)
	} else {
		r.CustomerIdentifier = aws.String(in.CustomerIdentifier)
	}
	if in.License != "" {
		r.LicenseArn = aws.String(in.License)
	}
	return r
}

// chunkBatches groups intents into calls of at most 25 records and under
// maxBatchBytes, in order.
func chunkBatches(intents []*intent) [][]*intent {
	var out [][]*intent
	var cur []*intent
	size := 0
	for _, in := range intents {
		s := 160 + len(in.Customer) + len(in.License) + len(in.Dimension)
		for _, a := range in.Allocations {
			s += allocationSize(a.Tags)
		}
		if len(cur) > 0 && (len(cur) == maxBatchRecords || size+s > maxBatchBytes) {
			out = append(out, cur)
			cur, size = nil, 0
		}
		cur = append(cur, in)
		size += s
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// groupByProduct splits intents by (product, dry-run), keeping their order
// within each group.
func groupByProduct(intents []*intent) [][]*intent {
	type key struct {
		product string
		dryRun  bool
	}
	var order []key
	groups := map[key][]*intent{}
	for _, in := range intents {
		k := key{in.Product, in.DryRun}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], in)
	}
	out := make([][]*intent, 0, len(order))
	for _, k := range order {
		out = append(out, groups[k])
	}
	return out
}

// sendBatches sends BatchMeterUsage intents in chunks, retrying
// UnprocessedRecords, throttling and errors of the whole call.
func (m *Meter) sendBatches(ctx context.Context, pending []*intent, deadline time.Time) (moved bool, err error) {
	defer m.saveResolved()
	var queue []*intent
	for _, in := range pending {
		if !withinWindow(in.Hour.Unix(), m.now(), m.set.window) {
			m.expire(in, "hour is past the BatchMeterUsage window")
			moved = true
			continue
		}
		queue = append(queue, in)
	}
	bo := m.backoff()
	// A call has one ProductCode and is sent or not (dry_run) as a whole:
	// each intent goes out under its own product and dry-run flag, as
	// decided when it was created, even across a config change.
	var chunks [][]*intent
	for _, group := range groupByProduct(queue) {
		chunks = append(chunks, chunkBatches(group)...)
	}
	var failed int
	var lastErr error
	for len(chunks) > 0 {
		chunk := chunks[0]
		chunks = chunks[1:]
		if chunk[0].DryRun {
			m.mu.Lock()
			for _, in := range chunk {
				m.resolveLocked(in, statusDryRun, "", "")
			}
			m.answeredLocked()
			m.mu.Unlock()
			continue
		}
		out, callErr := m.callBatch(ctx, chunk)
		m.crash("after-call")
		res, code := classify(ctx, callErr)
		switch res {
		case outOK:
			retry := m.applyBatchResults(chunk, out)
			if len(retry) == 0 {
				bo.Reset()
				continue
			}
			m.log.Warn("BatchMeterUsage left records unprocessed; retrying", zap.Int("records", len(retry)))
			lastErr = fmt.Errorf("%d unprocessed record(s)", len(retry))
			if !m.retryWait(ctx, bo, deadline, lastErr) {
				return moved, notReported(ctx, len(retry)+countIntents(chunks), lastErr)
			}
			chunks = append(chunkBatches(retry), chunks...)
		case outRetry:
			m.metrics.reportErrors.WithLabelValues(code).Inc()
			m.log.Warn("BatchMeterUsage failed; retrying", zap.Int("records", len(chunk)), zap.Error(callErr))
			lastErr = callErr
			if !m.retryWait(ctx, bo, deadline, callErr) {
				return moved, notReported(ctx, len(chunk)+countIntents(chunks), callErr)
			}
			chunks = append([][]*intent{chunk}, chunks...)
		case outCanceled:
			return moved, notReported(ctx, len(chunk)+countIntents(chunks), callErr)
		case outOutOfBounds:
			m.metrics.reportErrors.WithLabelValues(code).Inc()
			var keep []*intent
			for _, in := range chunk {
				if !withinWindow(in.Hour.Unix(), m.now().Add(-5*time.Minute), m.set.window) {
					m.expire(in, callErr.Error())
					moved = true
				} else {
					keep = append(keep, in)
				}
			}
			if len(keep) == len(chunk) {
				failed += m.isolate(chunk, &chunks, callErr)
				lastErr = callErr
			} else if len(keep) > 0 {
				chunks = append([][]*intent{keep}, chunks...)
			}
		default:
			m.metrics.reportErrors.WithLabelValues(code).Inc()
			failed += m.isolate(chunk, &chunks, callErr)
			lastErr = callErr
		}
	}
	if failed > 0 {
		return moved, notReported(ctx, failed, lastErr)
	}
	return moved, nil
}

// isolate handles a call refused as a whole: a chunk of several records is
// split so one bad record does not hold the others back; a single record
// stays pending (logged) and counts as failed.
func (m *Meter) isolate(chunk []*intent, chunks *[][]*intent, err error) int {
	if len(chunk) > 1 {
		singles := make([][]*intent, len(chunk))
		for i, in := range chunk {
			singles[i] = []*intent{in}
		}
		*chunks = append(singles, *chunks...)
		return 0
	}
	in := chunk[0]
	m.log.Error("BatchMeterUsage refused a record; it stays pending and is retried next pass",
		zap.String("dimension", in.Dimension), zap.String("customer", in.Customer), zap.Time("hour", in.Hour),
		zap.Int64("quantity", in.Quantity), zap.Error(err))
	return 1
}

func countIntents(chunks [][]*intent) int {
	n := 0
	for _, c := range chunks {
		n += len(c)
	}
	return n
}

func (m *Meter) callBatch(ctx context.Context, chunk []*intent) (*mm.BatchMeterUsageOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, m.opts.CallTimeout)
	defer cancel()
	input := &mm.BatchMeterUsageInput{ProductCode: aws.String(chunk[0].Product)}
	for _, in := range chunk {
		input.UsageRecords = append(input.UsageRecords, in.usageRecord())
	}
	start := time.Now()
	out, err := m.api.BatchMeterUsage(ctx, input)
	m.metrics.reportLatency.Observe(time.Since(start).Seconds())
	return out, err
}

// applyBatchResults records each record's Status and returns the intents
// to send again (UnprocessedRecords, and any the answer did not mention).
func (m *Meter) applyBatchResults(chunk []*intent, out *mm.BatchMeterUsageOutput) []*intent {
	byKey := make(map[batchKey]*intent, len(chunk))
	for _, in := range chunk {
		byKey[in.batchKey()] = in
	}
	type answer struct {
		in     *intent
		status types.UsageRecordResultStatus
		id     string
	}
	var answers []answer
	answered := make(map[*intent]bool, len(chunk))
	for _, r := range out.Results {
		if r.UsageRecord == nil {
			continue
		}
		in := byKey[recordKey(r.UsageRecord)]
		if in == nil || answered[in] {
			continue
		}
		switch r.Status {
		case types.UsageRecordResultStatusSuccess, types.UsageRecordResultStatusDuplicateRecord:
		case types.UsageRecordResultStatusCustomerNotSubscribed:
			if err := m.deadLetter(in, string(r.Status)); err != nil {
				m.log.Error("metering: dead-letter write failed; the record stays pending", zap.Error(err))
				continue
			}
		default:
			m.log.Error("BatchMeterUsage returned an unknown status; the record stays pending", zap.String("status", string(r.Status)))
			continue
		}
		answered[in] = true
		answers = append(answers, answer{in, r.Status, aws.ToString(r.MeteringRecordId)})
	}
	m.mu.Lock()
	for _, a := range answers {
		switch a.status {
		case types.UsageRecordResultStatusSuccess:
			m.resolveLocked(a.in, statusAccepted, a.id, "")
		case types.UsageRecordResultStatusDuplicateRecord:
			m.resolveLocked(a.in, statusConflict, "", "DuplicateRecord: AWS holds another quantity for this customer, dimension and hour")
		default:
			m.resolveLocked(a.in, statusNotSubscribed, "", string(a.status))
		}
	}
	if len(answers) > 0 {
		m.answeredLocked()
	}
	m.mu.Unlock()
	var retry []*intent
	for _, in := range chunk {
		if !answered[in] {
			retry = append(retry, in)
		}
	}
	return retry
}

// deadLetterEntry is one line of a metering dead-letter file.
type deadLetterEntry struct {
	Reason               string       `json:"reason"`
	Product              string       `json:"product"`
	Hour                 time.Time    `json:"hour"`
	CustomerAWSAccountID string       `json:"customer_aws_account_id,omitempty"`
	CustomerIdentifier   string       `json:"customer_identifier,omitempty"`
	License              string       `json:"license_arn,omitempty"`
	Dimension            string       `json:"dimension"`
	Quantity             int64        `json:"quantity"`
	Allocations          []allocation `json:"allocations,omitempty"`
	Records              int64        `json:"records"`
	Intent               string       `json:"intent"`
}

// deadLetter writes the intent's hour totals to
// Dir/dead-letters/<hour>-<intent id>.ndjson (the same name every time, so
// a repeat after a crash rewrites the same file).
func (m *Meter) deadLetter(in *intent, reason string) error {
	dir := filepath.Join(m.opts.Dir, deadLetterDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("metering: %w", err)
	}
	line, err := json.Marshal(deadLetterEntry{
		Reason: reason, Product: in.Product, Hour: in.Hour,
		CustomerAWSAccountID: in.CustomerAWSAccountID, CustomerIdentifier: in.CustomerIdentifier,
		License: in.License, Dimension: in.Dimension, Quantity: in.Quantity,
		Allocations: in.Allocations, Records: in.Records, Intent: in.ID,
	})
	if err != nil {
		return err
	}
	name := in.Hour.UTC().Format("20060102T15Z") + "-" + in.ID + ".ndjson"
	if err := fsutil.WriteFileAtomic(dir, name, append(line, '\n'), 0o644, nil); err != nil {
		return fmt.Errorf("metering: dead letter %s: %w", name, err)
	}
	m.metrics.deadLetters.Inc()
	return nil
}
