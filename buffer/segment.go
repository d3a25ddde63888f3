package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"time"
)

// segMagic starts every segment file; the last byte is the format version.
// Version 2 added FrameAggregate; version 1 segments (no such frames) are
// still read. A version 1 reader refuses a version 2 segment's header
// instead of misreading its aggregate frames as corruption.
var segMagic = [8]byte{'M', 'S', 'H', 'P', 'S', 'E', 'G', 2}

// segMagicV1 is the magic of segments written before FrameAggregate.
var segMagicV1 = [8]byte{'M', 'S', 'H', 'P', 'S', 'E', 'G', 1}

// segHeaderSize is magic(8) + seq(8) + created unix nanos(8) + crc32c(4).
const segHeaderSize = 28

// readBufSize is the initial size of a frame reader's buffer; it grows only
// for frames larger than this and is pooled per Buffer.
const readBufSize = 64 << 10

// maxPooledReadBuf keeps buffers grown for a huge frame out of the pool.
const maxPooledReadBuf = 1 << 20

// appendSegHeader encodes a segment header.
func appendSegHeader(dst []byte, seq uint64, created time.Time) []byte {
	start := len(dst)
	dst = append(dst, segMagic[:]...)
	dst = binary.LittleEndian.AppendUint64(dst, seq)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(created.UnixNano()))
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// decodeSegHeader verifies a segment header and returns its sequence and
// creation time.
func decodeSegHeader(b []byte) (seq uint64, created time.Time, err error) {
	if len(b) < segHeaderSize {
		return 0, time.Time{}, fmt.Errorf("short segment header: %w", ErrCorrupt)
	}
	if m := [8]byte(b[:8]); m != segMagic && m != segMagicV1 {
		return 0, time.Time{}, fmt.Errorf("bad segment magic: %w", ErrCorrupt)
	}
	if crc32.Checksum(b[:24], castagnoli) != binary.LittleEndian.Uint32(b[24:28]) {
		return 0, time.Time{}, fmt.Errorf("segment header checksum: %w", ErrCorrupt)
	}
	seq = binary.LittleEndian.Uint64(b[8:16])
	created = time.Unix(0, int64(binary.LittleEndian.Uint64(b[16:24])))
	return seq, created, nil
}

// frameReader streams the frames of a segment file through one reusable
// buffer, so iterating an 8 MiB segment costs one small buffer, not a copy
// of the segment. It never reads past limit, and checks a frame's length
// against MaxFrameData and the bytes left before growing the buffer.
type frameReader struct {
	r      io.ReaderAt
	limit  int64  // file offset where reading stops
	pos    int64  // file offset of buf[lo]
	buf    []byte // buf[lo:hi] holds file bytes from pos on
	lo, hi int
}

// errTorn is returned by fill when the file ends inside a frame.
var errTorn = fmt.Errorf("frame runs past the end of the segment: %w", ErrCorrupt)

// next decodes the frame at r.pos. It returns io.EOF exactly at limit,
// an error wrapping ErrCorrupt for a torn, oversized or bad-checksum frame,
// and read errors as they are. data aliases the reader's buffer.
func (r *frameReader) next() (t FrameType, ts int64, data []byte, n int, err error) {
	if r.pos >= r.limit {
		return 0, 0, nil, 0, io.EOF
	}
	if err := r.fill(frameHeaderSize); err != nil {
		return 0, 0, nil, 0, err
	}
	l := int64(binary.LittleEndian.Uint32(r.buf[r.lo:]))
	if l > MaxFrameData || frameHeaderSize+l > r.limit-r.pos {
		return 0, 0, nil, 0, fmt.Errorf("frame length %d at offset %d: %w", l, r.pos, ErrCorrupt)
	}
	if err := r.fill(frameHeaderSize + int(l)); err != nil {
		return 0, 0, nil, 0, err
	}
	t, ts, data, n, err = decodeFrame(r.buf[r.lo:r.hi])
	if err != nil {
		return 0, 0, nil, 0, fmt.Errorf("frame at offset %d: %w", r.pos, err)
	}
	r.lo += n
	r.pos += int64(n)
	return t, ts, data, n, nil
}

// fill makes buf[lo:hi] hold at least need bytes, reading up to limit.
func (r *frameReader) fill(need int) error {
	if r.hi-r.lo >= need {
		return nil
	}
	if r.lo > 0 {
		r.hi = copy(r.buf, r.buf[r.lo:r.hi])
		r.lo = 0
	}
	if need > len(r.buf) {
		grown := make([]byte, max(need, 2*len(r.buf)))
		copy(grown, r.buf[:r.hi])
		r.buf = grown
	}
	for r.hi < need {
		want := min(int64(len(r.buf)-r.hi), r.limit-(r.pos+int64(r.hi)))
		if want <= 0 {
			return errTorn
		}
		m, err := r.r.ReadAt(r.buf[r.hi:r.hi+int(want)], r.pos+int64(r.hi))
		r.hi += m
		if errors.Is(err, io.EOF) {
			if m == 0 {
				return errTorn
			}
			continue
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Path is the segment's file.
func (s *Segment) Path() string { return s.path }

// Frames calls fn for each committed FrameRecord, FrameDeadLetter and
// FrameAggregate frame of the sealed segment, in order, with Tag set from the preceding tag
// frame. Frame.Data is only valid during the call. An error from fn stops
// the iteration and is returned as is. A frame that no longer verifies
// (the file was damaged after it was sealed) yields an error wrapping
// ErrCorrupt; frames before it were already delivered.
func (s *Segment) Frames(fn func(Frame) error) error {
	f, err := os.Open(s.path)
	if err != nil {
		return fmt.Errorf("buffer: segment %d: %w", s.Seq, err)
	}
	defer f.Close() //nolint:errcheck // read-only
	var hdr [segHeaderSize]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		return fmt.Errorf("buffer: segment %d: read header: %w", s.Seq, err)
	}
	if seq, _, err := decodeSegHeader(hdr[:]); err != nil || seq != s.Seq {
		return fmt.Errorf("buffer: segment %d: header does not verify: %w", s.Seq, ErrCorrupt)
	}
	buf := s.getReadBuf()
	defer s.putReadBuf(buf)
	r := frameReader{r: f, limit: s.Size, pos: segHeaderSize, buf: *buf}
	defer func() { *buf = r.buf }()
	var tag string
	for {
		t, ts, data, _, err := r.next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("buffer: segment %d: %w", s.Seq, err)
		}
		switch t {
		case FrameTag:
			if tag != string(data) {
				tag = string(data)
			}
		case FrameRecord, FrameDeadLetter, FrameAggregate:
			if err := fn(Frame{Type: t, Time: ts, Tag: tag, Data: data}); err != nil {
				return err
			}
		}
	}
}

func (s *Segment) getReadBuf() *[]byte {
	if s.pool != nil {
		if p, ok := s.pool.Get().(*[]byte); ok {
			return p
		}
	}
	b := make([]byte, readBufSize)
	return &b
}

func (s *Segment) putReadBuf(p *[]byte) {
	if s.pool != nil && cap(*p) <= maxPooledReadBuf {
		s.pool.Put(p)
	}
}
