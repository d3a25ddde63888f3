// Package emulator is a local AWS Marketplace Metering Service: an
// http.Handler that speaks the service's real wire protocol and enforces
// its rules with its own error types, so code using the AWS SDK (metership's
// metering reporter, or anyone's) can be tested end to end without AWS.
//
// # What it emulates
//
// The AWS JSON 1.1 protocol: POST /, Content-Type
// application/x-amz-json-1.1, X-Amz-Target AWSMPMeteringService.<Op>,
// timestamps as epoch seconds, errors as an HTTP status plus
// {"__type": "<Exception>", "message": "..."} and X-Amzn-ErrorType. The
// aws-sdk-go-v2 marketplacemetering client maps every modelled error to its
// typed error (*types.DuplicateRequestException and so on) and retries
// ThrottlingException and 5xx as it would against AWS.
//
// Operations:
//
//   - MeterUsage: configured ProductCode and dimension; Timestamp within
//     MeterUsageWindow (6 h: refused 6 h or more after it) in the past and FutureSkew (5 min) in the
//     future; UsageQuantity 0..2147483647; UsageAllocations (1..2500, each
//     with no tags or 1..5 tags matching AWS's pattern, unique tag sets,
//     quantities summing to UsageQuantity). Usage is accepted once per
//     product, dimension, hour (Timestamp truncated) and caller: an
//     identical repeat returns the original MeteringRecordId, a different
//     quantity or allocation gets DuplicateRequestException. A ClientToken
//     (per caller) reused with different parameters, the exact Timestamp
//     included, gets IdempotencyConflictException (409); reused with the
//     same ones, the original answer. DryRun validates everything and
//     answers DryRunOperation (412) without recording.
//   - BatchMeterUsage: up to 25 records, body under 1 MB; exactly one of
//     CustomerIdentifier and CustomerAWSAccountId per record; Timestamp
//     within BatchWindow (6 h, like MeterUsage: the API reference says
//     records are not accepted 6 hours or more after the event) and, as in AWS's billing-cycle rule, not in a
//     previous month once MonthEndGrace (6 h) of the new month has passed.
//     Any invalid record fails the whole request. Valid records get Status
//     Success, CustomerNotSubscribed (not in EntitledCustomers) or
//     DuplicateRecord (same product, customer, license, dimension and hour
//     already recorded with another quantity; an identical repeat is
//     Success with the original MeteringRecordId). A request without
//     ProductCode resolves each record's product through its LicenseArn.
//   - RegisterUsage and ResolveCustomer, minimally: see Config.
//
// Choices where AWS's documentation is silent: a product configured with
// no dimensions accepts any dimension name; an empty EntitledCustomers
// list subscribes every customer; constraint violations without a modelled
// exception (missing members, more than 25 records, quantities out of
// range) answer ValidationException, which the SDK returns as a
// *smithy.GenericAPIError.
//
// The caller identity behind MeterUsage's once-per-hour rule is the SigV4
// access key id, or the X-Emulator-Instance header when present, so tests
// give each simulated pod its own static credentials.
//
// # What it does not do
//
// It does not verify SigV4 signatures: it requires an
// AWS4-HMAC-SHA256 Authorization header whose credential scope names the
// aws-marketplace service (else 403) and the configured Region (else
// InvalidEndpointRegionException). RegisterUsage signatures are unsigned
// JWTs. State lives in memory only and is lost on exit. Bedrock AgentCore
// semantics (several reports per hour) are not emulated.
//
// # Side endpoints
//
// Outside the AWS protocol: GET /_state (the State as JSON: accepted
// records, conflicts, request and error counts, pending faults),
// POST /_faults (a JSON Faults such as
// {"throttle":2,"internal":1,"unprocessed":3,"latency":"250ms","disabled_api":false},
// replacing any pending faults), POST /_reset and GET /_healthz. The same
// are available in Go as State, InjectFaults and Reset.
//
// # Running it
//
//	metership emulate-metering --listen 127.0.0.1:8787
//
// serves DefaultConfig (product metership-demo with dimensions api_calls,
// storage_gb and requests) until interrupted; point a client at it with
// BaseEndpoint "http://127.0.0.1:8787", Region us-east-1 and any static
// credentials. In Go tests:
//
//	srv := httptest.NewServer(emulator.New(emulator.DefaultConfig()))
//	defer srv.Close()
//	client := marketplacemetering.New(marketplacemetering.Options{
//		Region:       "us-east-1",
//		BaseEndpoint: aws.String(srv.URL),
//		Credentials:  credentials.NewStaticCredentialsProvider("AKIDPOD1", "secret", ""),
//		HTTPClient:   srv.Client(),
//	})
package emulator
