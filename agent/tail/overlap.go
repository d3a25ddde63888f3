package tail

import (
	"fmt"
	"path/filepath"
	"unicode/utf8"
)

// Overlap names two globs of different inputs that some path matches
// both: a file at such a path is read once, by the first input.
type Overlap struct {
	First, Second string // "<input name> <glob>"
}

// Overlaps returns every pair of globs of different inputs that can match
// the same path (exclusions are not considered, so a pair may be kept
// apart by them). Invalid globs are skipped: New reports them.
func Overlaps(inputs []Input) []Overlap {
	var out []Overlap
	for i, a := range inputs {
		for _, b := range inputs[i+1:] {
			for _, pa := range a.Paths {
				for _, pb := range b.Paths {
					if GlobsOverlap(pa, pb) {
						out = append(out, Overlap{First: fmt.Sprintf("%s %q", a.Name, pa), Second: fmt.Sprintf("%s %q", b.Name, pb)})
					}
				}
			}
		}
	}
	return out
}

// GlobsOverlap reports whether some path matches both filepath.Match
// patterns a and b. It walks the product of the two patterns as automata:
// '*' takes any run of non-separator characters, '?' one, a class one of
// its members.
func GlobsOverlap(a, b string) bool {
	ta, ok1 := globTokens(a)
	tb, ok2 := globTokens(b)
	if !ok1 || !ok2 {
		return false
	}
	type state struct{ i, j int }
	seen := map[state]bool{}
	var walk func(i, j int) bool
	walk = func(i, j int) bool {
		if seen[state{i, j}] {
			return false
		}
		seen[state{i, j}] = true
		if i == len(ta) && j == len(tb) {
			return true
		}
		if i < len(ta) && ta[i].star && walk(i+1, j) {
			return true
		}
		if j < len(tb) && tb[j].star && walk(i, j+1) {
			return true
		}
		if i == len(ta) || j == len(tb) || !ta[i].meets(tb[j]) {
			return false
		}
		ni, nj := i+1, j+1
		if ta[i].star {
			ni = i
		}
		if tb[j].star {
			nj = j
		}
		return walk(ni, nj)
	}
	return walk(0, 0)
}

// globToken is one element of a pattern: a literal, '?', '*' or a class.
type globToken struct {
	lit    rune
	isLit  bool
	star   bool
	ranges [][2]rune // a class, or '?' and '*' (every rune but the separator)
	negate bool
}

func (t globToken) has(c rune) bool {
	if t.isLit {
		return c == t.lit
	}
	if c == filepath.Separator {
		return false
	}
	in := false
	for _, r := range t.ranges {
		if r[0] <= c && c <= r[1] {
			in = true
			break
		}
	}
	return in != t.negate
}

// meets reports whether one character can match both t and u.
func (t globToken) meets(u globToken) bool {
	if t.isLit {
		return u.has(t.lit)
	}
	if u.isLit {
		return t.has(u.lit)
	}
	// Both are sets of ranges: a common member, if any, is at or next to
	// one of their bounds, or among the first runes.
	var cands []rune
	for _, r := range append(append([][2]rune(nil), t.ranges...), u.ranges...) {
		cands = append(cands, r[0], r[1], r[0]-1, r[1]+1)
	}
	for c := rune(0); c < 0x300; c++ {
		cands = append(cands, c)
	}
	for _, c := range cands {
		if c >= 0 && c <= utf8.MaxRune && t.has(c) && u.has(c) {
			return true
		}
	}
	return false
}

var anyRune = [][2]rune{{0, utf8.MaxRune}}

// globTokens splits a filepath.Match pattern; ok is false if it is
// malformed.
func globTokens(p string) ([]globToken, bool) {
	if _, err := filepath.Match(p, ""); err != nil {
		return nil, false
	}
	var out []globToken
	for i := 0; i < len(p); {
		c, n := utf8.DecodeRuneInString(p[i:])
		switch c {
		case '*':
			i++
			if len(out) > 0 && out[len(out)-1].star {
				continue
			}
			out = append(out, globToken{star: true, ranges: anyRune})
		case '?':
			i++
			out = append(out, globToken{ranges: anyRune})
		case '[':
			t, next, ok := globClass(p, i+1)
			if !ok {
				return nil, false
			}
			out = append(out, t)
			i = next
		case '\\':
			if filepath.Separator != '\\' && i+1 < len(p) {
				c, n = utf8.DecodeRuneInString(p[i+1:])
				i++
			}
			i += n
			out = append(out, globToken{lit: c, isLit: true})
		default:
			i += n
			out = append(out, globToken{lit: c, isLit: true})
		}
	}
	return out, true
}

// globClass parses a class whose body starts at p[i] (after '['); it
// returns the token and the index after ']'.
func globClass(p string, i int) (globToken, int, bool) {
	var t globToken
	if i < len(p) && p[i] == '^' {
		t.negate = true
		i++
	}
	char := func() (rune, bool) {
		if i < len(p) && p[i] == '\\' && filepath.Separator != '\\' {
			i++
		}
		if i >= len(p) {
			return 0, false
		}
		c, n := utf8.DecodeRuneInString(p[i:])
		i += n
		return c, true
	}
	for first := true; ; first = false {
		if i < len(p) && p[i] == ']' && !first {
			return t, i + 1, true
		}
		lo, ok := char()
		if !ok {
			return t, i, false
		}
		hi := lo
		if i+1 < len(p) && p[i] == '-' && p[i+1] != ']' {
			i++
			if hi, ok = char(); !ok {
				return t, i, false
			}
		}
		t.ranges = append(t.ranges, [2]rune{lo, hi})
	}
}
