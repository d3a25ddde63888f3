package ship

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultKeyFormat is the Amberflo S3-ingestion layout for meter records,
// rendered under the destination prefix (ingest/amberdata by convention).
const DefaultKeyFormat = "%m-%d-%Y/$UUID.gz"

// DefaultDeadLetterKeyFormat is where dead letters go, relative to the
// destination's dead-letter root.
const DefaultDeadLetterKeyFormat = "failed-requests/%m-%d-%Y/$UUID.gz"

// ErrKeyFormat is wrapped by every CompileKeyFormat error.
var ErrKeyFormat = errors.New("invalid key format")

// Markers stand in for $UUID and $INDEX inside a partition string. They
// contain a NUL byte, which never occurs in rendered text (NULs are removed
// from tags and host names), so Key can find them without ambiguity.
const (
	uuidMarker  = "\x00U"
	indexMarker = "\x00I"
)

// maxPartitionCache bounds the per-format partition cache; when full it is
// cleared, which costs one re-render per live partition.
const maxPartitionCache = 4096

type pieceKind uint8

const (
	pieceLiteral pieceKind = iota
	pieceTime              // one strftime conversion, in verb
	pieceUUID
	pieceIndex
	pieceTag
	pieceTagPart // $TAG[n], n in part
	pieceHostname
)

type piece struct {
	kind pieceKind
	lit  string
	verb byte
	part int
}

// Time granularities, finest first; a format's granularity decides how far a
// record's time is truncated to form the partition cache key.
const (
	granSecond = 1000
	granMinute = 60 * granSecond
	granHour   = 60 * granMinute
	granDay    = 24 * granHour
)

// verbGranularity maps each supported strftime verb to the time unit it
// depends on, in milliseconds. Verbs that only need a month or a year map to
// a day: a finer cache key than necessary is still correct and keeps the
// truncation a plain division. Zero means the verb does not depend on time.
var verbGranularity = [256]int64{
	'S': granSecond, 's': granSecond, 'T': granSecond,
	'M': granMinute, 'R': granMinute,
	'H': granHour, 'I': granHour, 'k': granHour, 'l': granHour, 'p': granHour,
	'd': granDay, 'e': granDay, 'j': granDay, 'a': granDay, 'A': granDay,
	'u': granDay, 'w': granDay, 'F': granDay, 'D': granDay,
	'm': granDay, 'b': granDay, 'B': granDay, 'h': granDay,
	'Y': granDay, 'y': granDay, 'C': granDay,
}

// timeIndependentVerbs are supported verbs that render constants.
const timeIndependentVerbs = "%zZ"

// KeyFormat is a compiled object key template in the style of Fluent Bit's
// s3_key_format: strftime conversions over a record's time in UTC plus the
// variables $UUID, $INDEX, $TAG, $TAG[n] and $HOSTNAME.
//
// Rendering is split in two so records can be grouped before an object is
// named: Partition renders everything but $UUID and $INDEX, and records with
// equal partitions share one object; Key then fills in the object's identity.
// A KeyFormat is safe for concurrent use.
type KeyFormat struct {
	prefix   string
	format   string
	pieces   []piece
	hostname string
	gran     int64 // cache truncation unit in ms; 0 when the key ignores time
	usesTag  bool

	mu    sync.Mutex // guards cache
	cache map[partitionCacheKey]string
}

type partitionCacheKey struct {
	unit int64
	tag  string
}

// CompileKeyFormat parses format. The rendered key is prefix + "/" + the
// rendered format (just the format when prefix is empty; slashes around
// prefix are trimmed). hostname fills $HOSTNAME.
//
// The format must contain $UUID or $INDEX: without one, two segments with the
// same partition would get the same key and the second upload would be taken
// for an already shipped duplicate. The Encoder fills $INDEX with the segment
// sequence, which is unique per agent only: agents sharing a bucket need
// $UUID (or $HOSTNAME, or their own prefix) to keep their keys apart.
//
// $TAG[n] is the n-th '.'-separated part of the tag, counting from 0; a tag
// with fewer parts renders it empty.
func CompileKeyFormat(prefix, format, hostname string) (*KeyFormat, error) {
	if format == "" {
		return nil, fmt.Errorf("%w: empty", ErrKeyFormat)
	}
	k := &KeyFormat{
		prefix:   strings.Trim(prefix, "/"),
		format:   format,
		hostname: strings.ReplaceAll(hostname, "\x00", ""),
		cache:    make(map[partitionCacheKey]string),
	}
	if k.prefix != "" {
		k.pieces = append(k.pieces, piece{kind: pieceLiteral, lit: k.prefix + "/"})
	}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			k.pieces = append(k.pieces, piece{kind: pieceLiteral, lit: lit.String()})
			lit.Reset()
		}
	}
	var hasID bool
	for i := 0; i < len(format); {
		c := format[i]
		switch {
		case c == 0:
			return nil, fmt.Errorf("%w %q: NUL byte at offset %d", ErrKeyFormat, format, i)
		case c == '%':
			if i+1 >= len(format) {
				return nil, fmt.Errorf("%w %q: trailing %%", ErrKeyFormat, format)
			}
			v := format[i+1]
			if v == '%' {
				lit.WriteByte('%')
				i += 2
				continue
			}
			g := verbGranularity[v]
			if g == 0 && strings.IndexByte(timeIndependentVerbs, v) < 0 {
				return nil, fmt.Errorf("%w %q: unsupported strftime specifier %%%c", ErrKeyFormat, format, v)
			}
			flush()
			k.pieces = append(k.pieces, piece{kind: pieceTime, verb: v})
			if g != 0 && (k.gran == 0 || g < k.gran) {
				k.gran = g
			}
			i += 2
		case c == '$':
			p, n, ok := parseVariable(format[i:])
			if !ok {
				lit.WriteByte(c)
				i++
				continue
			}
			if n < 0 {
				return nil, fmt.Errorf("%w %q: malformed $TAG[n] at offset %d", ErrKeyFormat, format, i)
			}
			flush()
			k.pieces = append(k.pieces, p)
			switch p.kind {
			case pieceUUID, pieceIndex:
				hasID = true
			case pieceTag, pieceTagPart:
				k.usesTag = true
			}
			i += n
		default:
			lit.WriteByte(c)
			i++
		}
	}
	flush()
	if !hasID {
		return nil, fmt.Errorf("%w %q: needs $UUID (or $INDEX) so that every segment gets its own object key", ErrKeyFormat, format)
	}
	return k, nil
}

