package tail

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"

	"github.com/zeebo/xxh3"
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

// WholeFileSource names a whole file the way the tailer names a file it
// follows (device, inode, fingerprint of its first FingerprintSize
// bytes) but under prefix: for another producer (metership ship) whose
// checkpoints the tailer must not take for its own.
func WholeFileSource(prefix string, f io.ReaderAt, fi fs.FileInfo) (string, error) {
	key, _, _ := statKey(fi)
	var fp fingerprint
	if _, err := fp.verify(f, fi.Size(), make([]byte, FingerprintSize)); err != nil {
		return "", err
	}
	return formatSourceWith(prefix, key, fp), nil
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
