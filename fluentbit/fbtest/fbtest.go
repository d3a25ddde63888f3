// Package fbtest builds Fluent Bit chunks for tests: a small msgpack
// encoder and the event forms Fluent Bit hands to output plugins
// ([ts, record] and [[ts, metadata], record], group markers, EventTime).
// It exists so the decoder tests and the plugin harness encode chunks the
// same way, independently of the decoder under test.
package fbtest

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
)

// KV is one map entry; Map keeps its entries in order, like msgpack.
type KV struct {
	Key   any
	Value any
}

// Map is an ordered msgpack map.
type Map []KV

// Bin is encoded as msgpack bin (Fluent Bit sends some strings this way).
type Bin []byte

// Raw is appended as is (for hand-made or malformed bytes).
type Raw []byte

// EventTime is Fluent Bit's timestamp: ext type 0, 8 bytes, big-endian
// uint32 seconds then uint32 nanoseconds.
type EventTime struct {
	Sec  uint32
	Nsec uint32
}

// TimeOf converts t to an EventTime.
func TimeOf(t time.Time) EventTime {
	return EventTime{Sec: uint32(t.Unix()), Nsec: uint32(t.Nanosecond())}
}

// Ext is any other extension value.
type Ext struct {
	Type int8
	Data []byte
}

// Append encodes v in the smallest msgpack form. Supported: nil, bool, all
// int and uint types, float32, float64, string, Bin, Raw, []any, Map,
// map[string]any (sorted keys are not guaranteed: use Map for order),
// EventTime, Ext.
func Append(dst []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(dst, 0xc0)
	case bool:
		if x {
			return append(dst, 0xc3)
		}
		return append(dst, 0xc2)
	case int:
		return appendInt(dst, int64(x))
	case int8:
		return appendInt(dst, int64(x))
	case int16:
		return appendInt(dst, int64(x))
	case int32:
		return appendInt(dst, int64(x))
	case int64:
		return appendInt(dst, x)
	case uint:
		return appendUint(dst, uint64(x))
	case uint8:
		return appendUint(dst, uint64(x))
	case uint16:
		return appendUint(dst, uint64(x))
	case uint32:
		return appendUint(dst, uint64(x))
	case uint64:
		return appendUint(dst, x)
	case float32:
		dst = append(dst, 0xca)
		return binary.BigEndian.AppendUint32(dst, math.Float32bits(x))
	case float64:
		dst = append(dst, 0xcb)
		return binary.BigEndian.AppendUint64(dst, math.Float64bits(x))
	case string:
		return appendStr(dst, x)
	case Bin:
		switch n := len(x); {
		case n <= math.MaxUint8:
			dst = append(dst, 0xc4, byte(n))
		case n <= math.MaxUint16:
			dst = binary.BigEndian.AppendUint16(append(dst, 0xc5), uint16(n))
		default:
			dst = binary.BigEndian.AppendUint32(append(dst, 0xc6), uint32(n))
		}
		return append(dst, x...)
	case Raw:
		return append(dst, x...)
	case []any:
		dst = ArrayHeader(dst, len(x))
		for _, e := range x {
			dst = Append(dst, e)
		}
		return dst
	case Map:
		dst = MapHeader(dst, len(x))
		for _, kv := range x {
			dst = Append(dst, kv.Key)
			dst = Append(dst, kv.Value)
		}
		return dst
	case map[string]any:
		dst = MapHeader(dst, len(x))
		for k, e := range x {
			dst = appendStr(dst, k)
			dst = Append(dst, e)
		}
		return dst
	case EventTime:
		dst = append(dst, 0xd7, 0x00)
		dst = binary.BigEndian.AppendUint32(dst, x.Sec)
		return binary.BigEndian.AppendUint32(dst, x.Nsec)
	case Ext:
		switch n := len(x.Data); n {
		case 1, 2, 4, 8, 16:
			code := map[int]byte{1: 0xd4, 2: 0xd5, 4: 0xd6, 8: 0xd7, 16: 0xd8}[n]
			dst = append(dst, code, byte(x.Type))
		default:
			dst = append(dst, 0xc7, byte(n), byte(x.Type))
		}
		return append(dst, x.Data...)
	}
	panic(fmt.Sprintf("fbtest: cannot encode %T", v))
}

// ArrayHeader appends an array header for n elements.
func ArrayHeader(dst []byte, n int) []byte {
	switch {
	case n < 16:
		return append(dst, 0x90|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, 0xdc), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(dst, 0xdd), uint32(n))
}

// MapHeader appends a map header for n entries.
func MapHeader(dst []byte, n int) []byte {
	switch {
	case n < 16:
		return append(dst, 0x80|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, 0xde), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(dst, 0xdf), uint32(n))
}

