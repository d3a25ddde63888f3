package metering

import (
	"math"
	"math/big"
	"math/bits"
	"strings"
)

// nanosPerUnit is the ledger's resolution: quantities are kept as integer
// billionths of a unit, so decimal meter values such as 0.1 add up exactly
// (ten of them are one unit, not 0.9999999999999999).
const nanosPerUnit = 1_000_000_000

// maxQuantity is the largest UsageQuantity AWS accepts in one call.
const maxQuantity = math.MaxInt32

// u128 is an unsigned 128-bit count of nanos. A segment's raw meter values
// are summed in it so that even byte counts in the terabytes cannot
// overflow before the dimension's factor scales them down.
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

// pow10 holds 10^0..10^9 for scaling fractional digits to nanos.
var pow10 = [...]uint64{1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9}

// parseNanos converts a JSON number token (a meterValue) to nanos. Digits
// past the ninth decimal are dropped (the ledger's resolution). The common
// forms, "123" and "123.456", are parsed without allocating; exponents and
// very long numbers take an exact math/big path. ok is false for anything
// that is not a non-negative JSON number.
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

// parseNanosSlow handles exponents, huge integers and leading zeros with
// exact rational arithmetic; it is off the hot path.
func parseNanosSlow(s []byte) (u128, bool) {
	if !isJSONNumber(s) || s[0] == '-' {
		return u128{}, false
	}
	r, ok := new(big.Rat).SetString(string(s))
	if !ok {
		return u128{}, false
	}
	r.Mul(r, big.NewRat(nanosPerUnit, 1))
	return u128FromBig(new(big.Int).Quo(r.Num(), r.Denom())), true
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

// u128FromBig converts a non-negative big.Int, saturating at 2^128-1.
func u128FromBig(n *big.Int) u128 {
	if n.Sign() <= 0 {
		return u128{}
	}
	if n.BitLen() > 128 {
		return u128{hi: math.MaxUint64, lo: math.MaxUint64}
	}
	lo := new(big.Int).And(n, new(big.Int).SetUint64(math.MaxUint64)).Uint64()
	hi := new(big.Int).Rsh(n, 64).Uint64()
	return u128{hi: hi, lo: lo}
}

// factor is a dimension's multiplier as an exact rational, so "0.001"
// scales by exactly 1/1000.
type factor struct {
	one bool
	r   *big.Rat
}

// parseFactor turns the text after '*' in a metering.dimensions value into
// an exact rational; f is the float ParseDimension already validated,
// used when the text is not a plain decimal.
func parseFactor(spec string, f float64) factor {
	_, text, ok := strings.Cut(spec, "*")
	if !ok || f == 1 {
		return factor{one: true}
	}
	r, ok := new(big.Rat).SetString(strings.TrimSpace(text))
	if !ok || r.Sign() <= 0 {
		r = new(big.Rat).SetFloat64(f)
	}
	if r.Cmp(big.NewRat(1, 1)) == 0 {
		return factor{one: true}
	}
	return factor{r: r}
}

// apply scales raw nanos by the factor, rounding down to whole nanos, and
// saturates at math.MaxInt64 nanos (about 9.2e9 units).
func (f factor) apply(raw u128) int64 {
	if f.one {
		if raw.hi != 0 || raw.lo > math.MaxInt64 {
			return math.MaxInt64
		}
		return int64(raw.lo)
	}
	n := raw.big()
	n.Mul(n, f.r.Num())
	n.Quo(n, f.r.Denom())
	if !n.IsInt64() {
		return math.MaxInt64
	}
	return n.Int64()
}

// addSat adds two non-negative nano amounts, saturating at math.MaxInt64.
func addSat(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}
