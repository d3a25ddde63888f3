package record

import (
	"strconv"
)

// The fast path handles the common case, a valid meter line with plain
// (unescaped) strings, in one validating pass over the bytes. Anything it
// is not sure about (escapes in the fields it reads, a type error, odd
// syntax) makes it give up, and the gjson path (parseMeter) decides and
// writes the exact error. FuzzFastPath checks both agree.

type span struct{ start, end int } // raw token bounds in the line

type fastFields struct {
	cust, api, val, ts, uid span
	has                     [6]bool
	ndims                   int
	dimKV                   [maxDimensions][4]int32 // key start/end, value start/end
}

const (
	fCust = iota
	fAPI
	fVal
	fTime
	fDims
	fUID
)

// scanMeter validates line as JSON and extracts the meter fields. ok is
// false when the slow path must decide.
func scanMeter(line []byte, f *fastFields) bool {
	i := skipWS(line, 0)
	if i >= len(line) || line[i] != '{' {
		return false
	}
	i = skipWS(line, i+1)
	if i < len(line) && line[i] == '}' {
		return skipWS(line, i+1) == len(line)
	}
	for {
		if i >= len(line) || line[i] != '"' {
			return false
		}
		kStart := i
		end, esc, ok := scanString(line, i)
		if !ok || esc {
			return false // escaped keys are rare: let gjson compare them
		}
		key := line[kStart+1 : end-1]
		i = skipWS(line, end)
		if i >= len(line) || line[i] != ':' {
			return false
		}
		i = skipWS(line, i+1)
		field := -1
		switch string(key) {
		case FieldCustomerID:
			field = fCust
		case FieldMeterAPI:
			field = fAPI
		case FieldValue:
			field = fVal
		case FieldTime:
			field = fTime
		case FieldDimensions:
			field = fDims
		case FieldUniqueID:
			field = fUID
		}
		if field >= 0 && f.has[field] {
			field = -2 // duplicate key: the first wins, validate and skip
		}
		var vEnd int
		switch field {
		case fCust, fAPI, fUID:
			if i >= len(line) || line[i] != '"' {
				return false
			}
			e, esc, ok := scanString(line, i)
			if !ok || esc || e-i-2 == 0 || e-i-2 > maxIDLen {
				return false
			}
			vEnd = e
		case fVal, fTime:
			e, ok := scanNumber(line, i)
			if !ok {
				return false
			}
			vEnd = e
		case fDims:
			e, ok := scanDimensions(line, i, f)
			if !ok {
				return false
			}
			vEnd = e
		default:
			e, ok := skipValue(line, i, 0)
			if !ok {
				return false
			}
			vEnd = e
		}
		if field >= 0 {
			f.has[field] = true
			sp := span{i, vEnd}
			switch field {
			case fCust:
				f.cust = sp
			case fAPI:
				f.api = sp
			case fVal:
				f.val = sp
			case fTime:
				f.ts = sp
			case fUID:
				f.uid = sp
			}
		}
		next, closed, ok := afterItem(line, vEnd, '}')
		if !ok {
			return false
		}
		if closed {
			return skipWS(line, next) == len(line)
		}
		i = next
	}
}

// scanDimensions reads an object of plain strings, recording the pairs.
func scanDimensions(b []byte, i int, f *fastFields) (int, bool) {
	if i >= len(b) || b[i] != '{' {
		return 0, false
	}
	i = skipWS(b, i+1)
	f.ndims = 0
	if i < len(b) && b[i] == '}' {
		return i + 1, true
	}
	for {
		if f.ndims == maxDimensions || i >= len(b) || b[i] != '"' {
			return 0, false
		}
		ks := i
		ke, esc, ok := scanString(b, i)
		if !ok || esc || ke-ks-2 == 0 || ke-ks-2 > maxDimensionLen {
			return 0, false
		}
		i = skipWS(b, ke)
		if i >= len(b) || b[i] != ':' {
			return 0, false
		}
		i = skipWS(b, i+1)
		if i >= len(b) || b[i] != '"' {
			return 0, false
		}
		vs := i
		ve, esc, ok := scanString(b, i)
		if !ok || esc || ve-vs-2 > maxDimensionLen {
			return 0, false
		}
		f.dimKV[f.ndims] = [4]int32{int32(ks), int32(ke), int32(vs), int32(ve)}
		f.ndims++
		next, closed, ok := afterItem(b, ve, '}')
		if !ok || closed {
			return next, ok
		}
		i = next
	}
}

