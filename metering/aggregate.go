package metering

import (
	"bytes"
	"encoding/binary"

	"github.com/metership/metership/record"
)

// Counting at ingest. Each batch the pipeline writes carries, ahead of its
// records, a buffer.FrameAggregate holding the batch's sums per key,
// computed from the fields the record parser had already located. When a
// sealed segment is counted, an aggregate whose key shape matches the
// meter's settings is merged and the records it covers are skipped; a
// segment without aggregates (written by an older version or with
// metering off) or with another shape (allocation_tags, license_arn or the
// mode changed in between) is scanned record by record, as before. Both
// ways give the same sums: a differential test holds them together.

// aggregateVersion is the first byte of an aggregate frame's data.
const aggregateVersion = 1

// shape describes which fields make a key: a scanner only merges an
// aggregate of its own shape.
func (s *scanner) shape() []byte {
	if s.shapeBytes == nil {
		b := []byte{0}
		if s.useCustomer {
			b[0] = 1
		}
		b = appendField(b, s.licenseDim)
		b = binary.AppendUvarint(b, uint64(len(s.tagNames)))
		for _, t := range s.tagNames {
			b = appendField(b, t)
		}
		s.shapeBytes = b
	}
	return s.shapeBytes
}

// appendAggregate encodes the scanner's sums:
//
//	version u8 | uvarint len, shape | uvarint records | uvarint invalid |
//	uvarint entries | per entry: varint hour, field api, field customer,
//	field license, present u8, field per present tag, uvarint nanos hi,
//	uvarint nanos lo, uvarint records
//
// where a field is a uvarint length and bytes. records counts the record
// frames covered (counted or invalid).
func (s *scanner) appendAggregate(dst []byte, records int) []byte {
	dst = append(dst, aggregateVersion)
	dst = appendField(dst, s.shape())
	dst = binary.AppendUvarint(dst, uint64(records))
	dst = binary.AppendUvarint(dst, uint64(s.invalid))
	dst = binary.AppendUvarint(dst, uint64(len(s.entries)))
	for i := range s.entries {
		e := &s.entries[i]
		dst = binary.AppendVarint(dst, e.hour)
		dst = appendStringField(dst, e.api)
		dst = appendStringField(dst, e.customer)
		dst = appendStringField(dst, e.license)
		dst = append(dst, e.present)
		for j := range s.tagNames {
			if e.present&(1<<j) != 0 {
				dst = appendStringField(dst, e.tags[j])
			}
		}
		dst = binary.AppendUvarint(dst, e.nanos.Hi)
		dst = binary.AppendUvarint(dst, e.nanos.Lo)
		dst = binary.AppendUvarint(dst, uint64(e.records))
	}
	return dst
}

func appendStringField(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// mergeAggregate adds an aggregate frame's sums to the scanner and returns
// how many record frames it covers. ok is false, and nothing is added,
// when the data is not an aggregate of the scanner's shape: the caller
// then counts the records themselves.
func (s *scanner) mergeAggregate(data []byte) (records int, ok bool) {
	// The first pass only checks, so a bad aggregate adds nothing.
	if records, ok = s.walkAggregate(data, false); !ok {
		return 0, false
	}
	s.walkAggregate(data, true)
	return records, true
}

// walkAggregate decodes an aggregate, adding its sums when apply is set.
func (s *scanner) walkAggregate(data []byte, apply bool) (int, bool) {
	r := aggReader{b: data}
	if r.byte() != aggregateVersion || !bytes.Equal(r.field(), s.shape()) {
		return 0, false
	}
	records := r.uvarint()
	invalid := r.uvarint()
	n := r.uvarint()
	if r.bad || records > 1<<32 || n > uint64(len(data)) {
		return 0, false
	}
	var tags [maxAllocationTags][]byte
	sum := invalid // every covered record is in one entry or invalid
	for range n {
		hour := r.varint()
		api, cust, license := r.field(), r.field(), r.field()
		present := r.byte()
		if present>>len(s.tagNames) != 0 {
			return 0, false
		}
		for j := range s.tagNames {
			tags[j] = nil
			if present&(1<<j) != 0 {
				tags[j] = r.field()
			}
		}
		nanos := record.Nanos{Hi: r.uvarint(), Lo: r.uvarint()}
		recs := r.uvarint()
		if r.bad || recs > records {
			return 0, false
		}
		sum += recs
		if apply {
			e := s.entry(hour, api, cust, license, present, &tags)
			e.nanos.Add(nanos)
			e.records += int64(recs)
		}
	}
	if r.bad || len(r.b) != 0 || sum != records {
		return 0, false
	}
	if apply {
		s.invalid += int64(invalid)
	}
	return int(records), true
}

// aggReader decodes aggregate data; bad latches the first error.
type aggReader struct {
	b   []byte
	bad bool
}

func (r *aggReader) byte() byte {
	if len(r.b) == 0 {
		r.bad = true
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *aggReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

// varint reads what binary.AppendVarint wrote (zigzag over a uvarint).
func (r *aggReader) varint() int64 {
	u := r.uvarint()
	x := int64(u >> 1)
	if u&1 != 0 {
		x = ^x
	}
	return x
}

func (r *aggReader) field() []byte {
	l := r.uvarint()
	if r.bad || l > uint64(len(r.b)) {
		r.bad = true
		return nil
	}
	f := r.b[:l]
	r.b = r.b[l:]
	return f
}

// BatchSums sums the records of one batch while they are ingested, for
// the aggregate frame written ahead of them (pipeline.Ingester); it is
// the meter's pipeline.BatchCount. It is not safe for concurrent use: one
// per Ingester.
type BatchSums struct {
	sc      *scanner
	records int
	frame   []byte
}

// NewBatchSums returns an empty BatchSums with the meter's key shape.
func (m *Meter) NewBatchSums() *BatchSums {
	return &BatchSums{sc: newScanner(m.set.tags, m.set.licenseDim, m.set.mode == ModeBatchMeterUsage)}
}

// Add counts one accepted record: from the fields the parser located when
// loc is not nil, else from its canonical line.
func (b *BatchSums) Add(tsMillis int64, loc *record.Located, line []byte) {
	if loc != nil {
		b.sc.addLocated(tsMillis, loc)
	} else {
		b.sc.add(tsMillis, line)
	}
	b.records++
}

// Aggregate is the encoded aggregate of the records added since Reset, or
// nil when there are none. It is valid until the next call.
func (b *BatchSums) Aggregate() []byte {
	if b.records == 0 {
		return nil
	}
	b.frame = b.sc.appendAggregate(b.frame[:0], b.records)
	return b.frame
}

// Reset forgets the records added, for the next batch.
func (b *BatchSums) Reset() {
	b.sc.reset()
	b.records = 0
}
