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
// each with a buffer checkpoint (chunkSource: a hash of the tag and the
// chunk's bytes) holding how many of the chunk's events are durable; the
// last piece drops it. If a later piece fails, the events already durable
// are skipped when Fluent Bit sends the same chunk again, after a restart
// too (checkpoints are restored at start). At most maxPartialChunks
// chunks are remembered; an older one's checkpoint leaves the buffer with
// the next write.
package fluentbit
