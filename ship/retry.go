package ship

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/aws/smithy-go"

	"github.com/metership/metership/internal/ctxtime"
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
// help (credentials, permissions, a missing bucket, a bad request). Retry
// still retries it, slowly: data is never dropped.
type PermanentError struct {
	Err error
}

func (e *PermanentError) Error() string { return "permanent error: " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err as a PermanentError; nil stays nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	var pe *PermanentError
	if errors.As(err, &pe) {
		return err
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err is permanent: wrapped by Permanent, or an
// S3 / HTTP error that repeating the same request cannot fix, such as 403
// AccessDenied, InvalidAccessKeyId or SignatureDoesNotMatch, 404
// NoSuchBucket, or 400 InvalidArgument. Throttling (503 SlowDown, 429), other
// 5xx, 408, 409 ConditionalRequestConflict, timeouts, network errors and
// context errors are not permanent.
func IsPermanent(err error) bool {
	if err == nil {
		return false
	}
	var pe *PermanentError
	if errors.As(err, &pe) {
		return true
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrAttemptTimeout) {
		return false
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		if transientCodes[apiErr.ErrorCode()] {
			return false
		}
	}
	var se interface{ HTTPStatusCode() int }
	if errors.As(err, &se) {
		switch code := se.HTTPStatusCode(); {
		case code == 408 || code == 409 || code == 429 || code >= 500:
			return false
		case code >= 400:
			return true
		}
	}
	var ipe *smithy.InvalidParamsError
	var serr *smithy.SerializationError
	if errors.As(err, &ipe) || errors.As(err, &serr) {
		return true
	}
	// Anything else (connection refused or reset, EOF, DNS, credential
	// fetch failures) is treated as transient.
	return false
}

// transientCodes are AWS error codes that are worth retrying whatever the
// HTTP status they come with.
var transientCodes = map[string]bool{
	"SlowDown":                       true,
	"Throttling":                     true,
	"ThrottlingException":            true,
	"ThrottledException":             true,
	"RequestThrottled":               true,
	"RequestThrottledException":      true,
	"TooManyRequestsException":       true,
	"RequestLimitExceeded":           true,
	"BandwidthLimitExceeded":         true,
	"RequestTimeout":                 true,
	"RequestTimeoutException":        true,
	"InternalError":                  true,
	"ServiceUnavailable":             true,
	"ConditionalRequestConflict":     true,
	"OperationAborted":               true,
	"RequestTimeTooSkewed":           true,
	"ExpiredToken":                   true,
	"ExpiredTokenException":          true,
	"IDPCommunicationError":          true,
	"PriorRequestNotComplete":        true,
	"EC2ThrottledException":          true,
	"TransactionInProgressException": true,
}

// Retry retries Next with exponential backoff and full jitter, in the style
// of the OpenTelemetry exporterhelper retry sender. Transient errors wait a
// random time in [0, min(Max, Initial*2^(attempt-1))]; permanent errors (see
// IsPermanent) are wrapped with Permanent, reported, and retried slowly, at
// about Max, because data is never dropped: an operator can fix the
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
	maxWait = max(maxWait, initial)
	start := time.Now()
	bound := initial
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
			wait = maxWait/2 + rand.N(maxWait/2+1)
		} else {
			wait = rand.N(bound + 1)
			bound = min(bound*2, maxWait)
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
