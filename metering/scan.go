package metering

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
	"math/bits"
	"math/rand/v2"

	"github.com/tidwall/gjson"

	"github.com/metership/metership/record"
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
	present  uint8        // bit i: tags[i] was in the record
	nanos    record.Nanos // raw meterValue sum, before the dimension factor
	records  int64
}

// scanner reads canonical meter records and sums them per key. It reads
// the fixed layout record.Parser writes with record.ScanCanonical, and
// falls back to gjson for anything else (escaped strings, another order,
// whitespace). A record whose key was
// seen before allocates nothing: the key is built in a reused buffer and
// found in the scanner's own open-addressing table (lookup).
type scanner struct {
	tagNames    [][]byte // metering.allocation_tags
	licenseDim  []byte   // record dimension holding the license ARN, nil if none
	useCustomer bool     // batch mode: the customer is part of the key
	shapeBytes  []byte   // shape(), computed once

	key     []byte
	seed    maphash.Seed
	seed64  uint64
	slots   []slot
	entries []aggEntry
	keys    []string // keys[i] is entries[i]'s key
	invalid int64    // records whose meterValue is not a non-negative number
	// rescanned counts records a segment's count parsed (no aggregate).
	rescanned int64

	hour, hourStart int64 // the last record's hour, and its start in ms

	// per-record fields, reused
	canon              record.Canonical
	cust, api, license []byte
	tagVals            [maxAllocationTags][]byte
	present            uint8
}

func newScanner(tags []string, licenseDim string, useCustomer bool) *scanner {
	s := &scanner{useCustomer: useCustomer, seed: maphash.MakeSeed(), seed64: rand.Uint64(), slots: make([]slot, 1024)}
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
	clear(s.slots)
	clear(s.entries)
	s.entries = s.entries[:0]
	clear(s.keys)
	s.keys = s.keys[:0]
	s.invalid = 0
	s.rescanned = 0
	s.hour, s.hourStart = 0, 0
}

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
	s.count(tsMillis, value)
}

// addLocated counts a record from the fields the record parser located in
// its input line. They are the bytes parseFast would find in the canonical
// line (the parser's fast path copies them verbatim), read in the same
// order, so the sums are the same as add's without a second parse.
func (s *scanner) addLocated(tsMillis int64, l *record.Located) {
	s.cust = l.CustomerID()
	s.api = l.MeterAPIName()
	s.present = 0
	s.license = s.license[:0]
	for i := range l.Dimensions() {
		s.noteDimension(l.Dimension(i))
	}
	s.count(tsMillis, l.MeterValue())
}

// count adds the record whose fields parseFast, parseSlow or addLocated
// left in s.
func (s *scanner) count(tsMillis int64, value []byte) {
	nanos, ok := record.ParseNanos(value)
	if !ok {
		s.invalid++
		return
	}
	// Records of a segment mostly share their hour: skip the division.
	if tsMillis < s.hourStart || tsMillis >= s.hourStart+hourSeconds*1000 {
		s.hour = hourOfMillis(tsMillis)
		s.hourStart = s.hour * 1000
	}
	e := s.entry(s.hour, s.api, s.cust, s.license, s.present, &s.tagVals)
	e.nanos.Add(nanos)
	e.records++
}

// entry returns the sums of one key, creating them (zero) when new. Only
// the fields the scanner's settings use are part of the key.
func (s *scanner) entry(hour int64, api, cust, license []byte, present uint8, tags *[maxAllocationTags][]byte) *aggEntry {
	k := binary.LittleEndian.AppendUint64(s.key[:0], uint64(hour))
	k = appendField(k, api)
	if s.useCustomer {
		k = appendField(k, cust)
	}
	if s.licenseDim != nil {
		k = appendField(k, license)
	}
	k = append(k, present)
	for i := range s.tagNames {
		if present&(1<<i) != 0 {
			k = appendField(k, tags[i])
		}
	}
	s.key = k
	i, h := s.lookup(k)
	if i < 0 {
		i = s.insert(k, h)
		e := aggEntry{hour: hour, api: string(api), present: present}
		if s.useCustomer {
			e.customer = string(cust)
		}
		if s.licenseDim != nil {
			e.license = string(license)
		}
		for j := range s.tagNames {
			if present&(1<<j) != 0 {
				e.tags[j] = string(tags[j])
			}
		}
		s.entries = append(s.entries, e)
	}
	return &s.entries[i]
}

