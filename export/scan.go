package export

import (
	"bytes"
	"math"
	"math/big"
	"math/bits"
	"strconv"
	"time"

	"github.com/tidwall/gjson"

	"github.com/metership/metership/record"
)

// nanosPerUnit is the resolution of sums, as in the metering ledger:
// values are added as integer billionths, so ten records of 0.1 sum to
// exactly 1.
const nanosPerUnit = 1_000_000_000

// u128 is an unsigned 128-bit count of nanos; sums saturate instead of
// wrapping.
type u128 struct{ hi, lo uint64 }

func (a *u128) add(b u128) {
	var c uint64
	a.lo, c = bits.Add64(a.lo, b.lo, 0)
	a.hi, c = bits.Add64(a.hi, b.hi, c)
	if c != 0 {
		a.hi, a.lo = math.MaxUint64, math.MaxUint64
	}
}

func (a u128) big() *big.Int {
	b := new(big.Int).SetUint64(a.hi)
	b.Lsh(b, 64)
	return b.Or(b, new(big.Int).SetUint64(a.lo))
}

var pow10 = [...]uint64{1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9}

// parseNanos converts a non-negative JSON number token to nanos, dropping
// digits past the ninth decimal, like the metering ledger does. Plain
// forms are parsed without allocating; exponents and long numbers take an
// exact math/big path.
func parseNanos(s []byte) (u128, bool) {
	i := 0
	var intPart uint64
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		if i >= 18 {
			return parseNanosSlow(s)
		}
		intPart = intPart*10 + uint64(s[i]-'0')
		i++
	}
	if i == 0 {
		return parseNanosSlow(s)
	}
	var frac uint64
	if i < len(s) {
		if s[i] != '.' {
			return parseNanosSlow(s)
		}
		i++
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			if i-start < 9 {
				frac = frac*10 + uint64(s[i]-'0')
			}
			i++
		}
		n := i - start
		if n == 0 || i != len(s) {
			return parseNanosSlow(s)
		}
		if n < 9 {
			frac *= pow10[9-n]
		}
	}
	hi, lo := bits.Mul64(intPart, nanosPerUnit)
	var c uint64
	lo, c = bits.Add64(lo, frac, 0)
	return u128{hi: hi + c, lo: lo}, true
}

func parseNanosSlow(s []byte) (u128, bool) {
	if len(s) == 0 || s[0] == '-' || !gjson.ValidBytes(s) || gjson.ParseBytes(s).Type != gjson.Number {
		return u128{}, false
	}
	r, ok := new(big.Rat).SetString(string(s))
	if !ok || r.Sign() < 0 {
		return u128{}, false
	}
	r.Mul(r, big.NewRat(nanosPerUnit, 1))
	n := new(big.Int).Quo(r.Num(), r.Denom())
	if n.BitLen() > 128 {
		return u128{hi: math.MaxUint64, lo: math.MaxUint64}, true
	}
	lo := new(big.Int).And(n, new(big.Int).SetUint64(math.MaxUint64)).Uint64()
	return u128{hi: new(big.Int).Rsh(n, 64).Uint64(), lo: lo}, true
}

// fields are one record's parts the aggregation needs; the slices alias
// the line (fast path) or fresh copies (slow path).
type fields struct {
	cust, api, value []byte
	millis           int64
	ndims            int
	dimK, dimV       [maxDims][]byte
}

// maxDims bounds the dimensions of a record read back; record validation
// allows fewer.
const maxDims = 64

var (
	prefixCustomer = []byte(`{"customerId":"`)
	sepAPI         = []byte(`,"meterApiName":"`)
	sepValue       = []byte(`,"meterValue":`)
	sepTime        = []byte(`,"meterTimeInMillis":`)
	sepDimensions  = []byte(`,"dimensions":{`)
)

// scanRecord reads a shipped record line. The fast path follows the fixed
// canonical layout the shipper writes (record.Parser's output, which
// metering's scanner also relies on),
//
//	{"customerId":"..","meterApiName":"..","meterValue":N,"meterTimeInMillis":N,"dimensions":{..},"uniqueId":".."}
//
// with prefix comparisons and no allocation; anything else (escapes,
// another key order, whitespace) is read by gjson. ok is false for a line
// that is not a meter record.
func scanRecord(line []byte, f *fields) bool {
	if scanFast(line, f) {
		return true
	}
	return scanSlow(line, f)
}

func scanFast(line []byte, f *fields) bool {
	if !bytes.HasPrefix(line, prefixCustomer) {
		return false
	}
	var ok bool
	i := len(prefixCustomer)
	if f.cust, i, ok = plainString(line, i); !ok {
		return false
	}
	if !bytes.HasPrefix(line[i:], sepAPI) {
		return false
	}
	if f.api, i, ok = plainString(line, i+len(sepAPI)); !ok {
		return false
	}
	if !bytes.HasPrefix(line[i:], sepValue) {
		return false
	}
	i += len(sepValue)
	start := i
	for i < len(line) && line[i] != ',' {
		i++
	}
	if i == start {
		return false
	}
	f.value = line[start:i]
	if !bytes.HasPrefix(line[i:], sepTime) {
		return false
	}
	i += len(sepTime)
	var ms int64
	tStart := i
	for i < len(line) && line[i] >= '0' && line[i] <= '9' {
		ms = ms*10 + int64(line[i]-'0')
		i++
	}
	if i == tStart || i-tStart > 15 {
		return false
	}
	f.millis = ms
	f.ndims = 0
	if !bytes.HasPrefix(line[i:], sepDimensions) {
		return i < len(line) && (line[i] == ',' || line[i] == '}')
	}
	i += len(sepDimensions)
	if i < len(line) && line[i] == '}' {
		return true
	}
	for {
		var k, v []byte
		if i >= len(line) || line[i] != '"' || f.ndims == maxDims {
			return false
		}
		if k, i, ok = plainString(line, i+1); !ok {
			return false
		}
		if i+1 >= len(line) || line[i] != ':' || line[i+1] != '"' {
			return false
		}
		if v, i, ok = plainString(line, i+2); !ok {
			return false
		}
		f.dimK[f.ndims], f.dimV[f.ndims] = k, v
		f.ndims++
		if i >= len(line) {
			return false
		}
		switch line[i] {
		case ',':
			i++
		case '}':
			return true
		default:
			return false
		}
	}
}

// plainString returns the string starting at line[i] (just after its
// opening quote) and the index after its closing quote; false when it has
// escapes or does not end.
func plainString(line []byte, i int) ([]byte, int, bool) {
	j := bytes.IndexByte(line[i:], '"')
	if j < 0 {
		return nil, i, false
	}
	s := line[i : i+j]
	if bytes.IndexByte(s, '\\') >= 0 {
		return nil, i, false
	}
	return s, i + j + 1, true
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
