package metering

import (
	"math"
	"math/big"
	"strings"

	"github.com/metership/metership/record"
)

// nanosPerUnit is the ledger's resolution (record.NanosPerUnit).
const nanosPerUnit = record.NanosPerUnit

// maxQuantity is the largest UsageQuantity AWS accepts in one call.
const maxQuantity = math.MaxInt32

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
func (f factor) apply(raw record.Nanos) int64 {
	if f.one {
		if raw.Hi != 0 || raw.Lo > math.MaxInt64 {
			return math.MaxInt64
		}
		return int64(raw.Lo)
	}
	n := raw.Big()
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
