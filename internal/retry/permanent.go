package retry

import (
	"context"
	"errors"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsretry "github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"
)

// PermanentError marks an error that retrying cannot fix without outside
// help (credentials, permissions, a missing bucket, a bad request).
// Callers still retry it, slowly (Backoff.Slow): data is never dropped.
type PermanentError struct {
	Err error
}

func (e *PermanentError) Error() string { return "permanent error: " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err as a PermanentError; nil stays nil.
func Permanent(err error) error {
	if err == nil || isMarked(err) {
		return err
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err is permanent: wrapped by Permanent, or
// an AWS / HTTP error that repeating the same request cannot fix, such as
// 403 AccessDenied, InvalidAccessKeyId or SignatureDoesNotMatch, 404
// NoSuchBucket, or 400 InvalidArgument. Throttling (503 SlowDown, 429,
// ThrottlingException), other 5xx, 408, 409 ConditionalRequestConflict,
// timeouts, network errors and context errors are not permanent.
func IsPermanent(err error) bool {
	if err == nil {
		return false
	}
	if isMarked(err) {
		return true
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if transientCode(err) {
		return false
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

// isMarked reports whether err wraps a PermanentError.
func isMarked(err error) bool {
	var pe *PermanentError
	return errors.As(err, &pe)
}

// transientCode reports whether err carries an AWS error code worth
// retrying whatever the HTTP status it comes with: the SDK's retryable
// and throttle codes, and the project's extras.
func transientCode(err error) bool {
	rules := awsretry.IsErrorRetryables{
		awsretry.RetryableErrorCode{Codes: awsretry.DefaultRetryableErrorCodes},
		awsretry.RetryableErrorCode{Codes: awsretry.DefaultThrottleErrorCodes},
		awsretry.IsErrorRetryableFunc(extraTransient),
	}
	return rules.IsErrorRetryable(err) == aws.TrueTernary
}

// extraTransient covers codes the SDK's lists leave out that S3, STS and
// the Marketplace Metering Service send for conditions that pass: server
// trouble named by code (sometimes with a 4xx status behind a proxy), a
// conditional write racing another, a skewed clock the SDK corrects, and
// credentials that a refresh renews.
func extraTransient(err error) aws.Ternary {
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) {
		return aws.UnknownTernary
	}
	switch apiErr.ErrorCode() {
	case "InternalError", "ServiceUnavailable", // S3 5xx, by code
		"ConditionalRequestConflict", "OperationAborted", // S3 concurrent writes
		"RequestTimeTooSkewed",                                           // S3 clock skew
		"ExpiredToken", "ExpiredTokenException", "IDPCommunicationError": // STS / credentials
		return aws.TrueTernary
	}
	return aws.UnknownTernary
}
