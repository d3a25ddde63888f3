package record

import (
	"math"
	"math/big"
	"math/bits"
)

// NanosPerUnit is the resolution of summed meter values: integer
// billionths of a unit, so decimal values such as 0.1 add up exactly (ten
// of them are one unit, not 0.9999999999999999).
const NanosPerUnit = 1_000_000_000

// Nanos is an unsigned 128-bit count of billionths of a unit: meter
// values are summed in it (metering's ledger, export's aggregation) so
// that decimal values add up exactly and even byte counts in the
// terabytes cannot overflow. Sums saturate instead of wrapping.
type Nanos struct{ Hi, Lo uint64 }

// Add adds b to a, saturating at 2^128-1.
func (a *Nanos) Add(b Nanos) {
	var c uint64
	a.Lo, c = bits.Add64(a.Lo, b.Lo, 0)
	a.Hi, c = bits.Add64(a.Hi, b.Hi, c)
	if c != 0 {
		a.Hi, a.Lo = math.MaxUint64, math.MaxUint64
	}
}

// Big returns a as a big.Int.
func (a Nanos) Big() *big.Int {
	b := new(big.Int).SetUint64(a.Hi)
	b.Lsh(b, 64)
	return b.Or(b, new(big.Int).SetUint64(a.Lo))
}

// pow10 holds 10^0..10^9 for scaling fractional digits to nanos.
var pow10 = [...]uint64{1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9}

// ParseNanos converts a JSON number token (a meterValue) to nanos. Digits
// past the ninth decimal are dropped (the ledger's resolution). The common
// forms, "123" and "123.456", are parsed without allocating; exponents and
// very long numbers take an exact math/big path. ok is false for anything
// that is not a non-negative JSON number.
func ParseNanos(s []byte) (Nanos, bool) {
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
	hi, lo := bits.Mul64(intPart, NanosPerUnit)
	var c uint64
	lo, c = bits.Add64(lo, frac, 0)
	return Nanos{Hi: hi + c, Lo: lo}, true
}

// parseNanosSlow handles exponents, huge integers and leading zeros with
// exact rational arithmetic; it is off the hot path.
func parseNanosSlow(s []byte) (Nanos, bool) {
	if !isJSONNumber(s) || s[0] == '-' {
		return Nanos{}, false
	}
	r, ok := new(big.Rat).SetString(string(s))
	if !ok {
		return Nanos{}, false
	}
	r.Mul(r, big.NewRat(NanosPerUnit, 1))
	return NanosFromBig(new(big.Int).Quo(r.Num(), r.Denom())), true
}

// isJSONNumber reports whether s is exactly one JSON number token.
func isJSONNumber(s []byte) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	digits := func() int {
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i - start
	}
	if digits() == 0 {
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}

// NanosFromBig converts a non-negative big.Int, saturating at 2^128-1.
func NanosFromBig(n *big.Int) Nanos {
	if n.Sign() <= 0 {
		return Nanos{}
	}
	if n.BitLen() > 128 {
		return Nanos{Hi: math.MaxUint64, Lo: math.MaxUint64}
	}
	lo := new(big.Int).And(n, new(big.Int).SetUint64(math.MaxUint64)).Uint64()
	hi := new(big.Int).Rsh(n, 64).Uint64()
	return Nanos{Hi: hi, Lo: lo}
}