// afterItem reads what follows an item of an object or array, from b[i]:
// the closing byte (closed, next is past it) or a comma (next is the
// start of the following item). ok is false for anything else.
func afterItem(b []byte, i int, closing byte) (next int, closed, ok bool) {
	i = skipWS(b, i)
	switch {
	case i >= len(b):
		return 0, false, false
	case b[i] == closing:
		return i + 1, true, true
	case b[i] == ',':
		return skipWS(b, i+1), false, true
	}
	return 0, false, false
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString validates the JSON string starting at b[i] == '"' and returns
// the index after its closing quote and whether it holds escapes.
func scanString(b []byte, i int) (end int, esc bool, ok bool) {
	i++
	for i < len(b) {
		// Skip ordinary bytes with a table lookup: most strings have none
		// of the three kinds of special byte.
		for i < len(b) && !strSpecial[b[i]] {
			i++
		}
		if i >= len(b) {
			break
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1, esc, true
		case c == '\\':
			esc = true
			if i+1 >= len(b) {
				return 0, false, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+5 >= len(b) {
					return 0, false, false
				}
				for _, h := range b[i+2 : i+6] {
					if !isHex(h) {
						return 0, false, false
					}
				}
				i += 6
			default:
				return 0, false, false
			}
		default: // a control character
			return 0, false, false
		}
	}
	return 0, false, false
}

// strSpecial marks the bytes a JSON string scan must stop at: the quote,
// the backslash and the control characters.
var strSpecial = func() (t [256]bool) {
	for c := 0; c < 0x20; c++ {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// scanNumber validates a JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func scanNumber(b []byte, i int) (int, bool) {
	if i < len(b) && b[i] == '-' {
		i++
	}
	if i >= len(b) {
		return 0, false
	}
	switch {
	case b[i] == '0':
		i++
	case '1' <= b[i] && b[i] <= '9':
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	default:
		return 0, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		d := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		if i == d {
			return 0, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		if i == d {
			return 0, false
		}
	}
	return i, true
}

// skipValue validates any JSON value, bounding nesting so hostile input
// cannot exhaust the stack.
func skipValue(b []byte, i, depth int) (int, bool) {
	if i >= len(b) || depth > 64 {
		return 0, false
	}
	switch c := b[i]; {
	case c == '"':
		e, _, ok := scanString(b, i)
		return e, ok
	case c == '-' || '0' <= c && c <= '9':
		return scanNumber(b, i)
	case c == 't':
		return literal(b, i, "true")
	case c == 'f':
		return literal(b, i, "false")
	case c == 'n':
		return literal(b, i, "null")
	case c == '[':
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == ']' {
			return i + 1, true
		}
		for {
			e, ok := skipValue(b, i, depth+1)
			if !ok {
				return 0, false
			}
			next, closed, ok := afterItem(b, e, ']')
			if !ok || closed {
				return next, ok
			}
			i = next
		}
	case c == '{':
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == '}' {
			return i + 1, true
		}
		for {
			if i >= len(b) || b[i] != '"' {
				return 0, false
			}
			e, _, ok := scanString(b, i)
			if !ok {
				return 0, false
			}
			i = skipWS(b, e)
			if i >= len(b) || b[i] != ':' {
				return 0, false
			}
			if e, ok = skipValue(b, skipWS(b, i+1), depth+1); !ok {
				return 0, false
			}
			next, closed, ok := afterItem(b, e, '}')
			if !ok || closed {
				return next, ok
			}
			i = next
		}
	}
	return 0, false
}

func literal(b []byte, i int, lit string) (int, bool) {
	if len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit {
		return i + len(lit), true
	}
	return 0, false
}

// fastMeter writes the canonical record for a line scanMeter accepted, or
// reports false when a value needs the slow path's judgement.
func (p *Parser) fastMeter(dst, line []byte, src Origin) ([]byte, int64, bool) {
	f := &p.fast
	f.has = [6]bool{}
	if !scanMeter(line, f) {
		return dst, 0, false
	}
	if !f.has[fCust] || !f.has[fAPI] || !f.has[fVal] {
		return dst, 0, false
	}
	raw := line[f.val.start:f.val.end]
	if !plainNonNegative(raw) {
		// Negative, or an exponent that might overflow to Inf: the slow
		// path decides and names the problem.
		return dst, 0, false
	}
	var millis int64
	if f.has[fTime] {
		ts := unsafeString(line[f.ts.start:f.ts.end])
		m, ok := parseDigits(ts)
		if !ok || m < minTime || m >= maxTime {
			return dst, 0, false
		}
		millis = m
	} else if src.TimeMillis > 0 {
		millis = src.TimeMillis
	} else {
		return dst, 0, false
	}

	out := append(dst, `{"customerId":`...)
	out = append(out, line[f.cust.start:f.cust.end]...)
	out = append(out, `,"meterApiName":`...)
	out = append(out, line[f.api.start:f.api.end]...)
	out = append(out, `,"meterValue":`...)
	out = append(out, raw...)
	out = append(out, `,"meterTimeInMillis":`...)
	out = strconv.AppendInt(out, millis, 10)
	if f.has[fDims] && f.ndims > 0 {
		out = append(out, `,"dimensions":{`...)
		for k := 0; k < f.ndims; k++ {
			kv := f.dimKV[k]
			if k > 0 {
				out = append(out, ',')
			}
			out = append(out, line[kv[0]:kv[1]]...)
			out = append(out, ':')
			out = append(out, line[kv[2]:kv[3]]...)
		}
		out = append(out, '}')
	}
	out = append(out, `,"uniqueId":`...)
	if f.has[fUID] {
		out = append(out, line[f.uid.start:f.uid.end]...)
	} else {
		out = p.appendDerivedID(out, line, src)
	}
	return append(out, '}'), millis, true
}

// plainNonNegative reports whether a number token scanNumber accepted is
// certainly finite and not negative without parsing it: no exponent, at
// most 300 digits, and no minus sign unless every digit is zero (-0 is
// allowed, as ParseFloat sees it as zero).
func plainNonNegative(raw []byte) bool {
	if len(raw) > 300 {
		return false
	}
	neg := len(raw) > 0 && raw[0] == '-'
	for _, c := range raw {
		switch {
		case c == 'e' || c == 'E':
			return false
		case neg && '1' <= c && c <= '9':
			return false
		}
	}
	return true
}

// Located is where the fast path found a record's fields: the same bytes
// the canonical line holds (the fast path copies plain strings and numbers
// verbatim), so a consumer of those fields can skip parsing the canonical
// line again. Metering uses it to count records while they are ingested.
type Located struct {
	line []byte // the parsed line; nil when the last Parse was not fast
	f    *fastFields
}

// Located returns the fields of the record the last Parse accepted, when
// it took the fast path; ok is false otherwise (escaped strings, format
// json, a rejected line), and the caller reads the canonical line instead.
// The slices alias the line given to Parse: valid until it changes or the
// next Parse.
func (p *Parser) Located() (*Located, bool) {
	if p.located.line == nil {
		return nil, false
	}
	p.located.f = &p.fast
	return &p.located, true
}

// CustomerID is the customerId string, without quotes.
func (l *Located) CustomerID() []byte { return unquote(l.line, l.f.cust) }

// MeterAPIName is the meterApiName string, without quotes.
func (l *Located) MeterAPIName() []byte { return unquote(l.line, l.f.api) }

// MeterValue is the meterValue number as written.
func (l *Located) MeterValue() []byte { return l.line[l.f.val.start:l.f.val.end] }

// Dimensions is the number of dimensions, in their order in the line.
func (l *Located) Dimensions() int {
	if !l.f.has[fDims] {
		return 0
	}
	return l.f.ndims
}

// Dimension returns dimension i's key and value, without quotes.
func (l *Located) Dimension(i int) (key, value []byte) {
	kv := l.f.dimKV[i]
	return l.line[kv[0]+1 : kv[1]-1], l.line[kv[2]+1 : kv[3]-1]
}

func unquote(line []byte, s span) []byte { return line[s.start+1 : s.end-1] }