func appendStr(dst []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		dst = append(dst, 0xa0|byte(n))
	case n <= math.MaxUint8:
		dst = append(dst, 0xd9, byte(n))
	case n <= math.MaxUint16:
		dst = binary.BigEndian.AppendUint16(append(dst, 0xda), uint16(n))
	default:
		dst = binary.BigEndian.AppendUint32(append(dst, 0xdb), uint32(n))
	}
	return append(dst, s...)
}

func appendInt(dst []byte, v int64) []byte {
	switch {
	case v >= 0:
		return appendUint(dst, uint64(v))
	case v >= -32:
		return append(dst, byte(int8(v)))
	case v >= math.MinInt8:
		return append(dst, 0xd0, byte(int8(v)))
	case v >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(dst, 0xd1), uint16(int16(v)))
	case v >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(dst, 0xd2), uint32(int32(v)))
	}
	return binary.BigEndian.AppendUint64(append(dst, 0xd3), uint64(v))
}

func appendUint(dst []byte, v uint64) []byte {
	switch {
	case v < 128:
		return append(dst, byte(v))
	case v <= math.MaxUint8:
		return append(dst, 0xcc, byte(v))
	case v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, 0xcd), uint16(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(dst, 0xce), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(dst, 0xcf), v)
}

// Chunk accumulates events the way Fluent Bit lays them out in a chunk:
// one msgpack array per event, concatenated.
type Chunk struct {
	b []byte
	n int
}

// Bytes returns the encoded chunk.
func (c *Chunk) Bytes() []byte { return c.b }

// Events is the number of events (markers included) appended so far.
func (c *Chunk) Events() int { return c.n }

// V1 appends [ts, record] (Fluent Bit 1.x and the forward protocol).
// ts is any timestamp value: EventTime, an integer or a float.
func (c *Chunk) V1(ts any, rec any) *Chunk {
	c.b = ArrayHeader(c.b, 2)
	c.b = Append(c.b, ts)
	c.b = Append(c.b, rec)
	c.n++
	return c
}

// V2 appends [[ts, metadata], record] (Fluent Bit 2.x and later).
func (c *Chunk) V2(ts any, meta Map, rec any) *Chunk {
	if meta == nil {
		meta = Map{}
	}
	c.b = ArrayHeader(c.b, 2)
	c.b = ArrayHeader(c.b, 2)
	c.b = Append(c.b, ts)
	c.b = Append(c.b, meta)
	c.b = Append(c.b, rec)
	c.n++
	return c
}

// GroupStart appends a group start marker: [[EventTime(-1), meta], attrs].
func (c *Chunk) GroupStart(meta Map, attrs Map) *Chunk {
	return c.V2(EventTime{Sec: 0xffffffff}, meta, attrs)
}

// GroupEnd appends a group end marker: [[EventTime(-2), {}], {}].
func (c *Chunk) GroupEnd() *Chunk {
	return c.V2(EventTime{Sec: 0xfffffffe}, nil, Map{})
}

// Raw appends bytes as they are (counted as one event).
func (c *Chunk) Raw(b []byte) *Chunk {
	c.b = append(c.b, b...)
	c.n++
	return c
}

// MeterRecord is a typical meter record map, as a Fluent Bit json parser
// produces it from a meter line.
func MeterRecord(customer, api string, value any, timeMillis int64, dims Map) Map {
	m := Map{
		{"customerId", customer},
		{"meterApiName", api},
		{"meterValue", value},
	}
	if timeMillis != 0 {
		m = append(m, KV{"meterTimeInMillis", timeMillis})
	}
	if dims != nil {
		m = append(m, KV{"dimensions", dims})
	}
	return m
}

// CustomerName is the customerId of record i of MeterChunk.
func CustomerName(i int) string { return fmt.Sprintf("customer-%06d", i) }

// MeterChunk is n typical meter records, customers CustomerName(first)
// onwards, alternating the [ts, record] and [[ts, metadata], record]
// forms, with EventTime timestamps and no meterTimeInMillis of their own
// (the event time applies). A record is about 250 bytes once buffered.
func MeterChunk(first, n int) []byte {
	c := new(Chunk)
	for i := first; i < first+n; i++ {
		r := MeterRecord(CustomerName(i), "api-calls", i%100, 0,
			Map{{"region", "us-east-1"}, {"tier", Bin("gold")}, {"pod", "app-7d9f8c6b5-x2x9z"}})
		ts := EventTime{Sec: 1654560000 + uint32(i), Nsec: uint32(i)}
		if i%2 == 0 {
			c.V1(ts, r)
		} else {
			c.V2(ts, Map{{"source", "tail"}}, r)
		}
	}
	return c.Bytes()
}
