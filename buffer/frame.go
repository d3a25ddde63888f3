package buffer

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// FrameType says what a frame carries. FrameRecord, FrameDeadLetter and
// FrameAggregate are handed to consumers; FrameTag and FrameCommit are
// bookkeeping.
type FrameType uint8

const (
	// FrameRecord is one canonical NDJSON meter record (no trailing newline).
	FrameRecord FrameType = 'R'
	// FrameDeadLetter is one dead-letter entry, JSON {source, offset, line, reason}.
	FrameDeadLetter FrameType = 'D'
	// FrameTag sets the tag of the frames that follow it in the same segment.
	FrameTag FrameType = 'T'
	// FrameCommit closes a batch; its data encodes the batch's checkpoints.
	// Frames after the last commit frame of a segment were never acknowledged
	// and are discarded by recovery.
	FrameCommit FrameType = 'C'
	// FrameAggregate precedes the records of its batch and carries a
	// summary of them made while they were parsed (metering's hourly sums),
	// so a consumer that only needs the summary can skip the records. The
	// buffer treats its data as opaque. Since segment format 2.
	FrameAggregate FrameType = 'A'
)

// frameHeaderSize is length(4) + crc32c(4) + type(1) + time(8).
const frameHeaderSize = 17

// MaxFrameData bounds one frame's data so recovery can reject absurd lengths
// read from a corrupt file before allocating anything.
const MaxFrameData = 64 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is returned when a frame's length or checksum does not verify.
var ErrCorrupt = errors.New("buffer: corrupt frame")

// Frame is one decoded frame. Data aliases the segment's read buffer and is
// only valid until the iteration callback returns.
type Frame struct {
	Type FrameType
	// Time is the record's time in Unix milliseconds (the meter time for
	// records, the arrival time for dead letters).
	Time int64
	// Tag is the tag in force for this frame (set by a preceding FrameTag).
	Tag  string
	Data []byte
}

// appendFrame encodes one frame onto dst. The checksum covers type, time and
// data so a torn or bit-flipped frame never decodes.
func appendFrame(dst []byte, t FrameType, ts int64, data []byte) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, frameHeaderSize)...)
	dst = append(dst, data...)
	finishFrame(dst[start:], t, ts)
	return dst
}

// decodeFrame decodes the frame at the start of b. It returns the frame, the
// number of bytes it occupies, and ErrCorrupt (or io.ErrUnexpectedEOF-like
// short reads as ErrCorrupt) when b does not start with an intact frame.
func decodeFrame(b []byte) (t FrameType, ts int64, data []byte, n int, err error) {
	if len(b) < frameHeaderSize {
		return 0, 0, nil, 0, ErrCorrupt
	}
	l := binary.LittleEndian.Uint32(b[0:4])
	if l > MaxFrameData || int(l) > len(b)-frameHeaderSize {
		return 0, 0, nil, 0, ErrCorrupt
	}
	n = frameHeaderSize + int(l)
	want := binary.LittleEndian.Uint32(b[4:8])
	if crc32.Checksum(b[8:n], castagnoli) != want {
		return 0, 0, nil, 0, ErrCorrupt
	}
	t = FrameType(b[8])
	switch t {
	case FrameRecord, FrameDeadLetter, FrameTag, FrameCommit, FrameAggregate:
	default:
		return 0, 0, nil, 0, ErrCorrupt
	}
	return t, int64(binary.LittleEndian.Uint64(b[9:17])), b[frameHeaderSize:n], n, nil
}

// finishFrame fills the header of frame, whose data already follows the
// frameHeaderSize placeholder bytes; it lets a frame be encoded in place.
func finishFrame(frame []byte, t FrameType, ts int64) {
	data := frame[frameHeaderSize:]
	binary.LittleEndian.PutUint32(frame[0:4], uint32(len(data)))
	frame[8] = byte(t)
	binary.LittleEndian.PutUint64(frame[9:17], uint64(ts))
	crc := crc32.Update(0, castagnoli, frame[8:17])
	crc = crc32.Update(crc, castagnoli, data)
	binary.LittleEndian.PutUint32(frame[4:8], crc)
}

// appendTagFrame encodes a FrameTag for tag onto dst without converting the
// string to a slice.
func appendTagFrame(dst []byte, ts int64, tag string) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, frameHeaderSize)...)
	dst = append(dst, tag...)
	finishFrame(dst[start:], FrameTag, ts)
	return dst
}

// appendCommitFrame encodes the FrameCommit that closes a batch carrying
// cps onto dst.
func appendCommitFrame(dst []byte, ts int64, cps []Checkpoint) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, frameHeaderSize)...)
	dst = appendCheckpoints(dst, cps)
	finishFrame(dst[start:], FrameCommit, ts)
	return dst
}
