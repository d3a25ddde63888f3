package export

import (
	"bytes"
	"strconv"
	"time"

	"github.com/tidwall/gjson"

	"github.com/metership/metership/record"
)

// fields are one record's parts the aggregation needs; the slices alias
// the line (fast path) or fresh copies (slow path).
type fields struct {
	cust, api, value []byte
	millis           int64
	ndims            int
	dimK, dimV       [maxDims][]byte
	canon            record.Canonical // the fast path's scratch
}

// maxDims bounds the dimensions of a record read back; record validation
// allows fewer.
const maxDims = 64

// scanRecord reads a shipped record line. The fast path reads the
// canonical layout the shipper writes (record.ScanCanonical, which
// metering's scanner also uses) without allocating; anything else
// (escapes, another key order, whitespace) is read by gjson. ok is false for a line
// that is not a meter record.
func scanRecord(line []byte, f *fields) bool {
	if scanFast(line, f) {
		return true
	}
	return scanSlow(line, f)
}

func scanFast(line []byte, f *fields) bool {
	c := &f.canon
	if !record.ScanCanonical(line, true, c) {
		return false
	}
	if len(c.MeterTime) == 0 || len(c.MeterTime) > 15 {
		return false
	}
	var ms int64
	for _, d := range c.MeterTime {
		ms = ms*10 + int64(d-'0')
	}
	f.cust, f.api, f.value, f.millis = c.CustomerID, c.MeterAPIName, c.MeterValue, ms
	f.ndims = 0
	for {
		k, v, found, ok := c.NextDimension()
		if !ok || (found && f.ndims == maxDims) {
			return false
		}
		if !found {
			return true
		}
		f.dimK[f.ndims], f.dimV[f.ndims] = k, v
		f.ndims++
	}
}

func scanSlow(line []byte, f *fields) bool {
	if !gjson.ValidBytes(line) {
		return false
	}
	root := gjson.ParseBytes(line)
	if !root.IsObject() {
		return false
	}
	v := root.Get(record.FieldValue)
	ts := root.Get(record.FieldTime)
	if v.Type != gjson.Number || ts.Type != gjson.Number {
		return false
	}
	ms, err := strconv.ParseInt(ts.Raw, 10, 64)
	if err != nil {
		return false
	}
	f.value = []byte(v.Raw)
	f.millis = ms
	f.cust = []byte(root.Get(record.FieldCustomerID).String())
	f.api = []byte(root.Get(record.FieldMeterAPI).String())
	f.ndims = 0
	ok := true
	root.Get(record.FieldDimensions).ForEach(func(k, val gjson.Result) bool {
		if f.ndims == maxDims {
			ok = false
			return false
		}
		f.dimK[f.ndims] = []byte(k.String())
		f.dimV[f.ndims] = []byte(val.String())
		f.ndims++
		return true
	})
	return ok
}

// dimension returns the value of dimension name ("customerId" is the
// record's customer), and whether the record has it.
func (f *fields) dimension(name []byte, isCustomer bool) ([]byte, bool) {
	if isCustomer {
		return f.cust, true
	}
	for i := 0; i < f.ndims; i++ {
		if bytes.Equal(f.dimK[i], name) {
			return f.dimV[i], true
		}
	}
	return nil, false
}

// bucketer maps a record time to its bucket start, caching the last
// bucket: records of one object mostly share it.
type bucketer struct {
	bucket string
	lo, hi int64 // the cached bucket [lo, hi) in ms
}

func (b *bucketer) start(ms int64) int64 {
	if ms >= b.lo && ms < b.hi {
		return b.lo
	}
	t := time.UnixMilli(ms)
	s := BucketStart(b.bucket, t)
	b.lo, b.hi = s.UnixMilli(), NextBucket(b.bucket, s).UnixMilli()
	return b.lo
}