// lookup returns the entry of key k, or -1, and k's hash. The segment's
// distinct keys (hours x dimensions x tag values) are few, so a small
// open-addressing table beats a Go map keyed by the string: each slot
// holds the key's full hash next to its entry, so a probe compares key
// bytes only when the hashes match.
func (s *scanner) lookup(k []byte) (int, uint64) {
	h := s.hash(k)
	mask := uint64(len(s.slots) - 1)
	for p := h & mask; ; p = (p + 1) & mask {
		sl := &s.slots[p]
		if sl.entry == 0 {
			return -1, h
		}
		if sl.hash == h && s.keys[sl.entry-1] == string(k) {
			return int(sl.entry - 1), h
		}
	}
}

// hash hashes a key: keys of 8 to 32 bytes (most of them) with a few
// multiplications over overlapping 8-byte loads, seeded per scanner so
// crafted records cannot aim for collisions (which would only cost
// probes); other lengths with maphash.
func (s *scanner) hash(k []byte) uint64 {
	n := len(k)
	if n < 8 || n > 32 {
		return maphash.Bytes(s.seed, k)
	}
	a := binary.LittleEndian.Uint64(k)
	b := binary.LittleEndian.Uint64(k[n-8:])
	var c, d uint64
	if n > 16 {
		c = binary.LittleEndian.Uint64(k[8:])
		d = binary.LittleEndian.Uint64(k[n-16:])
	}
	return mix(a^s.seed64, b^uint64(n)) ^ mix(c^s.seed64, d^0x9e3779b97f4a7c15)
}

func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a^0xa0761d6478bd642f, b^0xe7037ed1a0b428db)
	return hi ^ lo
}

// insert adds key k (absent, hash h) and returns its entry index; the
// caller appends the entry. The table stays at most half full.
func (s *scanner) insert(k []byte, h uint64) int {
	i := len(s.keys)
	s.keys = append(s.keys, string(k))
	if 2*len(s.keys) > len(s.slots) {
		s.slots = make([]slot, 2*len(s.slots))
		for j, key := range s.keys {
			s.place(s.hash([]byte(key)), j)
		}
		return i
	}
	s.place(h, i)
	return i
}

func (s *scanner) place(h uint64, i int) {
	mask := uint64(len(s.slots) - 1)
	p := h & mask
	for s.slots[p].entry != 0 {
		p = (p + 1) & mask
	}
	s.slots[p] = slot{hash: h, entry: int32(i + 1)}
}

// slot is one place of the scanner's table.
type slot struct {
	hash  uint64
	entry int32 // entry index + 1; 0 is empty
}

// appendField appends b length-prefixed, so keys of different fields can
// never run into each other.
func appendField(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// parseFast reads the canonical layout record.Parser writes; false means
// "use parseSlow".
func (s *scanner) parseFast(line []byte) (value []byte, ok bool) {
	c := &s.canon
	if !record.ScanCanonical(line, s.useCustomer, c) {
		return nil, false
	}
	if s.useCustomer {
		s.cust = c.CustomerID
	}
	s.api = c.MeterAPIName
	s.present = 0
	s.license = s.license[:0]
	for {
		k, v, found, ok := c.NextDimension()
		if !ok {
			return nil, false
		}
		if !found {
			return c.MeterValue, true
		}
		s.noteDimension(k, v)
	}
}

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
	v := root.Get(record.FieldValue)
	if v.Type != gjson.Number {
		return nil, false
	}
	s.cust = []byte(root.Get(record.FieldCustomerID).String())
	s.api = []byte(root.Get(record.FieldMeterAPI).String())
	s.present = 0
	s.license = s.license[:0]
	root.Get(record.FieldDimensions).ForEach(func(k, val gjson.Result) bool {
		if val.Type == gjson.String {
			s.noteDimension([]byte(k.String()), []byte(val.String()))
		}
		return true
	})
	return []byte(v.Raw), true
}
