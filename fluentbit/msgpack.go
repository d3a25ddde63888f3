package fluentbit

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/metership/metership/record"
)

// ErrMalformed is wrapped by decode errors for bytes that are not msgpack
// (truncated values, the reserved byte 0xc1, lengths past the end). The
// undecodable rest of a chunk is dead-lettered with the error as reason.
var ErrMalformed = errors.New("malformed msgpack")

// errTooDeep reports a value nested deeper than maxDepth: valid msgpack
// that is not rendered as JSON (the event is dead-lettered as base64).
var errTooDeep = errors.New("value nested too deeply")

// maxDepth bounds the nesting of maps and arrays rendered as JSON, so a
// hostile chunk cannot exhaust the stack.
const maxDepth = 128

// Fluent Bit group markers: the seconds of the event time of the
// [[ts, meta], rec] events that open and close a group
// (FLB_LOG_EVENT_GROUP_START / FLB_LOG_EVENT_GROUP_END in flb_log_event.h).
const (
	groupStart = -1
	groupEnd   = -2
)

// maxSeconds bounds event times whose nanoseconds fit in an int64.
const maxSeconds = math.MaxInt64/1_000_000_000 - 1

// eventKind says what the decoder found at one position of a chunk.
type eventKind uint8

const (
	// eventRecord is a log record: line holds its JSON (or the text of a
	// {"log": text} record).
	eventRecord eventKind = iota
	// eventMarker is a group start or end marker: nothing to ship.
	eventMarker
	// eventBad is valid msgpack that is not a Fluent Bit event: line holds
	// the value as JSON (or base64) and reason says what is wrong.
	eventBad
)

// event is one decoded element of a chunk. line aliases either the
// decoder's output buffer or the chunk itself; it is valid until the next
// call of nextEvent.
type event struct {
	kind eventKind
	// hasTime is false when the timestamp was out of range; timeNanos is
	// then 0.
	hasTime   bool
	timeNanos int64
	line      []byte
	// text is true when line is the text of a {"log": text} record, not
	// JSON the decoder rendered.
	text   bool
	reason string
}

// decoder converts a Fluent Bit chunk (a concatenation of msgpack events)
// into compact JSON lines without reflection. Its buffers are reused, so a
// steady stream of chunks allocates nothing per record.
type decoder struct {
	data []byte
	pos  int
	// out receives the JSON of the current event.
	out []byte
	// key holds a rendered non-string map key while it is quoted.
	key []byte
}

// reset points the decoder at a new chunk.
func (d *decoder) reset(data []byte) {
	d.data = data
	d.pos = 0
}

// more reports whether another event starts at pos.
func (d *decoder) more() bool { return d.pos < len(d.data) }

func (d *decoder) malformed(format string, args ...any) error {
	return fmt.Errorf("%w at byte %d: %s", ErrMalformed, d.pos, fmt.Sprintf(format, args...))
}

func (d *decoder) truncated() error {
	return d.malformed("truncated (chunk is %d bytes)", len(d.data))
}

// nextEvent decodes the event at pos and moves past it. A non-nil error
// means the bytes from the event's start on cannot be decoded; the caller
// dead-letters them and stops.
func (d *decoder) nextEvent() (event, error) {
	start := d.pos
	ev, err := d.decodeEvent()
	if err == nil {
		return ev, nil
	}
	if !errors.Is(err, errTooDeep) {
		return event{}, err
	}
	// Valid so far but too deep to render: find the event's end without
	// recursion and dead-letter its bytes.
	d.pos = start
	if err := d.skip(); err != nil {
		return event{}, err
	}
	d.out = base64.StdEncoding.AppendEncode(d.out[:0], d.data[start:d.pos])
	return event{kind: eventBad, line: d.out, reason: fmt.Sprintf("event nested deeper than %d levels; line is the base64 of its msgpack", maxDepth)}, nil
}

