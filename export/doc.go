// Package export runs usage-export jobs in the shape of Amberflo's Jobs
// API over the objects metership ships: a job names a window (range,
// endTimeOffset), meters, filters, groups and a bucket; a run reads the
// shipped objects whose dated keys overlap the window, sums meterValue
// exactly (integer nanos, like the metering ledger) and writes CSV, JSON
// or NDJSON to the job's s3Url.
//
// Exactly once: a run's key is deterministic,
// <s3Url>/<jobName>/<window start>_<window end>.<format>, written with
// If-None-Match: * (never replaced, never read, listed or deleted in the
// destination), with a <key>.manifest.json beside it. A retried or
// repeated run of the same window writes nothing new, so several servers
// sharing an s3:// store may all fire a job: one object results.
//
// Jobs live in a Store: a directory of JSON files (one server) or an S3
// prefix with conditional writes (several servers; If-Match updates mean
// a concurrent update is refused, never lost).
package export
