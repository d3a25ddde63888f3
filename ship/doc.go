// Package ship turns sealed buffer segments into objects and uploads them.
//
// The path of one segment:
//
//	FrameSource --Encoder.Encode--> []Object --Uploader.Put--> S3 or a directory
//
// Encode reads the segment's frames once and groups them by key partition:
// the object key rendered from each record's own time (UTC) and tag, without
// its $UUID and $INDEX. An object never mixes two partitions; dead letters go
// to their own objects under failed-requests/. Bodies are gzipped NDJSON by
// default.
//
// Keys are deterministic: $UUID is ObjectUUID(agent id, segment sequence,
// partition). When an agent crashes after uploading but before
// acknowledging a segment, it re-encodes the segment after restart to the
// same keys; the S3 uploader's PutObject carries If-None-Match: *, so S3
// answers 412 for objects that made it and Put reports success. The file
// uploader likewise never replaces an existing file. Records are therefore
// uploaded at least once and stored exactly once per key.
//
// Uploads compose as stages, outermost first: Retry (exponential backoff,
// full jitter, permanent errors retried slowly, never dropped) -> Timeout
// (per attempt) -> S3Uploader or FileUploader. Shutdown cancels the context
// given to Put; every stage returns promptly with an error wrapping the
// context's error and the segment stays in the buffer.
package ship