// parseVariable recognises a variable at the start of s. ok is false when s
// does not start with a known variable name (the '$' is then literal); n < 0
// reports a malformed $TAG[...].
func parseVariable(s string) (p piece, n int, ok bool) {
	switch {
	case strings.HasPrefix(s, "$UUID"):
		return piece{kind: pieceUUID}, len("$UUID"), true
	case strings.HasPrefix(s, "$INDEX"):
		return piece{kind: pieceIndex}, len("$INDEX"), true
	case strings.HasPrefix(s, "$HOSTNAME"):
		return piece{kind: pieceHostname}, len("$HOSTNAME"), true
	case strings.HasPrefix(s, "$TAG["):
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return piece{}, -1, true
		}
		idx, err := strconv.Atoi(s[len("$TAG["):end])
		if err != nil || idx < 0 {
			return piece{}, -1, true
		}
		return piece{kind: pieceTagPart, part: idx}, end + 1, true
	case strings.HasPrefix(s, "$TAG"):
		return piece{kind: pieceTag}, len("$TAG"), true
	}
	return piece{}, 0, false
}

// String returns the format as compiled, with its prefix.
func (k *KeyFormat) String() string {
	if k.prefix == "" {
		return k.format
	}
	return k.prefix + "/" + k.format
}

// UsesTag reports whether keys depend on the record tag.
func (k *KeyFormat) UsesTag() bool { return k.usesTag }

// cacheKey truncates tsMillis to the format's finest time unit (floor, so
// times before 1970 truncate correctly) and drops the tag when unused.
func (k *KeyFormat) cacheKey(tsMillis int64, tag string) partitionCacheKey {
	var unit int64
	if k.gran != 0 {
		unit = tsMillis / k.gran
		if tsMillis%k.gran < 0 {
			unit--
		}
	}
	if !k.usesTag {
		tag = ""
	}
	return partitionCacheKey{unit: unit, tag: tag}
}

// Partition renders the key for a record at tsMillis (Unix ms, rendered in
// UTC) with the given tag, leaving $UUID and $INDEX as opaque markers for
// Key. Records with equal partitions belong in the same object. A cache hit
// allocates nothing.
func (k *KeyFormat) Partition(tsMillis int64, tag string) string {
	ck := k.cacheKey(tsMillis, tag)
	k.mu.Lock()
	p, ok := k.cache[ck]
	k.mu.Unlock()
	if ok {
		return p
	}
	p = k.render(tsMillis, tag)
	// The tag may alias a caller's buffer; the cache must own its copy.
	ck.tag = strings.Clone(ck.tag)
	k.mu.Lock()
	if len(k.cache) >= maxPartitionCache {
		clear(k.cache)
	}
	k.cache[ck] = p
	k.mu.Unlock()
	return p
}

// render is Partition without the cache.
func (k *KeyFormat) render(tsMillis int64, tag string) string {
	t := time.UnixMilli(tsMillis).UTC()
	b := make([]byte, 0, 64)
	for _, p := range k.pieces {
		switch p.kind {
		case pieceLiteral:
			b = append(b, p.lit...)
		case pieceTime:
			b = appendStrftime(b, p.verb, t)
		case pieceUUID:
			b = append(b, uuidMarker...)
		case pieceIndex:
			b = append(b, indexMarker...)
		case pieceTag:
			b = appendClean(b, tag)
		case pieceTagPart:
			b = appendClean(b, tagPart(tag, p.part))
		case pieceHostname:
			b = append(b, k.hostname...)
		}
	}
	return string(b)
}