func (d *decoder) decodeEvent() (event, error) {
	start := d.pos
	n, ok, err := d.arrayHeader()
	if err != nil {
		return event{}, err
	}
	if !ok || n < 2 {
		if !ok {
			n = 1
		}
		if err := d.skipN(n); err != nil {
			return event{}, err
		}
		return d.badEvent(start, "not a Fluent Bit event: want [timestamp, record] or [[timestamp, metadata], record]")
	}
	var ev event
	// The header is a timestamp ([ts, rec], Fluent Bit 1.x / forward) or
	// an array [ts, metadata] (Fluent Bit 2.x+).
	v2 := false
	m, isArray, err := d.arrayHeader()
	if err != nil {
		return event{}, err
	}
	if isArray {
		if m < 1 {
			if err := d.skipN(n - 1); err != nil {
				return event{}, err
			}
			return d.badEvent(start, "event header [timestamp, metadata] is empty")
		}
		v2 = true
	}
	sec, nsec, timeOK, err := d.timestamp()
	if err != nil {
		return event{}, err
	}
	if !timeOK {
		rest := n - 1
		if v2 {
			rest += m - 1
		}
		if err := d.skipN(rest); err != nil {
			return event{}, err
		}
		return d.badEvent(start, "event timestamp is not a time (EventTime, integer or float seconds)")
	}
	if v2 {
		if err := d.skipN(m - 1); err != nil {
			return event{}, err
		}
		if sec == groupStart || sec == groupEnd {
			if err := d.skipN(n - 1); err != nil {
				return event{}, err
			}
			return event{kind: eventMarker}, nil
		}
	}
	if sec > 0 && sec < maxSeconds {
		ev.hasTime = true
		ev.timeNanos = sec*1e9 + nsec
	}
	if text, ok, err := d.logOnly(); err != nil {
		return event{}, err
	} else if ok {
		ev.line, ev.text = text, true
	} else {
		c, err := d.peek()
		if err != nil {
			return event{}, err
		}
		if !isMap(c) {
			if err := d.skipN(n - 1); err != nil {
				return event{}, err
			}
			return d.badEvent(start, "event record is not a map")
		}
		d.out, err = d.appendValue(d.out[:0], 0)
		if err != nil {
			return event{}, err
		}
		ev.line = d.out
	}
	// Elements past [header, record] are not part of any Fluent Bit
	// format; skip them so the next event decodes.
	if err := d.skipN(n - 2); err != nil {
		return event{}, err
	}
	return ev, nil
}

// badEvent renders the already-skipped event at start as JSON for a dead
// letter.
func (d *decoder) badEvent(start int, reason string) (event, error) {
	end := d.pos
	sub := decoder{data: d.data[:end], pos: start, key: d.key}
	out, err := sub.appendValue(d.out[:0], 0)
	d.key = sub.key
	if err != nil {
		if !errors.Is(err, errTooDeep) {
			return event{}, err
		}
		out = base64.StdEncoding.AppendEncode(d.out[:0], d.data[start:end])
		reason += "; line is the base64 of its msgpack"
	}
	d.out = out
	return event{kind: eventBad, line: out, reason: reason}, nil
}

func isMap(c byte) bool { return c&0xf0 == 0x80 || c == 0xde || c == 0xdf }

func (d *decoder) peek() (byte, error) {
	if d.pos >= len(d.data) {
		return 0, d.truncated()
	}
	return d.data[d.pos], nil
}

// arrayHeader reads an array header. ok is false (and pos unchanged) when
// the next value is not an array.
func (d *decoder) arrayHeader() (n int, ok bool, err error) {
	c, err := d.peek()
	if err != nil {
		return 0, false, err
	}
	switch {
	case c&0xf0 == 0x90:
		d.pos++
		return int(c & 0x0f), true, nil
	case c == 0xdc:
		n, err := d.length(1, 2)
		return n, err == nil, err
	case c == 0xdd:
		n, err := d.length(1, 4)
		return n, err == nil, err
	}
	return 0, false, nil
}

