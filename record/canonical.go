package record

import "bytes"

// The canonical layout of a meter record, as Parser writes it (fastMeter
// and the slow path both):
//
//	{"customerId":"..","meterApiName":"..","meterValue":N,"meterTimeInMillis":N,"dimensions":{..},"uniqueId":".."}
//
// dimensions is left out when there are none. ScanCanonical reads this
// layout back with a few prefix comparisons, for consumers that must read
// stored lines fast (metering counts every record of every segment).
var (
	canonCustomer   = []byte(`{"customerId":"`)
	canonAPI        = []byte(`,"meterApiName":"`)
	canonValue      = []byte(`,"meterValue":`)
	canonTime       = []byte(`,"meterTimeInMillis":`)
	canonDimensions = []byte(`,"dimensions":{`)
)

// Canonical is a meter record line read by ScanCanonical: its fields are
// slices of the line (no unescaping: ScanCanonical refuses escapes).
type Canonical struct {
	// CustomerID is nil unless ScanCanonical was asked for it.
	CustomerID   []byte
	MeterAPIName []byte
	// MeterValue is the raw number token; the caller parses it.
	MeterValue []byte
	// MeterTime is meterTimeInMillis's digits (the buffer frame carries
	// the time too, so most readers need not parse it).
	MeterTime []byte
	line      []byte
	// dims is where the next dimension starts in line, or -1 when there
	// is none left.
	dims int
}

// ScanCanonical reads line in the canonical layout into c, with the
// customer id when customer is set (skipping it is faster). false means
// the line is not in that layout as far as a prefix scan can tell
// (escaped strings, another field order, whitespace): read it with a JSON
// parser instead. The dimensions are read with NextDimension; the line is
// in the layout only if they all read.
func ScanCanonical(line []byte, customer bool, c *Canonical) bool {
	c.line, c.dims = line, -1
	if !bytes.HasPrefix(line, canonCustomer) {
		return false
	}
	i := len(canonCustomer)
	var ok bool
	if customer {
		if c.CustomerID, i, ok = plainString(line, i); !ok {
			return false
		}
	} else {
		// The customer is not wanted: find its end with one vectorised
		// search. A quote after a backslash may be escaped; a JSON parser
		// settles that.
		c.CustomerID = nil
		j := bytes.IndexByte(line[i:], '"')
		if j < 0 || (j > 0 && line[i+j-1] == '\\') {
			return false
		}
		i += j + 1
	}
	if !bytes.HasPrefix(line[i:], canonAPI) {
		return false
	}
	if c.MeterAPIName, i, ok = plainString(line, i+len(canonAPI)); !ok {
		return false
	}
	if !bytes.HasPrefix(line[i:], canonValue) {
		return false
	}
	i += len(canonValue)
	start := i
	for i < len(line) && line[i] != ',' {
		i++
	}
	if i == start {
		return false
	}
	c.MeterValue = line[start:i]
	if !bytes.HasPrefix(line[i:], canonTime) {
		return false
	}
	i += len(canonTime)
	start = i
	for i < len(line) && line[i] >= '0' && line[i] <= '9' {
		i++
	}
	c.MeterTime = line[start:i]
	if !bytes.HasPrefix(line[i:], canonDimensions) {
		return i < len(line) && (line[i] == ',' || line[i] == '}')
	}
	i += len(canonDimensions)
	if i < len(line) && line[i] == '}' {
		return true
	}
	c.dims = i
	return true
}

// NextDimension returns the next dimension of the scanned line (found),
// or found false once there are none left. ok is false when the
// dimensions are not in the canonical layout: the line must then be read
// with a JSON parser, whatever NextDimension returned before.
func (c *Canonical) NextDimension() (key, value []byte, found, ok bool) {
	line, i := c.line, c.dims
	if i < 0 {
		return nil, nil, false, true
	}
	c.dims = -1
	if i >= len(line) || line[i] != '"' {
		return nil, nil, false, false
	}
	if key, i, ok = plainString(line, i+1); !ok {
		return nil, nil, false, false
	}
	if i+1 >= len(line) || line[i] != ':' || line[i+1] != '"' {
		return nil, nil, false, false
	}
	if value, i, ok = plainString(line, i+2); !ok {
		return nil, nil, false, false
	}
	if i >= len(line) {
		return nil, nil, false, false
	}
	switch line[i] {
	case ',':
		c.dims = i + 1
		return key, value, true, true
	case '}':
		return key, value, true, true
	}
	return nil, nil, false, false
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
