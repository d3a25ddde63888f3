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
// default. At most a few partitions are compressed at once, so memory does
// not grow with the number of partitions (see maxOpenGroups).
//
// Keys are deterministic: $UUID is ObjectUUID(key id, segment sequence,
// partition), where the key id is the buffer directory's instance id
// (buffer.Buffer.ObjectKeyID), unique to that directory even when agents
// share an agent id. When an agent crashes after uploading but before
// acknowledging a segment, it re-encodes the segment after restart to the
// same keys; the S3 uploader's PutObject carries If-None-Match: *, so S3
// answers 412 for objects that made it. The uploader then checks that the
// object there is this one (the SHA-256 in its metadata, its ETag, or its
// content) and reports success; an object with other content is a key
// collision (ErrKeyCollision), and the Collisions stage writes this object
// under a fresh key derived from its content. The file uploader likewise
// never replaces an existing file and compares its content. Records are
// therefore uploaded at least once and stored exactly once.
//
// Uploads compose as stages, outermost first: Retry (internal/retry's
// exponential backoff with equal jitter, permanent errors retried slowly,
// never dropped) -> Timeout
// (per attempt) -> Collisions (re-key on ErrKeyCollision) -> S3Uploader or
// FileUploader. Shutdown cancels the context
// given to Put; every stage returns promptly with an error wrapping the
// context's error and the segment stays in the buffer.
package ship