// length reads a big-endian length of width bytes after skip bytes of type
// tag and moves past both.
func (d *decoder) length(skip, width int) (int, error) {
	p := d.pos + skip
	if len(d.data)-p < width {
		return 0, d.truncated()
	}
	var n uint32
	switch width {
	case 1:
		n = uint32(d.data[p])
	case 2:
		n = uint32(binary.BigEndian.Uint16(d.data[p:]))
	default:
		n = binary.BigEndian.Uint32(d.data[p:])
	}
	d.pos = p + width
	return int(n), nil
}

// bytesOf returns the next n bytes and moves past them.
func (d *decoder) bytesOf(n int) ([]byte, error) {
	if n < 0 || len(d.data)-d.pos < n {
		return nil, d.truncated()
	}
	b := d.data[d.pos : d.pos+n : d.pos+n]
	d.pos += n
	return b, nil
}

// timestamp reads an event time: EventTime (ext type 0, 8 bytes: u32
// seconds, u32 nanoseconds), a msgpack timestamp (ext type -1), or integer
// or float seconds. ok is false, with the value skipped, for anything else.
func (d *decoder) timestamp() (sec, nsec int64, ok bool, err error) {
	c, err := d.peek()
	if err != nil {
		return 0, 0, false, err
	}
	switch {
	case c <= 0x7f:
		d.pos++
		return int64(c), 0, true, nil
	case c >= 0xe0:
		d.pos++
		return int64(int8(c)), 0, true, nil
	}
	switch c {
	case 0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd1, 0xd2, 0xd3:
		i, u, signed, err := d.integer()
		if err != nil {
			return 0, 0, false, err
		}
		if !signed {
			if u > math.MaxInt64 {
				return 0, 0, true, nil
			}
			i = int64(u)
		}
		return i, 0, true, nil
	case 0xca, 0xcb:
		f, err := d.float()
		if err != nil {
			return 0, 0, false, err
		}
		if math.IsNaN(f) || f < -2 || f > 1e15 {
			return 0, 0, true, nil
		}
		s := math.Floor(f)
		ns := int64(math.Round((f - s) * 1e9))
		if ns >= 1e9 {
			s, ns = s+1, ns-1e9
		}
		return int64(s), ns, true, nil
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xc7, 0xc8, 0xc9:
		typ, data, err := d.ext()
		if err != nil {
			return 0, 0, false, err
		}
		if s, ns, ok := extTime(typ, data); ok {
			return s, ns, true, nil
		}
		return 0, 0, false, nil
	}
	return 0, 0, false, d.skip()
}

// extTime decodes the two timestamp extensions: Fluent Bit's EventTime
// (type 0) and msgpack's timestamp (type -1, 4, 8 or 12 bytes).
func extTime(typ int8, b []byte) (sec, nsec int64, ok bool) {
	switch {
	case typ == 0 && len(b) == 8:
		s := binary.BigEndian.Uint32(b)
		// Fluent Bit reads the seconds as int32, so the group markers -1
		// and -2 arrive as 0xffffffff and 0xfffffffe; other values are
		// unsigned (valid until 2106).
		switch s {
		case 0xffffffff:
			return groupStart, 0, true
		case 0xfffffffe:
			return groupEnd, 0, true
		}
		return int64(s), int64(binary.BigEndian.Uint32(b[4:])), true
	case typ == -1 && len(b) == 4:
		return int64(binary.BigEndian.Uint32(b)), 0, true
	case typ == -1 && len(b) == 8:
		v := binary.BigEndian.Uint64(b)
		return int64(v & (1<<34 - 1)), int64(v >> 34), true
	case typ == -1 && len(b) == 12:
		return int64(binary.BigEndian.Uint64(b[4:])), int64(binary.BigEndian.Uint32(b)), true
	}
	return 0, 0, false
}

