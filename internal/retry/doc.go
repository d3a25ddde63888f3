// Package retry holds the one way metership waits between attempts and
// the one way it decides whether an error is worth repeating: the S3
// uploader (ship.Retry), the metering reporter and the shared-mode
// sender, the tailer's sink retries and the pipeline's re-ship of a
// segment all use it.
//
// # One formula: exponential backoff with equal jitter
//
// The n-th wait (n from 1) is drawn uniformly from [d/2, d] where
// d = min(Max, Initial*2^(n-1)) (the "equal jitter" of the AWS
// Architecture Blog's "Exponential Backoff and Jitter"). Equal rather than
// full jitter ([0, d]) because every caller here retries a shared,
// possibly throttled service or a full buffer: the floor d/2 keeps a
// restarted fleet from hammering it with near-zero waits, while the
// spread still de-synchronises the callers. A permanent error (see
// IsPermanent) waits at the slow end, in [Max/2, Max], every time: data
// is never dropped, an operator fixes the cause while the agent keeps
// trying.
//
// Waits honour the context (a shutdown cuts them short) and an optional
// give-up deadline: a wait that would end past it is not started.
//
// # Classification
//
// IsPermanent composes the AWS SDK's own retryable and throttle error
// codes (aws/retry.DefaultRetryableErrorCodes, DefaultThrottleErrorCodes)
// with the few codes S3, STS and Marketplace Metering send that the SDK
// does not list, then falls back on the HTTP status: 408, 409, 429 and
// 5xx are transient, other 4xx permanent. Anything without a status
// (connection refused, EOF, DNS) is transient.
package retry
