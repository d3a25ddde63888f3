package buffer

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/metership/metership/internal/fsutil"
)

// File names inside Options.Dir.
const (
	lockName  = "LOCK"
	metaName  = "meta"
	stateName = "state"
	tmpSuffix = fsutil.TmpSuffix
	openExt   = ".open"
	sealedExt = ".seg"
	badExt    = ".bad"
	seqDigits = 20
)

// ErrBadMeta is returned by Open when the meta or state file exists but
// cannot be decoded. Open refuses to guess: a lost next sequence could make a
// new segment reuse an uploaded segment's object key. Move the file aside to
// start over deliberately.
var ErrBadMeta = errors.New("buffer: unreadable meta file")

// segmentName is the file name of segment seq with extension ext.
func segmentName(seq uint64, ext string) string {
	return fmt.Sprintf("%0*d%s", seqDigits, seq, ext)
}

// parseSegmentName returns the sequence and extension (".open", ".seg",
// ".open.bad", ".seg.bad") of a segment file name.
func parseSegmentName(name string) (seq uint64, ext string, ok bool) {
	if len(name) <= seqDigits {
		return 0, "", false
	}
	seq, err := strconv.ParseUint(name[:seqDigits], 10, 64)
	if err != nil {
		return 0, "", false
	}
	ext = name[seqDigits:]
	switch ext {
	case openExt, sealedExt, openExt + badExt, sealedExt + badExt:
		return seq, ext, true
	}
	return 0, "", false
}

// meta is the buffer's identity, stored as JSON in Dir/meta.
type meta struct {
	Version int    `json:"version"`
	AgentID string `json:"agent_id"`
	// NextSeq is the lowest sequence never handed to a segment. It is
	// persisted before a segment with that sequence is created.
	NextSeq uint64 `json:"next_seq"`
	instanceMeta
}

// instanceMeta is the part of meta that names this directory. Version 1
// meta files written before it existed lack both fields; Open then adds
// them. Older binaries ignore and drop them (see recover).
type instanceMeta struct {
	// InstanceID is generated once per directory and never overridden by
	// Options.AgentID, so two buffers with the same agent id still name
	// their objects apart.
	InstanceID string `json:"instance_id,omitempty"`
	// KeysFrom is the first sequence whose object keys derive from
	// InstanceID; segments below it were written by a version that keyed
	// them by the agent id, and keep those keys (see ObjectKeyID).
	KeysFrom uint64 `json:"instance_keys_from,omitempty"`
}

// metaFor is the meta to persist before handing out sequence nextSeq-1.
func (b *Buffer) metaFor(nextSeq uint64) meta {
	return meta{Version: 1, AgentID: b.agentID, NextSeq: nextSeq, instanceMeta: b.instance}
}

// InstanceID returns the id unique to this buffer directory: a random UUID
// generated the first time the directory is opened (by this version or a
// later one) and kept in Dir/meta, so it is stable across restarts and is
// not changed by Options.AgentID. Object keys derive from it (see
// ObjectKeyID); anything else that must tell two buffers apart when they
// share an agent id (metering ClientTokens, replicas) can use it too. A
// copied directory copies its id: give each copy a fresh meta.
func (b *Buffer) InstanceID() string { return b.instance.InstanceID }

// ObjectKeyID returns the id that the object keys of segment seq derive
// from: InstanceID for segments created since the directory got one, and
// for older segments (written by a version that predates InstanceID) the
// agent id they were keyed by then, so that an upgrade never re-keys a
// segment that may already be uploaded.
func (b *Buffer) ObjectKeyID(seq uint64) string {
	if seq < b.instance.KeysFrom {
		return b.agentID
	}
	return b.instance.InstanceID
}

// readMeta loads Dir/meta; ok is false when it does not exist.
func readMeta(dir string) (m meta, ok bool, err error) {
	p := filepath.Join(dir, metaName)
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return meta{}, false, nil
	}
	if err != nil {
		return meta{}, false, fmt.Errorf("buffer: read %s: %w", p, err)
	}
	if err := json.Unmarshal(data, &m); err != nil || m.Version != 1 || m.AgentID == "" {
		return meta{}, false, fmt.Errorf("%w: %s: %q", ErrBadMeta, p, truncateForError(data))
	}
	return m, true, nil
}

func writeMeta(dir string, m meta) error {
	data, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("buffer: encode meta: %w", err)
	}
	return atomicWrite(dir, metaName, append(data, '\n'))
}

// stateMagic starts the state file: the durable checkpoints as of a segment.
var stateMagic = [8]byte{'M', 'S', 'H', 'P', 'C', 'K', 'P', 1}

// encodeState lays out the state file: magic, asOf (u64), the checkpoint
// encoding of a commit frame, CRC-32C (u32) of everything before it.
func encodeState(asOf uint64, cps []Checkpoint) []byte {
	out := make([]byte, 0, len(stateMagic)+8+checkpointsSize(cps)+4)
	out = append(out, stateMagic[:]...)
	out = binary.LittleEndian.AppendUint64(out, asOf)
	out = appendCheckpoints(out, cps)
	return binary.LittleEndian.AppendUint32(out, crc32.Checksum(out, castagnoli))
}

// readState loads Dir/state into m and returns its asOf sequence; a missing
// file yields asOf 0 (replay every segment).
func readState(dir string, m checkpointMap) (asOf uint64, err error) {
	p := filepath.Join(dir, stateName)
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("buffer: read %s: %w", p, err)
	}
	bad := fmt.Errorf("%w: %s: checksum or layout does not verify", ErrBadMeta, p)
	if len(data) < len(stateMagic)+8+1+4 || [8]byte(data[:8]) != stateMagic {
		return 0, bad
	}
	body, sum := data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return 0, bad
	}
	asOf = binary.LittleEndian.Uint64(body[8:16])
	if err := decodeCheckpoints(body[16:], m.applyDecoded); err != nil {
		return 0, fmt.Errorf("%w: %s: %w", ErrBadMeta, p, err)
	}
	return asOf, nil
}

// atomicWrite replaces dir/name with data: temp file, fsync, rename, fsync
// dir. A crash leaves either the old or the new content, never a mix.
func atomicWrite(dir, name string, data []byte) error {
	if err := fsutil.WriteFileAtomic(dir, name, data, 0o640, nil); err != nil {
		return fmt.Errorf("buffer: write %s: %w", filepath.Join(dir, name), err)
	}
	return nil
}

// copyFile copies src to dst atomically (temp, fsync, rename, fsync dir).
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close() //nolint:errcheck // read-only source; the copy is fsynced and checked
	return fsutil.WriteAtomicFrom(filepath.Dir(dst), filepath.Base(dst), in, 0o640, nil)
}

// syncDir fsyncs a directory so renames, creations and removals in it are
// durable.
func syncDir(dir string) error { return fsutil.SyncDir(dir) }

func truncateForError(b []byte) string {
	const max = 64
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return strings.TrimSpace(string(b))
}