// logOnly recognises a record that is exactly {"log": <str or bin>}: what
// Fluent Bit produces for a line no parser understood. It returns the text
// (aliasing the chunk) and moves past the record; otherwise pos is
// unchanged.
func (d *decoder) logOnly() ([]byte, bool, error) {
	start := d.pos
	c, err := d.peek()
	if err != nil {
		return nil, false, err
	}
	var n int
	switch {
	case c&0xf0 == 0x80:
		d.pos++
		n = int(c & 0x0f)
	case c == 0xde:
		n, err = d.length(1, 2)
	case c == 0xdf:
		n, err = d.length(1, 4)
	default:
		return nil, false, nil
	}
	if err != nil || n != 1 {
		d.pos = start
		return nil, false, nil
	}
	key, ok, err := d.stringValue()
	if err != nil || !ok || string(key) != "log" {
		d.pos = start
		return nil, false, nil
	}
	text, ok, err := d.stringValue()
	if err != nil || !ok {
		d.pos = start
		return nil, false, nil
	}
	return text, true, nil
}

// stringValue reads a str or bin value. ok is false (pos unchanged) for
// other types.
func (d *decoder) stringValue() ([]byte, bool, error) {
	c, err := d.peek()
	if err != nil {
		return nil, false, err
	}
	var n int
	switch {
	case c&0xe0 == 0xa0:
		d.pos++
		n = int(c & 0x1f)
	case c == 0xd9 || c == 0xc4:
		n, err = d.length(1, 1)
	case c == 0xda || c == 0xc5:
		n, err = d.length(1, 2)
	case c == 0xdb || c == 0xc6:
		n, err = d.length(1, 4)
	default:
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	b, err := d.bytesOf(n)
	return b, err == nil, err
}

// integer reads one of the sized int/uint types (0xcc-0xd3).
func (d *decoder) integer() (i int64, u uint64, signed bool, err error) {
	c := d.data[d.pos]
	width := 1 << ((c - 0xcc) & 3)
	b, err := d.bytesOf(1 + int(width))
	if err != nil {
		return 0, 0, false, err
	}
	b = b[1:]
	switch width {
	case 1:
		u = uint64(b[0])
	case 2:
		u = uint64(binary.BigEndian.Uint16(b))
	case 4:
		u = uint64(binary.BigEndian.Uint32(b))
	default:
		u = binary.BigEndian.Uint64(b)
	}
	if c < 0xd0 {
		return 0, u, false, nil
	}
	switch width {
	case 1:
		i = int64(int8(u))
	case 2:
		i = int64(int16(u))
	case 4:
		i = int64(int32(u))
	default:
		i = int64(u)
	}
	return i, 0, true, nil
}

// float reads a float32 or float64.
func (d *decoder) float() (float64, error) {
	if d.data[d.pos] == 0xca {
		b, err := d.bytesOf(5)
		if err != nil {
			return 0, err
		}
		return float64(math.Float32frombits(binary.BigEndian.Uint32(b[1:]))), nil
	}
	b, err := d.bytesOf(9)
	if err != nil {
		return 0, err
	}
	return math.Float64frombits(binary.BigEndian.Uint64(b[1:])), nil
}

// ext reads a fixext or ext value.
func (d *decoder) ext() (typ int8, data []byte, err error) {
	c := d.data[d.pos]
	var n int
	switch c {
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8:
		n = 1 << (c - 0xd4)
		d.pos++
	case 0xc7:
		n, err = d.length(1, 1)
	case 0xc8:
		n, err = d.length(1, 2)
	default:
		n, err = d.length(1, 4)
	}
	if err != nil {
		return 0, nil, err
	}
	b, err := d.bytesOf(1 + n)
	if err != nil {
		return 0, nil, err
	}
	return int8(b[0]), b[1:], nil
}

// appendValue renders the value at pos as compact JSON: str and bin become
// JSON strings (invalid UTF-8 replaced), NaN and infinities null, map keys
// that are not strings their JSON quoted, EventTime and msgpack timestamps
// a number of seconds, other extensions a base64 string.
func (d *decoder) appendValue(dst []byte, depth int) ([]byte, error) {
	if d.pos >= len(d.data) {
		return dst, d.truncated()
	}
	c := d.data[d.pos]
	switch {
	case c <= 0x7f:
		d.pos++
		return appendSmall(dst, c), nil
	case c&0xe0 == 0xa0:
		d.pos++
		b, err := d.bytesOf(int(c & 0x1f))
		if err != nil {
			return dst, err
		}
		return record.AppendJSONBytes(dst, b), nil
	case c&0xf0 == 0x80:
		d.pos++
		return d.appendMap(dst, int(c&0x0f), depth)
	case c&0xf0 == 0x90:
		d.pos++
		return d.appendArray(dst, int(c&0x0f), depth)
	case c >= 0xe0:
		d.pos++
		return strconv.AppendInt(dst, int64(int8(c)), 10), nil
	}
	switch c {
	case 0xc0:
		d.pos++
		return append(dst, "null"...), nil
	case 0xc2:
		d.pos++
		return append(dst, "false"...), nil
	case 0xc3:
		d.pos++
		return append(dst, "true"...), nil
	case 0xc4, 0xc5, 0xc6, 0xd9, 0xda, 0xdb:
		b, _, err := d.stringValue()
		if err != nil {
			return dst, err
		}
		return record.AppendJSONBytes(dst, b), nil
	case 0xca, 0xcb:
		f, err := d.float()
		if err != nil {
			return dst, err
		}
		bits := 64
		if c == 0xca {
			bits = 32
		}
		return appendFloat(dst, f, bits), nil
	case 0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd1, 0xd2, 0xd3:
		i, u, signed, err := d.integer()
		if err != nil {
			return dst, err
		}
		if signed {
			return strconv.AppendInt(dst, i, 10), nil
		}
		return strconv.AppendUint(dst, u, 10), nil
	case 0xdc, 0xdd:
		n, _, err := d.arrayHeader()
		if err != nil {
			return dst, err
		}
		return d.appendArray(dst, n, depth)
	case 0xde, 0xdf:
		width := 2
		if c == 0xdf {
			width = 4
		}
		n, err := d.length(1, width)
		if err != nil {
			return dst, err
		}
		return d.appendMap(dst, n, depth)
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xc7, 0xc8, 0xc9:
		typ, b, err := d.ext()
		if err != nil {
			return dst, err
		}
		if sec, nsec, ok := extTime(typ, b); ok {
			return appendSeconds(dst, sec, nsec), nil
		}
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, b)
		return append(dst, '"'), nil
	}
	return dst, d.malformed("byte 0x%02x is not a msgpack type", c)
}

