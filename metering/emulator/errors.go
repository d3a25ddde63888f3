package emulator

import (
	"fmt"
	"net/http"
)

// Error type names written in "__type" and X-Amzn-ErrorType. The modelled
// ones match the shapes in the SDK's types/errors.go, so the SDK returns its
// typed error (e.g. *types.DuplicateRequestException); the rest are AWS's
// generic service errors, which the SDK surfaces as *smithy.GenericAPIError.
const (
	CodeCustomerNotEntitled       = "CustomerNotEntitledException"
	CodeDisabledAPI               = "DisabledApiException"
	CodeDuplicateRequest          = "DuplicateRequestException"
	CodeIdempotencyConflict       = "IdempotencyConflictException"
	CodeInternalServiceError      = "InternalServiceErrorException"
	CodeInvalidCustomerIdentifier = "InvalidCustomerIdentifierException"
	CodeInvalidEndpointRegion     = "InvalidEndpointRegionException"
	CodeInvalidLicense            = "InvalidLicenseException"
	CodeInvalidProductCode        = "InvalidProductCodeException"
	CodeInvalidPublicKeyVersion   = "InvalidPublicKeyVersionException"
	CodeInvalidTag                = "InvalidTagException"
	CodeInvalidToken              = "InvalidTokenException"
	CodeInvalidUsageAllocations   = "InvalidUsageAllocationsException"
	CodeInvalidUsageDimension     = "InvalidUsageDimensionException"
	CodeThrottling                = "ThrottlingException"
	CodeTimestampOutOfBounds      = "TimestampOutOfBoundsException"

	// CodeDryRunOperation answers a valid MeterUsage with DryRun set.
	CodeDryRunOperation = "DryRunOperation"
	// CodeValidation answers requests that break the model's constraints
	// (missing required member, too many records, out-of-range number).
	CodeValidation = "ValidationException"
	// CodeSerialization answers a body that is not the operation's JSON.
	CodeSerialization = "SerializationException"
	// CodeUnknownOperation answers an X-Amz-Target this service lacks.
	CodeUnknownOperation = "UnknownOperationException"
	// CodeMissingAuthenticationToken answers a request without SigV4.
	CodeMissingAuthenticationToken = "MissingAuthenticationTokenException"
	// CodeIncompleteSignature answers a malformed Authorization header.
	CodeIncompleteSignature = "IncompleteSignatureException"
	// CodeInvalidSignature answers a credential scoped to another service.
	CodeInvalidSignature = "InvalidSignatureException"
)

// StatusDryRun is the HTTP status of a DryRunOperation answer; AWS's other
// JSON services (EC2) use 412 for it, and the SDK does not retry it.
const StatusDryRun = http.StatusPreconditionFailed

// apiError is one AWS error answer: its HTTP status and JSON body.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

// newError builds an apiError with a formatted message.
func newError(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

// badRequest builds a 400 apiError, the status of almost every AWS error.
func badRequest(code, format string, args ...any) *apiError {
	return newError(http.StatusBadRequest, code, format, args...)
}
