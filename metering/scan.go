package metering

import (
	"bytes"
	"encoding/binary"

	"github.com/tidwall/gjson"
)

// maxAllocationTags is AWS's limit of tags per allocation (and conf's limit
// on metering.allocation_tags).
const maxAllocationTags = 5

// aggEntry is one segment's total for one (hour, meterApiName, customer,
// license, tag values).
type aggEntry struct {
	hour     int64
	api      string
	customer string
	license  string
	tags     [maxAllocationTags]string
	present  uint8 // bit i: tags[i] was in the record
	nanos    u128  // raw meterValue sum, before the dimension factor
	records  int64
}

// scanner reads canonical meter records and sums them per key. It exploits
// the fixed layout record.Parser writes,
//
//	{"customerId":"..","meterApiName":"..","meterValue":N,"meterTimeInMillis":N,"dimensions":{..},"uniqueId":".."}
//
// with a few prefix comparisons, and falls back to gjson for anything else
// (escaped strings, another order, whitespace). A record whose key was
// seen before allocates nothing: the key is built in a reused buffer and
// looked up with m[string(b)], which Go does without a copy.
type scanner struct {
	tagNames    [][]byte // metering.allocation_tags
	licenseDim  []byte   // record dimension holding the license ARN, nil if none
	useCustomer bool     // batch mode: the customer is part of the key

	key     []byte
	index   map[string]int
	entries []aggEntry
	invalid int64 // records whose meterValue is not a non-negative number

	// per-record fields, reused
	cust, api, license []byte
	tagVals            [maxAllocationTags][]byte
	present            uint8
}

func newScanner(tags []string, licenseDim string, useCustomer bool) *scanner {
	s := &scanner{useCustomer: useCustomer, index: make(map[string]int, 256)}
	for _, t := range tags {
		s.tagNames = append(s.tagNames, []byte(t))
	}
	if licenseDim != "" {
		s.licenseDim = []byte(licenseDim)
	}
	return s
}

// reset empties the scanner for the next segment, keeping its memory.
func (s *scanner) reset() {
	clear(s.index)
	clear(s.entries)
	s.entries = s.entries[:0]
	s.invalid = 0
}

var (
	prefixCustomer = []byte(`{"customerId":"`)
	sepAPI         = []byte(`,"meterApiName":"`)
	sepValue       = []byte(`,"meterValue":`)
	sepTime        = []byte(`,"meterTimeInMillis":`)
	sepDimensions  = []byte(`,"dimensions":{`)
)

// add counts one record line whose meter time is tsMillis.
func (s *scanner) add(tsMillis int64, line []byte) {
	value, ok := s.parseFast(line)
	if !ok {
		value, ok = s.parseSlow(line)
	}
	if !ok {
		s.invalid++
		return
	}
	nanos, ok := parseNanos(value)
	if !ok {
		s.invalid++
		return
	}
	hour := hourOfMillis(tsMillis)
	k := binary.LittleEndian.AppendUint64(s.key[:0], uint64(hour))
	k = appendField(k, s.api)
	if s.useCustomer {
		k = appendField(k, s.cust)
	}
	if s.licenseDim != nil {
		k = appendField(k, s.license)
	}
	k = append(k, s.present)
	for i := range s.tagNames {
		if s.present&(1<<i) != 0 {
			k = appendField(k, s.tagVals[i])
		}
	}
	s.key = k
	i, ok := s.index[string(k)]
	if !ok {
		i = len(s.entries)
		e := aggEntry{hour: hour, api: string(s.api), present: s.present}
		if s.useCustomer {
			e.customer = string(s.cust)
		}
		if s.licenseDim != nil {
			e.license = string(s.license)
		}
		for j := range s.tagNames {
			if s.present&(1<<j) != 0 {
				e.tags[j] = string(s.tagVals[j])
			}
		}
		s.entries = append(s.entries, e)
		s.index[string(k)] = i
	}
	e := &s.entries[i]
	e.nanos.add(nanos)
	e.records++
}

