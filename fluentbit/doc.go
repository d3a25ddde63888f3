// Package fluentbit is the logic of metership's Fluent Bit output plugin,
// in pure Go so it is tested without Fluent Bit or cgo. The c-shared
// adapter in plugin/ only converts C arguments and calls a Plugin.
//
// An Instance is one `[OUTPUT] Name metership` section: its properties
// become a conf.Config (the same validation as the agent's YAML), and it
// runs its own engine (buffer, shipping, metering) over its own
// buffer_dir. Flush decodes a Fluent Bit chunk (msgpack events, both the
// [ts, record] and the [[ts, metadata], record] forms) straight into
// compact JSON lines, hands them to a pooled pipeline.Ingester and commits
// the whole chunk as one durable batch.
//
// Return codes follow the design's invariants:
//
//   - FLBOK only once every record of the chunk (valid or dead-lettered)
//     is durable in the buffer;
//   - FLBRetry when the buffer is full or the disk fails, after discarding
//     the batch, so the chunk Fluent Bit sends again is appended once;
//   - FLBError only for impossible states (an unknown instance).
//
// Duplicates: a chunk is normally one batch, written entirely or not at
// all, so a retried chunk never duplicates records. A chunk too large for
// one batch (larger than buffer_max_size allows) is committed in pieces,
// and the last chunks committed whole are remembered, so that a chunk
// Fluent Bit sends again after dying between FLB_OK and deleting it is
// not appended twice; both are kept as buffer checkpoints written with
// the chunks' own batches, and so survive restarts (chunks.go).
package fluentbit
