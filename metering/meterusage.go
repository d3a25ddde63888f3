package metering

import (
	"context"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	mm "github.com/aws/aws-sdk-go-v2/service/marketplacemetering"
	"github.com/aws/aws-sdk-go-v2/service/marketplacemetering/types"
	"go.uber.org/zap"

	"github.com/metership/metership/internal/retry"
)

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
