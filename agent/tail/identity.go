package tail

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"strings"

	"github.com/zeebo/xxh3"

	"github.com/metership/metership/buffer"
)

// FingerprintSize is how many leading bytes of a file identify its content,
// together with its device and inode. A file shorter than this is
// identified by the bytes it has; the window grows with the file until it
// reaches FingerprintSize.
const FingerprintSize = 1024

// SourcePrefix starts every Source the tailer produces. Checkpoints whose
// Source lacks it belong to other producers and are ignored by New.
const SourcePrefix = "file:"

// metaVersion is the first byte of every Meta the tailer writes.
const metaVersion = 1

// ErrBadMeta is returned by DecodeMeta when a checkpoint's Meta was not
// written by this package (or by a newer, incompatible version of it).
var ErrBadMeta = errors.New("tail: malformed checkpoint meta")

// fileKey is a file's device and inode: unique among the files that exist
// at one instant, but reusable once a file is deleted and closed.
type fileKey struct {
	dev, ino uint64
}

// fingerprint covers the first n bytes of a file.
type fingerprint struct {
	n   int    // bytes covered, 0..FingerprintSize
	sum uint64 // xxh3 of those bytes; meaningless while n == 0
}

// verify reports whether f still starts with the bytes fp covers, and if
// so extends fp to min(size, FingerprintSize) bytes. scratch must hold
// FingerprintSize bytes. A file shorter than the window it was fingerprinted
// with has been truncated, so that is a mismatch too.
func (fp *fingerprint) verify(f io.ReaderAt, size int64, scratch []byte) (bool, error) {
	want := int(min(size, FingerprintSize))
	if want < fp.n {
		return false, nil
	}
	n, err := f.ReadAt(scratch[:want], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("read fingerprint: %w", err)
	}
	if n < fp.n {
		return false, nil
	}
	if fp.n > 0 && xxh3.Hash(scratch[:fp.n]) != fp.sum {
		return false, nil
	}
	if n > fp.n {
		fp.n = n
		fp.sum = xxh3.Hash(scratch[:n])
	}
	return true, nil
}

// FileID is the identity of a tailed file as stored in a checkpoint's Meta:
// where it was, which inode it was, and a fingerprint of its first
// FingerprintLen bytes (at most FingerprintSize).
type FileID struct {
	Dev            uint64
	Ino            uint64
	FingerprintLen int
	Fingerprint    uint64 // xxh3 of the first FingerprintLen bytes
	// Path is the path the file was matched by (a glob match, possibly a
	// symbolic link); Target is the path it resolved to, when different.
	// Both are used to find a file that was rotated while the agent was down.
	Path   string
	Target string
}

// AppendMeta appends id's binary encoding: a version byte, then uvarints
// dev, ino and fingerprint length, the 8-byte little-endian fingerprint,
// and the uvarint-length-prefixed Path and Target.
func (id FileID) AppendMeta(dst []byte) []byte {
	dst = append(dst, metaVersion)
	dst = binary.AppendUvarint(dst, id.Dev)
	dst = binary.AppendUvarint(dst, id.Ino)
	dst = binary.AppendUvarint(dst, uint64(id.FingerprintLen))
	dst = binary.LittleEndian.AppendUint64(dst, id.Fingerprint)
	dst = binary.AppendUvarint(dst, uint64(len(id.Path)))
	dst = append(dst, id.Path...)
	dst = binary.AppendUvarint(dst, uint64(len(id.Target)))
	return append(dst, id.Target...)
}

// DecodeMeta decodes a checkpoint Meta written by the tailer.
func DecodeMeta(b []byte) (FileID, error) {
	var id FileID
	if len(b) == 0 || b[0] != metaVersion {
		return id, fmt.Errorf("%w: unknown version", ErrBadMeta)
	}
	d := metaDecoder{b: b[1:]}
	id.Dev = d.uvarint()
	id.Ino = d.uvarint()
	fpLen := d.uvarint()
	id.Fingerprint = d.uint64()
	id.Path = d.string()
	id.Target = d.string()
	if d.err != nil {
		return FileID{}, d.err
	}
	if fpLen > FingerprintSize {
		return FileID{}, fmt.Errorf("%w: fingerprint length %d", ErrBadMeta, fpLen)
	}
	if len(d.b) != 0 {
		return FileID{}, fmt.Errorf("%w: %d trailing bytes", ErrBadMeta, len(d.b))
	}
	id.FingerprintLen = int(fpLen)
	return id, nil
}

// metaDecoder reads Meta fields, keeping the first error.
type metaDecoder struct {
	b   []byte
	err error
}

func (d *metaDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: bad varint", ErrBadMeta)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *metaDecoder) uint64() uint64 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 8 {
		d.err = fmt.Errorf("%w: short fingerprint", ErrBadMeta)
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *metaDecoder) string() string {
	l := d.uvarint()
	if d.err != nil {
		return ""
	}
	if l > uint64(len(d.b)) {
		d.err = fmt.Errorf("%w: path length %d beyond %d bytes", ErrBadMeta, l, len(d.b))
		return ""
	}
	s := string(d.b[:l])
	d.b = d.b[l:]
	return s
}

// formatSource renders the Source of a file generation:
// "file:<dev>:<ino>:<fingerprint as 16 hex digits>".
func formatSource(k fileKey, fp fingerprint) string {
	return formatSourceWith(SourcePrefix, k, fp)
}

