package record

import (
	"strconv"
	"unicode/utf8"
)

// appendJSONString appends s as a JSON string. Control characters and
// DEL are escaped, invalid UTF-8 becomes U+FFFD, so the output is always
// valid JSON. Runs of plain bytes are copied at once: strings in meter
// records are mostly plain ASCII, and the plugin's msgpack decoder spends
// most of its time here.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c < 0x7f && c != '"' && c != '\\' {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r != utf8.RuneError || size > 1 {
				i += size
				continue
			}
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// AppendJSONString is appendJSONString for other packages (dead letters,
// the plugin's msgpack -> JSON conversion).
func AppendJSONString(dst []byte, s string) []byte { return appendJSONString(dst, s) }

// AppendJSONBytes is AppendJSONString for a byte slice, without converting.
func AppendJSONBytes(dst []byte, b []byte) []byte {
	return appendJSONString(dst, unsafeString(b))
}

// AppendDeadLetter appends one dead-letter entry
// {"source","offset","line","reason"} as compact JSON. The line is kept as
// a JSON string (invalid UTF-8 replaced) so the entry is always readable.
func AppendDeadLetter(dst []byte, source string, offset int64, line []byte, reason string) []byte {
	dst = append(dst, `{"source":`...)
	dst = appendJSONString(dst, source)
	dst = append(dst, `,"offset":`...)
	dst = strconv.AppendInt(dst, offset, 10)
	dst = append(dst, `,"line":`...)
	dst = appendJSONString(dst, unsafeString(line))
	dst = append(dst, `,"reason":`...)
	dst = appendJSONString(dst, reason)
	return append(dst, '}')
}
