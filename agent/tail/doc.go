// Package tail follows application log files for the metership agent and
// hands their lines to a Sink (the disk buffer) without losing or
// duplicating a line across restarts and rotations.
//
// # Model
//
// A Tailer runs a reconcile loop (like loki's filetarget): every
// RefreshInterval, and soon after an inotify event in a watched directory,
// it evaluates the globs, starts one reader goroutine per file identity not
// yet followed, follows renames within the globs, and marks files that left
// the globs as rotated. A rotated file (renamed away or deleted) is read to
// its end and followed for RotateWait after its last growth, because a
// writer that has not reopened yet still writes to it; then it is left.
// inotify wakes readers at once; polling every PollInterval runs anyway as
// the safety net (and alone when inotify is unavailable or DisableNotify).
//
// One Tailer follows every Input (the agent's sources): whatever globs
// match a file, one reader follows it, by identity, not path. It belongs
// to the first Input (in order) that matched it when it was found, whose
// StartAt and RotateWait apply and which Chunk.Input names; it stays
// followed while any Input's glob matches it. Overlaps lists globs of
// different Inputs that can match one path.
//
// A reader reads with pread into a pooled buffer (idle files hold none),
// cuts complete lines, and hands them to Sink.Consume in chunks bounded by
// MaxChunkLines and MaxChunkBytes. Consume returning nil means the lines
// and the chunk's checkpoint are durable in the buffer, in one commit; only
// then does the reader move on. Back-pressure is the Sink's: the agent's
// Sink blocks while the buffer is full, until space frees. On an error it
// keeps the chunk and its position, waits with jittered exponential
// backoff (RetryInitial..RetryMax) and retries: never loss. A checkpoint
// therefore means "durably buffered", not "read".
//
// The tailer keeps no registry file: the buffer persists each chunk's
// checkpoint with its records, and a new Tailer is given the restored
// checkpoints (Options.Checkpoints).
//
// # Lines
//
// The line policy is the pipeline's (pipeline.TrimEOL, shared by every
// input): a line ends with '\n'; Data excludes it and a '\r' right before
// it, and so does an unterminated last line delivered as is.
// Line.Offset is the file offset of its first byte and the checkpoint
// Offset is just past the last byte a chunk consumed, so a restart resumes
// exactly after the last durable line. A last line without a newline waits
// for it (it is never delivered in halves) unless FlushPartialAfter is set;
// when the tailer leaves a rotated file, or the file is truncated, an
// unterminated last line is delivered as it is rather than dropped. A line
// longer than MaxLineSize is delivered once, as TooLong with its first
// MaxLineSize bytes, when its newline arrives; the bytes in between are
// read and discarded, never held, so memory stays bounded by MaxLineSize
// plus a chunk.
//
// # File identity and Source
//
// A file is its device and inode plus a fingerprint: the xxh3 of its first
// FingerprintSize (1 KiB) bytes, or of all its bytes while it is shorter.
// The fingerprint window grows with the file: each time the file is seen
// to have grown or changed, the bytes the window covers are hashed again
// (a mismatch means the file was rewritten in place) and the window is
// extended. So a checkpoint survives a rename, and an inode reused by
// other content, or a file truncated and rewritten, is a different file.
//
// Each file generation gets a Source, minted once at its first chunk and
// never changed: "file:<dev>:<ino>:<16 hex digits of the fingerprint at
// that moment>". Later growth of the window changes only the Meta, not
// the Source, so the Source is stable while the fingerprint is not final.
// Restores match files by Meta (dev, inode, window length and hash) and
// then carry on with the Source stored in the checkpoint, never a
// recomputed one. A truncated or rewritten file is a new generation with a
// new Source, so Source+Offset (the records' uniqueId) never names two
// different lines.
//
// ResumeFile gives a whole file the same identity for metership ship,
// under its own Source prefix: a file shipped again after it grew matches
// its checkpoint (by the fingerprint over the length stored) and keeps its
// Source, so its records keep their uniqueIds.
//
// Meta (see FileID and DecodeMeta) is binary: a version byte (1), uvarint
// dev, ino and window length, the 8-byte little-endian xxh3, then the
// uvarint-length-prefixed path the file was matched by and its symbolic
// link target (empty when not a link).
//
// # Where a file starts
//
//   - A file whose identity matches a restored checkpoint resumes at its
//     Offset (the lowest, if a crash left two).
//   - A file whose inode has a restored checkpoint but whose fingerprint
//     does not match (or that is shorter than the checkpoint) was replaced
//     since: it is read from 0 and the stale checkpoint forgotten.
//   - A file found by the first scan without a checkpoint starts per
//     StartAt: at 0, or (end) just after its last newline, persisted at
//     once with a zero-line chunk so a restart does not skip what is
//     written meanwhile.
//   - Every file that appears after the first scan is read from 0, also
//     with StartAt end (Fluent Bit's and Vector's behaviour): its lines
//     were written after the tailer started. This covers delete+recreate
//     and the new file of a rename rotation.
//   - A restored checkpoint that matches nothing in the globs may be a
//     file rotated while the agent was down: the directories of its paths
//     are searched for "<name>*" (app.log.1, 0.log.20240101-120000) with
//     the same identity, and such a file is read from the checkpoint to its
//     end, then left.
//
// # Rotation
//
//   - rename (+ create): the renamed file keeps its reader and Source until
//     it is left; the new file is new.
//   - copytruncate: a size below the read offset, or changed first bytes,
//     restarts the file at 0 as a new generation (logged, counted in
//     Metrics.Truncations).
//   - delete (+ create): the open descriptor is read to the end; the new
//     file is new.
//
// # Forgetting checkpoints
//
// A chunk with Checkpoint.Offset < 0 and no lines tells the buffer to
// forget that Source (buffer.Batch.SetCheckpoint with an offset < 0). The
// tailer sends one when it leaves a rotated file — after deciding, under
// its lock, that no glob matches the file any more, so a file matched again
// before that keeps its checkpoint throughout; one matched again after is
// reopened only once the forget is durable, resumes where it was left and
// checkpoints that at once — and for a truncated or
// rewritten file's previous generation after the new generation's first
// accepted chunk. Restored checkpoints that no file ever claims (files
// deleted, or rotated out of reach, while the agent was down) are listed by
// Unclaimed for the agent's garbage collection; Stats lists the files
// followed.
//
// # When lines can be lost or repeated
//
// Never by the tailer while it runs or across a restart (kill -9 included),
// provided every rotation leaves the file where the tailer can see it.
// Lines are lost by the rotation itself, as with any tailer, when:
//
//   - copytruncate truncates lines not yet read (they exist only in the
//     copy; keep the copies out of the globs, or they are read again as
//     new files, under another Source);
//   - a file is deleted, or renamed to a name neither matched by the globs
//     nor starting with its old name, before the tailer read it to the end
//     (while the agent is down, or within RefreshInterval of its creation,
//     or more than RotateWait after the writer's last write);
//   - with StartAt end, lines written to a file the first scan finds but
//     no checkpoint covers, before the scan.
//
// A line can be delivered twice only if the buffer accepted a chunk but
// did not persist it before a crash, which Sink's contract excludes, or if
// a crash falls between a rewritten file's first chunk and the forgetting
// of its previous generation and both generations share their first bytes.
//
// Inode numbers are required: the package works on Unix systems only.
package tail