// FileCursor is where a whole-file reader (metership ship) starts a file:
// the tailer's identity of the file, under another Source prefix.
type FileCursor struct {
	// Source is the file's identity: the Source of its checkpoint and the
	// record.Origin ID its uniqueIds derive from. A file that grew since
	// its checkpoint keeps the Source it had.
	Source string
	// Offset is where reading resumes: the checkpoint's offset, or 0.
	Offset int64
	// Meta is the checkpoint Meta to store with the file's progress (the
	// FileID, its fingerprint extended to what the file now holds).
	Meta []byte
	// Stale are checkpoints of earlier files at the same device and inode
	// (deleted, or rewritten in place): forget them with the first commit.
	Stale []string
}

// ResumeFile identifies the whole file f (at path, with fi its Stat) among
// checkpoints the way the tailer does, under prefix (so the tailer never
// takes them for its own): a checkpoint matches when its device and inode
// are f's, f is at least as long as its offset, and f's first bytes hash
// to its fingerprint over the length it covered. The fingerprint grows with
// the file, so a file shipped at 3 lines and again at 4 resumes after the
// third with the same Source, hence the same uniqueIds. A file matching no
// checkpoint starts at 0 under a new Source.
//
// Checkpoints written before the fingerprint length was stored (Meta held
// only the path) are matched by their Source's fingerprint over
// min(offset, FingerprintSize) bytes, or over the whole current window.
func ResumeFile(prefix string, f io.ReaderAt, fi fs.FileInfo, path string, checkpoints []buffer.Checkpoint) (FileCursor, error) {
	key, _, ok := statKey(fi)
	if !ok {
		return FileCursor{}, fmt.Errorf("tail: inode numbers unavailable: %w", errors.ErrUnsupported)
	}
	var cands []restoredCheckpoint
	for _, cp := range checkpoints {
		if !strings.HasPrefix(cp.Key, prefix) || cp.Offset < 0 {
			continue
		}
		id, err := DecodeMeta(cp.Meta)
		if err != nil {
			var legacy bool
			if id, legacy = legacyWholeFileID(prefix, cp); !legacy {
				continue
			}
		}
		if id.Dev == key.dev && id.Ino == key.ino {
			cands = append(cands, restoredCheckpoint{cp: cp, id: id})
		}
	}
	scratch := make([]byte, FingerprintSize)
	best, fp, stale, err := matchCheckpoint(cands, f, fi.Size(), scratch)
	if err != nil {
		return FileCursor{}, err
	}
	c := FileCursor{Stale: stale}
	if best != nil {
		c.Source, c.Offset = best.cp.Key, best.cp.Offset
	} else {
		fp = fingerprint{}
		if _, err := fp.verify(f, fi.Size(), scratch); err != nil {
			return FileCursor{}, err
		}
		c.Source = formatSourceWith(prefix, key, fp)
	}
	c.Meta = FileID{Dev: key.dev, Ino: key.ino, FingerprintLen: fp.n, Fingerprint: fp.sum, Path: path}.AppendMeta(nil)
	return c, nil
}

// legacyWholeFileID rebuilds the identity of a checkpoint whose Meta is not
// a FileID (ship before the fingerprint length was stored) from its Source
// "<prefix><dev>:<ino>:<fingerprint>": that fingerprint covered the file's
// first min(size, FingerprintSize) bytes when it was shipped, and a
// shipped file's checkpoint is its size.
func legacyWholeFileID(prefix string, cp buffer.Checkpoint) (FileID, bool) {
	parts := strings.Split(strings.TrimPrefix(cp.Key, prefix), ":")
	if len(parts) != 3 {
		return FileID{}, false
	}
	dev, err1 := strconv.ParseUint(parts[0], 10, 64)
	ino, err2 := strconv.ParseUint(parts[1], 10, 64)
	sum, err3 := strconv.ParseUint(parts[2], 16, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return FileID{}, false
	}
	return FileID{Dev: dev, Ino: ino, FingerprintLen: int(min(cp.Offset, FingerprintSize)), Fingerprint: sum}, true
}

// matchCheckpoint picks, among the checkpoints of one device and inode,
// the one f continues: its fingerprint matches f's first bytes and f is
// at least as long as its offset. Of several, the lowest offset wins (a
// crash between a rewritten file's first commit and the forgetting of its
// predecessor leaves two; the lower risks duplicates, the higher loss).
// The others are stale. fp is best's fingerprint extended to f's current
// window.
func matchCheckpoint(cands []restoredCheckpoint, f io.ReaderAt, size int64, scratch []byte) (best *restoredCheckpoint, fp fingerprint, stale []string, err error) {
	for i := range cands {
		c := &cands[i]
		cfp := fingerprint{n: c.id.FingerprintLen, sum: c.id.Fingerprint}
		ok, err := cfp.verify(f, size, scratch)
		if err != nil {
			return nil, fingerprint{}, nil, err
		}
		if ok && size >= c.cp.Offset && (best == nil || c.cp.Offset < best.cp.Offset) {
			if best != nil {
				stale = append(stale, best.cp.Key)
			}
			best, fp = c, cfp
			continue
		}
		stale = append(stale, c.cp.Key)
	}
	return best, fp, stale, nil
}

func formatSourceWith(prefix string, k fileKey, fp fingerprint) string {
	b := make([]byte, 0, 64)
	b = append(b, prefix...)
	b = strconv.AppendUint(b, k.dev, 10)
	b = append(b, ':')
	b = strconv.AppendUint(b, k.ino, 10)
	b = append(b, ':')
	h := strconv.FormatUint(fp.sum, 16)
	for range 16 - len(h) {
		b = append(b, '0')
	}
	b = append(b, h...)
	return string(b)
}