// appendField appends b length-prefixed, so keys of different fields can
// never run into each other.
func appendField(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// parseFast reads the canonical layout; false means "use parseSlow".
func (s *scanner) parseFast(line []byte) (value []byte, ok bool) {
	if !bytes.HasPrefix(line, prefixCustomer) {
		return nil, false
	}
	i := len(prefixCustomer)
	if s.cust, i, ok = plainString(line, i); !ok {
		return nil, false
	}
	if !bytes.HasPrefix(line[i:], sepAPI) {
		return nil, false
	}
	if s.api, i, ok = plainString(line, i+len(sepAPI)); !ok {
		return nil, false
	}
	if !bytes.HasPrefix(line[i:], sepValue) {
		return nil, false
	}
	i += len(sepValue)
	start := i
	for i < len(line) && line[i] != ',' {
		i++
	}
	if i == start {
		return nil, false
	}
	value = line[start:i]
	if !bytes.HasPrefix(line[i:], sepTime) {
		return nil, false
	}
	i += len(sepTime)
	for i < len(line) && line[i] >= '0' && line[i] <= '9' {
		i++
	}
	s.present = 0
	s.license = s.license[:0]
	if !bytes.HasPrefix(line[i:], sepDimensions) {
		return value, i < len(line) && (line[i] == ',' || line[i] == '}')
	}
	i += len(sepDimensions)
	if i < len(line) && line[i] == '}' {
		return value, true
	}
	for {
		var k, v []byte
		if i >= len(line) || line[i] != '"' {
			return nil, false
		}
		if k, i, ok = plainString(line, i+1); !ok {
			return nil, false
		}
		if i+1 >= len(line) || line[i] != ':' || line[i+1] != '"' {
			return nil, false
		}
		if v, i, ok = plainString(line, i+2); !ok {
			return nil, false
		}
		s.noteDimension(k, v)
		if i >= len(line) {
			return nil, false
		}
		switch line[i] {
		case ',':
			i++
		case '}':
			return value, true
		default:
			return nil, false
		}
	}
}

// plainString returns the string starting at line[i] (just after its
// opening quote) and the index after its closing quote; false when it has
// escapes or does not end.
func plainString(line []byte, i int) ([]byte, int, bool) {
	j := i
	for j < len(line) && !quoteOrEscape[line[j]] {
		j++
	}
	if j < len(line) && line[j] == '"' {
		return line[i:j], j + 1, true
	}
	return nil, i, false
}

// quoteOrEscape marks the bytes that end a plain string scan.
var quoteOrEscape = [256]bool{'"': true, '\\': true}

// noteDimension keeps a record dimension if it is an allocation tag or the
// license dimension. An empty value counts as absent.
func (s *scanner) noteDimension(k, v []byte) {
	if len(v) == 0 {
		return
	}
	for j, name := range s.tagNames {
		if bytes.Equal(k, name) {
			s.tagVals[j] = v
			s.present |= 1 << j
		}
	}
	if s.licenseDim != nil && bytes.Equal(k, s.licenseDim) {
		s.license = v
	}
}

// parseSlow reads any valid JSON object with gjson, unescaping strings.
// It allocates and is only used for records off the canonical layout.
func (s *scanner) parseSlow(line []byte) (value []byte, ok bool) {
	if !gjson.ValidBytes(line) {
		return nil, false
	}
	root := gjson.ParseBytes(line)
	if !root.IsObject() {
		return nil, false
	}
	v := root.Get("meterValue")
	if v.Type != gjson.Number {
		return nil, false
	}
	s.cust = []byte(root.Get("customerId").String())
	s.api = []byte(root.Get("meterApiName").String())
	s.present = 0
	s.license = s.license[:0]
	root.Get("dimensions").ForEach(func(k, val gjson.Result) bool {
		if val.Type == gjson.String {
			s.noteDimension([]byte(k.String()), []byte(val.String()))
		}
		return true
	})
	return []byte(v.Raw), true
}
