package ship

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/metership/metership/internal/ctxtime"
	"github.com/metership/metership/internal/retry"
)

// Retry defaults.
const (
	DefaultRetryInitial = time.Second
	DefaultRetryMax     = time.Minute
)

var (
	// ErrAttemptTimeout marks an attempt cut off by a Timeout stage; it is
	// retryable.
	ErrAttemptTimeout = errors.New("upload attempt timed out")
	// ErrGaveUp is returned by Retry when Retry.MaxElapsed ran out; the
	// last attempt's error is wrapped beside it.
	ErrGaveUp = errors.New("upload retries exhausted")
)

// PermanentError marks an error that retrying cannot fix without outside
// help; see retry.PermanentError. Retry still retries it, slowly: data is
// never dropped.
type PermanentError = retry.PermanentError

// Permanent wraps err as a PermanentError; nil stays nil.
func Permanent(err error) error { return retry.Permanent(err) }

// IsPermanent reports whether err is permanent (retry.IsPermanent); an
// attempt cut off by a Timeout stage (ErrAttemptTimeout) never is.
func IsPermanent(err error) bool {
	return !errors.Is(err, ErrAttemptTimeout) && retry.IsPermanent(err)
}

// Retry retries Next in the style of the OpenTelemetry exporterhelper
// retry sender, with the project's one backoff (internal/retry: exponential
// with equal jitter). Transient errors wait a random time in [d/2, d] with
// d = min(Max, Initial*2^(attempt-1)); permanent errors (see IsPermanent)
// are wrapped with Permanent, reported, and retried slowly, in [Max/2,
// Max], because data is never dropped: an operator can fix the
// credentials or the bucket while the agent keeps trying.
type Retry struct {
	Next Uploader
	// Initial is the first backoff bound; default DefaultRetryInitial.
	Initial time.Duration
	// Max caps the backoff and is the interval for permanent errors;
	// default DefaultRetryMax.
	Max time.Duration
	// MaxElapsed stops retrying with ErrGaveUp once the next wait would end
	// past it; 0 retries until the context ends.
	MaxElapsed time.Duration
	// OnError, when set, is called after each failed attempt that will be
	// retried, with the error (wrapped by Permanent when permanent), the
	// 1-based attempt number and the wait before the next attempt.
	OnError func(err error, attempt int, permanent bool, wait time.Duration)
}

// Put calls Next until it succeeds, ctx ends or MaxElapsed runs out. When ctx
// ends it returns an error wrapping ctx.Err() (naming the last attempt's
// error), and the caller keeps the data for later.
func (r Retry) Put(ctx context.Context, obj *Object) error {
	initial, maxWait := r.Initial, r.Max
	if initial <= 0 {
		initial = DefaultRetryInitial
	}
	if maxWait <= 0 {
		maxWait = DefaultRetryMax
	}
	bo := retry.Backoff{Initial: initial, Max: maxWait}
	start := time.Now()
	for attempt := 1; ; attempt++ {
		err := r.Next.Put(ctx, obj)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("put %s: %w after %d attempts (last error: %v)", obj.Key, ctx.Err(), attempt, err) //nolint:errorlint // the outcome is the context's end; the last attempt's error is only told
		}
		permanent := IsPermanent(err)
		var wait time.Duration
		if permanent {
			err = Permanent(err)
			wait = bo.Slow()
		} else {
			wait = bo.Next()
		}
		if r.MaxElapsed > 0 && time.Since(start)+wait > r.MaxElapsed {
			return fmt.Errorf("put %s: %w after %d attempts in %s: %w", obj.Key, ErrGaveUp, attempt, time.Since(start).Round(time.Millisecond), err)
		}
		if r.OnError != nil {
			r.OnError(err, attempt, permanent, wait)
		}
		if !ctxtime.Sleep(ctx, wait) {
			return fmt.Errorf("put %s: %w after %d attempts (last error: %v)", obj.Key, ctx.Err(), attempt, err) //nolint:errorlint // the outcome is the context's end; the last attempt's error is only told
		}
	}
}