// tagPart returns the n-th '.'-separated part of tag, or "" when the tag has
// fewer parts (Fluent Bit fails the key in that case; an empty path element
// keeps data flowing and is visible in the key).
func tagPart(tag string, n int) string {
	for i := 0; i < n; i++ {
		j := strings.IndexByte(tag, '.')
		if j < 0 {
			return ""
		}
		tag = tag[j+1:]
	}
	if j := strings.IndexByte(tag, '.'); j >= 0 {
		return tag[:j]
	}
	return tag
}

// appendClean appends s without NUL bytes, which are reserved for markers.
func appendClean(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if s[i] != 0 {
			b = append(b, s[i])
		}
	}
	return b
}

// Key fills the $UUID and $INDEX markers of a partition returned by this
// format's Partition.
func (k *KeyFormat) Key(partition, uuid string, index uint64) string {
	var b strings.Builder
	b.Grow(len(partition) + len(uuid) + 8)
	for {
		i := strings.IndexByte(partition, 0)
		if i < 0 || i+1 >= len(partition) {
			b.WriteString(partition)
			return b.String()
		}
		b.WriteString(partition[:i])
		switch partition[i : i+2] {
		case uuidMarker:
			b.WriteString(uuid)
		case indexMarker:
			b.WriteString(strconv.FormatUint(index, 10))
		}
		partition = partition[i+2:]
	}
}

// Display renders a partition for logs, with the markers shown as $UUID and
// $INDEX.
func (k *KeyFormat) Display(partition string) string {
	return strings.NewReplacer(uuidMarker, "$UUID", indexMarker, "$INDEX").Replace(partition)
}

var (
	shortDays   = [7]string{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}
	longDays    = [7]string{"Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"}
	shortMonths = [12]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}
	longMonths  = [12]string{"January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"}
)

// appendStrftime appends one strftime conversion of t (already UTC), with the
// meaning it has in C's strftime in the C locale.
func appendStrftime(b []byte, verb byte, t time.Time) []byte {
	switch verb {
	case 'Y':
		return strconv.AppendInt(b, int64(t.Year()), 10)
	case 'C':
		return appendPad(b, t.Year()/100, 2, '0')
	case 'y':
		return appendPad(b, t.Year()%100, 2, '0')
	case 'm':
		return appendPad(b, int(t.Month()), 2, '0')
	case 'b', 'h':
		return append(b, shortMonths[t.Month()-1]...)
	case 'B':
		return append(b, longMonths[t.Month()-1]...)
	case 'd':
		return appendPad(b, t.Day(), 2, '0')
	case 'e':
		return appendPad(b, t.Day(), 2, ' ')
	case 'j':
		return appendPad(b, t.YearDay(), 3, '0')
	case 'a':
		return append(b, shortDays[t.Weekday()]...)
	case 'A':
		return append(b, longDays[t.Weekday()]...)
	case 'u':
		wd := int(t.Weekday())
		if wd == 0 {
			wd = 7
		}
		return strconv.AppendInt(b, int64(wd), 10)
	case 'w':
		return strconv.AppendInt(b, int64(t.Weekday()), 10)
	case 'H':
		return appendPad(b, t.Hour(), 2, '0')
	case 'k':
		return appendPad(b, t.Hour(), 2, ' ')
	case 'I':
		return appendPad(b, hour12(t.Hour()), 2, '0')
	case 'l':
		return appendPad(b, hour12(t.Hour()), 2, ' ')
	case 'p':
		if t.Hour() < 12 {
			return append(b, "AM"...)
		}
		return append(b, "PM"...)
	case 'M':
		return appendPad(b, t.Minute(), 2, '0')
	case 'S':
		return appendPad(b, t.Second(), 2, '0')
	case 's':
		return strconv.AppendInt(b, t.Unix(), 10)
	case 'F':
		b = strconv.AppendInt(b, int64(t.Year()), 10)
		b = append(b, '-')
		b = appendPad(b, int(t.Month()), 2, '0')
		b = append(b, '-')
		return appendPad(b, t.Day(), 2, '0')
	case 'D':
		b = appendPad(b, int(t.Month()), 2, '0')
		b = append(b, '/')
		b = appendPad(b, t.Day(), 2, '0')
		b = append(b, '/')
		return appendPad(b, t.Year()%100, 2, '0')
	case 'T', 'R':
		b = appendPad(b, t.Hour(), 2, '0')
		b = append(b, ':')
		b = appendPad(b, t.Minute(), 2, '0')
		if verb == 'R' {
			return b
		}
		b = append(b, ':')
		return appendPad(b, t.Second(), 2, '0')
	case 'z':
		return append(b, "+0000"...)
	case 'Z':
		return append(b, "UTC"...)
	}
	return b
}

func hour12(h int) int {
	h %= 12
	if h == 0 {
		return 12
	}
	return h
}

// appendPad appends a non-negative v padded to width with pad.
func appendPad(b []byte, v, width int, pad byte) []byte {
	if v < 0 {
		v = -v
		b = append(b, '-')
	}
	n := 1
	for x := v; x >= 10; x /= 10 {
		n++
	}
	for ; n < width; n++ {
		b = append(b, pad)
	}
	return strconv.AppendInt(b, int64(v), 10)
}