func (d *decoder) appendArray(dst []byte, n, depth int) ([]byte, error) {
	if depth >= maxDepth {
		return dst, errTooDeep
	}
	if n > len(d.data)-d.pos {
		return dst, d.malformed("array of %d elements does not fit in the chunk", n)
	}
	dst = append(dst, '[')
	var err error
	for i := 0; i < n; i++ {
		if i > 0 {
			dst = append(dst, ',')
		}
		if dst, err = d.appendValue(dst, depth+1); err != nil {
			return dst, err
		}
	}
	return append(dst, ']'), nil
}

func (d *decoder) appendMap(dst []byte, n, depth int) ([]byte, error) {
	if depth >= maxDepth {
		return dst, errTooDeep
	}
	if n > (len(d.data)-d.pos)/2 {
		return dst, d.malformed("map of %d entries does not fit in the chunk", n)
	}
	dst = append(dst, '{')
	var err error
	for i := 0; i < n; i++ {
		if i > 0 {
			dst = append(dst, ',')
		}
		if dst, err = d.appendKey(dst, depth); err != nil {
			return dst, err
		}
		dst = append(dst, ':')
		if dst, err = d.appendValue(dst, depth+1); err != nil {
			return dst, err
		}
	}
	return append(dst, '}'), nil
}

// appendKey renders a map key as a JSON string: str and bin directly, any
// other value as its JSON text, quoted.
func (d *decoder) appendKey(dst []byte, depth int) ([]byte, error) {
	b, ok, err := d.stringValue()
	if err != nil {
		return dst, err
	}
	if ok {
		return record.AppendJSONBytes(dst, b), nil
	}
	mark := len(dst)
	if dst, err = d.appendValue(dst, depth+1); err != nil {
		return dst, err
	}
	d.key = append(d.key[:0], dst[mark:]...)
	return record.AppendJSONBytes(dst[:mark], d.key), nil
}

