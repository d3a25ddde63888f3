package metering

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

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
