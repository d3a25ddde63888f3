// Package buffer is metership's durable disk buffer: one log of segment
// files between the inputs (tailer, Fluent Bit plugin, ship) and the
// uploader.
//
// Producers encode a Batch outside any lock and Write it; the batch is
// durable (per Options.Sync) when Write returns, and only then may the
// producer acknowledge its input. The active segment is sealed by size
// (Options.SegmentSize), by age (SealOlderThan, for flush_interval), by
// Seal and by Close. Consumers take sealed segments with Next, iterate
// them with Segment.Frames, and Ack them once uploaded and counted (Ack
// deletes the file; AckAll does several with one state write) or Release
// them to retry. Unacked segments are handed
// out again after a restart.
//
// The buffer is bounded: Write refuses a batch with ErrFull, writing
// nothing, while the segment files plus the batch's frames would exceed
// Options.MaxSize (framing is not counted, so the files stay within MaxSize
// plus one batch's framing). The producer then waits with WaitForSpace,
// which Ack wakes: back-pressure, not loss.
//
// # Directory
//
//	Dir/
//	  LOCK                          flock'd while a Buffer has the directory open
//	  meta                          {"version":1,"agent_id":"...","next_seq":N,
//	                                 "instance_id":"<uuid>","instance_keys_from":K}
//	  state                         durable checkpoints as of segment asOf
//	  00000000000000000041.seg      sealed: waiting for Next / Ack
//	  00000000000000000042.open     the active segment (at most one)
//	  00000000000000000007.seg.bad  corrupt data recovery set aside
//
// meta and state are replaced atomically: temp file, fsync, rename, fsync
// of the directory. Segment sequences only grow: next_seq is persisted
// before a segment with that sequence is created, so a sequence is never
// used twice, even after every segment was acked and deleted (object keys
// derive from instance id + sequence; a reused key would be refused by
// If-None-Match). instance_id is generated once per directory and never
// changed by Options.AgentID, so buffers sharing an agent id still write
// distinct keys; segments below instance_keys_from predate it and keep
// their agent-id keys (Buffer.ObjectKeyID).
//
// # Segment file
//
//	+-------------------+---------+---------------------+------------+
//	| magic "MSHPSEG" v | seq u64 | created unix ns i64 | crc32c u32 |   28 bytes
//	+-------------------+---------+---------------------+------------+
//	| frame | frame | ... | commit | frame | ... | commit | ...        frames
//	+----------------------------------------------------------------+
//
//	frame:
//	+------------+------------+---------+-------------+--------------+
//	| length u32 | crc32c u32 | type u8 | time i64 ms | data (length)|
//	+------------+------------+---------+-------------+--------------+
//
// (The magic's last byte is the version, 0x02; version 1 segments, which
// have no aggregate frames, are still read.) Integers are little-endian;
// the CRC-32C (Castagnoli) covers type, time and data. Frame types: 'R'
// record (one NDJSON meter record line), 'D' dead letter (JSON entry), 'T'
// tag (data is the tag of the frames that follow in this segment; the tag is
// "" at the start of a segment), 'C' commit, 'A' aggregate (opaque to the
// buffer: a summary of the batch's records written by its producer, see
// Batch.SetAggregate). Data is at most MaxFrameData bytes.
//
// One Write is, in one segment:
//
//	[T tag if it differs from the segment's current tag] [A aggregate] R/D frames... C
//
// The commit frame's data holds the batch's checkpoints: uvarint count,
// then per checkpoint uvarint source length, source, offset i64, uvarint
// meta length, meta. A batch never spans segments: if it would take a
// non-empty active segment past SegmentSize, that segment is sealed first.
// A failed write (a full disk) is truncated back to where the batch
// began and returned as is; the buffer goes on.
//
// # Disk faults
//
// After a failed fsync nothing says which unsynced pages reached the
// disk, and Linux may already have marked them clean and reported the
// error once, so a retried fsync can "succeed" without them
// ("fsyncgate"). Under SyncAlways no batch past the last successful fsync
// was acknowledged, so the buffer recovers in place: it truncates the
// active segment to the end of the last durable batch, fsyncs it, seals
// what that prefix holds (or removes it when it holds no records, its
// checkpoints kept in the state file) and starts a new segment at the
// next Write. Every batch cut off gets an error wrapping ErrNotDurable
// and is retried by its producer; Checkpoints never named it. A failed
// write whose partial batch cannot be truncated away is handled the same
// way. If the recovery's own truncate, fsync or seal fails, or a fourth
// fault comes before any Write succeeded again (a segment with nothing
// durable is cut without an fsync, so a disk that fails every fsync
// would otherwise be "recovered" from forever), the disk is not usable:
// the buffer refuses writes with ErrFailed, Failed() is closed, and the
// process should restart (Open recovers every committed batch). Under SyncInterval and SyncNever the batches since the last
// fsync were already acknowledged, and a cut would lose them for certain:
// a failed fsync fails the buffer (ErrFailed) instead, and the next Open
// keeps whatever of them verifies. Stats reports the last disk error
// (DiskError, DiskErrorSince, cleared by the next Write, Seal or Ack that
// succeeds), the in-place Recoveries and Failed, for health checks.
//
// The state file is "MSHPCKP\x01", asOf u64, the checkpoints in the commit
// encoding, and a CRC-32C of all that.
//
// # Durability and group commit
//
// SyncAlways: Write appends under the mutex, then waits until an fsync
// covers its bytes. If no fsync is running the writer becomes the leader
// and fsyncs with the mutex released; writers appending meanwhile wait and
// the next leader's single fsync covers all of them. The active segment's
// descriptor is never closed or replaced while a leader syncs it.
// SyncInterval: Write returns once the data is in the page cache; a
// goroutine fsyncs every SyncInterval. SyncNever: the OS flushes. Sealing
// always fsyncs the segment before renaming it to .seg, and renames are
// followed by an fsync of the directory.
//
// # Checkpoints
//
// Checkpoints returns, per source, the position carried by the last
// durable commit frame: exactly what the buffer holds (or has already
// shipped). The map is updated only when a batch is durable (SyncAlways:
// when the fsync covering it ends; other policies: when Write returns).
// Ack first writes the state file, holding the map and asOf = sequence of
// the active segment, then deletes the segment. Open loads the state file
// and re-applies, in order, the commit frames of surviving segments with
// seq >= asOf. Re-applying commits the state already holds is harmless
// (later commits win), and older unacked segments (seq < asOf) are not
// replayed, so a checkpoint never moves back. Under SyncInterval and
// SyncNever, Ack fsyncs the active segment before writing the state file,
// so the state never names a position whose records a power loss could
// take back. A batch with only checkpoints is committed like any other;
// a segment that ends up with no records or dead letters is not shipped:
// its checkpoints go to the state file and the file is removed.
//
// # Recovery
//
// Open takes the lock (ErrLocked if held by another Buffer, in this process
// or another), reads meta (ErrBadMeta if unreadable: Open never guesses a
// sequence), removes leftover temp files, and scans segments in sequence
// order. In each it keeps frames up to the last intact commit frame; bytes
// past the first frame that fails its length or CRC check are never
// trusted.
//
//   - .open (the crash's active segment): a torn or uncommitted tail is
//     truncated (Recovered.TruncatedBytes, DroppedFrames), then the segment
//     is fsync'd and sealed, because its committed batches were
//     acknowledged. One shorter than a header was created by a crash
//     before anything was written to it and is removed.
//   - .seg: it was fsync'd whole before its rename, so damage means the
//     disk changed it. The original is copied to <name>.bad, then the valid
//     committed prefix is kept as the segment.
//   - a header that does not verify (or names another sequence): the whole
//     file is renamed to <name>.bad.
//   - a segment left without records or dead letters is removed, after the
//     state file records the checkpoints of its commits.
//
// Every recovery step is idempotent, so a crash during recovery is
// recovered by the next Open.
//
// # When records could be lost or duplicated
//
//   - SyncAlways: a batch whose Write returned nil survives kill -9 and
//     power loss (given a disk that honours fsync). A batch whose Write was
//     interrupted by a crash may or may not survive; Checkpoints tells
//     which, so a tailer resuming from them neither loses nor repeats a
//     line. A producer that retries unacknowledged input regardless (the
//     Fluent Bit plugin, whose chunk is retried after FLB_RETRY or a crash)
//     can duplicate such a batch; records carry a deterministic uniqueId for
//     downstream dedup.
//   - SyncInterval / SyncNever: kill -9 loses nothing (the page cache
//     survives the process). Power loss can take back up to SyncInterval
//     (SyncNever: whatever the OS had not flushed) of batches whose Write
//     had returned. The checkpoints fall back consistently with the data,
//     so a tailer re-reads those lines; input acknowledged to Fluent Bit in
//     that window is lost.
//   - A Write that returned ErrNotDurable was cut off and is not in the
//     buffer. One that returned ErrFailed may still be on disk (its bytes
//     were in the page cache when the process stopped): retrying it after
//     the restart can duplicate the batch.
//   - A segment uploaded but not yet acked when the process died is handed
//     out again: the upload repeats under the same object key (same agent
//     id and sequence) and is refused by If-None-Match, so nothing ships
//     twice. A crash between writing the state file and deleting the
//     segment likewise only repeats the upload.
//   - Disk damage to a sealed segment loses the records after the damage
//     from the pipeline; they stay in the .bad file for manual recovery.
//     A corrupt header sets the whole segment aside. Open finds damage
//     done while the agent was down; damage done while it runs surfaces
//     as ErrCorrupt from Frames, and Salvage then does the same to that
//     one segment, so it does not fail on every retry.
//
// # Source files
//
// buffer.go holds the Buffer type, its options and accessors; batch.go
// the Batch a Write takes; write.go the write path and group commit;
// seal.go sealing, Next, Ack and Salvage; fault.go the disk-fault
// handling (in-place recovery of the active segment); recover.go Open and
// recovery (recoverSegment, its frame scan scanFrames); pending.go what
// is not yet shipped, for metering; checkpoint.go, frame.go, segment.go
// and files.go the on-disk encodings.
package buffer