// skip moves past one value, iteratively (no recursion, any depth),
// checking that every length fits in the chunk.
func (d *decoder) skip() error { return d.skipN(1) }

// skipN moves past n values.
func (d *decoder) skipN(n int) error {
	for pending := n; pending > 0; pending-- {
		if d.pos >= len(d.data) {
			return d.truncated()
		}
		c := d.data[d.pos]
		var size, children int
		var err error
		switch {
		case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
			size = 1
		case c&0xe0 == 0xa0:
			size = 1 + int(c&0x1f)
		case c&0xf0 == 0x80:
			d.pos++
			children = 2 * int(c&0x0f)
		case c&0xf0 == 0x90:
			d.pos++
			children = int(c & 0x0f)
		default:
			switch c {
			case 0xc4, 0xd9, 0xc7:
				var l int
				if l, err = d.length(1, 1); err == nil {
					size = l
					if c == 0xc7 {
						size++
					}
				}
			case 0xc5, 0xda, 0xc8:
				var l int
				if l, err = d.length(1, 2); err == nil {
					size = l
					if c == 0xc8 {
						size++
					}
				}
			case 0xc6, 0xdb, 0xc9:
				var l int
				if l, err = d.length(1, 4); err == nil {
					size = l
					if c == 0xc9 {
						size++
					}
				}
			case 0xca:
				size = 5
			case 0xcb:
				size = 9
			case 0xcc, 0xd0:
				size = 2
			case 0xcd, 0xd1:
				size = 3
			case 0xce, 0xd2:
				size = 5
			case 0xcf, 0xd3:
				size = 9
			case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8:
				size = 2 + 1<<(c-0xd4)
			case 0xdc:
				children, err = d.length(1, 2)
			case 0xdd:
				children, err = d.length(1, 4)
			case 0xde:
				children, err = d.length(1, 2)
				children *= 2
			case 0xdf:
				children, err = d.length(1, 4)
				children *= 2
			default:
				return d.malformed("byte 0x%02x is not a msgpack type", c)
			}
		}
		if err != nil {
			return err
		}
		if size > len(d.data)-d.pos {
			return d.truncated()
		}
		d.pos += size
		if children > len(d.data)-d.pos {
			return d.malformed("container of %d values does not fit in the chunk", children)
		}
		pending += children
	}
	return nil
}

// appendSmall appends a positive fixint (0..127) without strconv.
func appendSmall(dst []byte, c byte) []byte {
	if c < 10 {
		return append(dst, '0'+c)
	}
	if c < 100 {
		return append(dst, '0'+c/10, '0'+c%10)
	}
	return append(dst, '1', '0'+(c-100)/10, '0'+c%10)
}

// appendFloat renders f as a JSON number the way encoding/json does
// (exponent form only for very small or large magnitudes); NaN and the
// infinities, which JSON cannot represent, become null.
func appendFloat(dst []byte, f float64, bits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	format := byte('f')
	if a := math.Abs(f); a != 0 {
		if bits == 64 && (a < 1e-6 || a >= 1e21) || bits == 32 && (float32(a) < 1e-6 || float32(a) >= 1e21) {
			format = 'e'
		}
	}
	dst = strconv.AppendFloat(dst, f, format, -1, bits)
	if format == 'e' {
		// 1e-07 -> 1e-7, as encoding/json writes it.
		if n := len(dst); n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// appendSeconds renders a time as a JSON number of seconds with up to nine
// exact fractional digits.
func appendSeconds(dst []byte, sec, nsec int64) []byte {
	dst = strconv.AppendInt(dst, sec, 10)
	if nsec <= 0 || nsec >= 1e9 {
		return dst
	}
	var frac [10]byte
	frac[0] = '.'
	for i, v := 9, nsec; i >= 1; i-- {
		frac[i] = byte('0' + v%10)
		v /= 10
	}
	end := 10
	for frac[end-1] == '0' {
		end--
	}
	return append(dst, frac[:end]...)
}
