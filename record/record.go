package record

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tidwall/gjson"
	"github.com/zeebo/xxh3"
)

// Field names of an Amberflo meter record.
const (
	FieldCustomerID = "customerId"
	FieldMeterAPI   = "meterApiName"
	FieldValue      = "meterValue"
	FieldTime       = "meterTimeInMillis"
	FieldDimensions = "dimensions"
	FieldUniqueID   = "uniqueId"
)

// Formats accepted by records.format.
const (
	FormatMeter = "meter"
	FormatJSON  = "json"
)

// DefaultMaxLineSize bounds one input line unless configured.
const DefaultMaxLineSize = 1 << 20

// Limits on string fields, so one bad producer cannot bloat every object.
const (
	maxIDLen        = 1024
	maxDimensions   = 64
	maxDimensionLen = 1024
)

// minTime and maxTime bound meterTimeInMillis: after 2000-01-01 and before
// 2100-01-01, which catches seconds passed as milliseconds and the reverse.
const (
	minTime = 946684800000
	maxTime = 4102444800000
)

// ErrInvalid is wrapped by every validation error, so callers can tell bad
// input (dead letter it) from other failures.
var ErrInvalid = errors.New("invalid record")

// Error says why a line is not a valid record. Field is the record field at
// fault ("" for the line as a whole).
type Error struct {
	Field  string
	Reason string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *Error) Unwrap() error { return ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &Error{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Origin identifies where a line came from (its input and its position
// in it); it makes the derived uniqueId deterministic. It is not a
// checkpoint's key (buffer.Checkpoint.Key), though inputs often use the
// same string for both.
type Origin struct {
	// ID is a stable identity of the input (a file fingerprint, "stdin", a
	// Fluent Bit tag plus event time).
	ID string
	// Offset is the line's position in the input (byte offset or index).
	Offset int64
	// TimeMillis, if non-zero, is used when the record has no time of its own
	// (the Fluent Bit event time).
	TimeMillis int64
}

// Options configure a Parser.
type Options struct {
	Format      string            // meter (default) | json
	Fields      map[string]string // json: target field -> JSON path or quoted constant
	MaxLineSize int               // default DefaultMaxLineSize
}

// Parser turns lines into canonical records. It keeps scratch space, so use
// one Parser per goroutine.
type Parser struct {
	format  string
	maxLine int
	fields  mapping
	scratch []byte
	fast    fastFields
	located Located
}

type fieldSource struct {
	path     string
	constant string
	isConst  bool
}

type dimensionSource struct {
	name string
	src  fieldSource
}

// mapping is the compiled records.fields.
type mapping struct {
	customerID fieldSource
	meterAPI   fieldSource
	value      fieldSource
	time       fieldSource
	uniqueID   fieldSource
	dimensions fieldSource // path to an object of string values
	dimList    []dimensionSource
}

// NewParser validates opts and compiles the field mapping.
func NewParser(opts Options) (*Parser, error) {
	p := &Parser{format: opts.Format, maxLine: opts.MaxLineSize}
	if p.format == "" {
		p.format = FormatMeter
	}
	if p.maxLine <= 0 {
		p.maxLine = DefaultMaxLineSize
	}
	switch p.format {
	case FormatMeter:
		if len(opts.Fields) > 0 {
			return nil, fmt.Errorf("records.fields: only used with records.format json")
		}
	case FormatJSON:
		m, err := compileMapping(opts.Fields)
		if err != nil {
			return nil, err
		}
		p.fields = m
	default:
		return nil, fmt.Errorf("records.format: %q not supported; use meter or json", opts.Format)
	}
	return p, nil
}

// CompileFields checks a records.fields mapping and returns every problem,
// for config validation.
func CompileFields(fields map[string]string) error {
	_, err := compileMapping(fields)
	return err
}

func compileMapping(fields map[string]string) (mapping, error) {
	m := mapping{
		customerID: fieldSource{path: FieldCustomerID},
		meterAPI:   fieldSource{path: FieldMeterAPI},
		value:      fieldSource{path: FieldValue},
		time:       fieldSource{path: FieldTime},
		uniqueID:   fieldSource{path: FieldUniqueID},
		dimensions: fieldSource{path: FieldDimensions},
	}
	var errs []error
	for target, spec := range fields {
		src, err := compileSource(spec)
		if err != nil {
			errs = append(errs, fmt.Errorf("records.fields.%s: %w", target, err))
			continue
		}
		switch {
		case target == FieldCustomerID:
			m.customerID = src
		case target == FieldMeterAPI:
			m.meterAPI = src
		case target == FieldValue:
			m.value = src
		case target == FieldTime:
			m.time = src
		case target == FieldUniqueID:
			m.uniqueID = src
		case target == FieldDimensions:
			if src.isConst {
				errs = append(errs, fmt.Errorf("records.fields.dimensions: must be a JSON path to an object, not a constant"))
			}
			m.dimensions = src
		case strings.HasPrefix(target, FieldDimensions+"."):
			name := strings.TrimPrefix(target, FieldDimensions+".")
			if name == "" || !utf8.ValidString(name) {
				errs = append(errs, fmt.Errorf("records.fields.%s: empty or invalid dimension name", target))
				continue
			}
			m.dimList = append(m.dimList, dimensionSource{name: name, src: src})
		default:
			errs = append(errs, fmt.Errorf("records.fields.%s: unknown target; use customerId, meterApiName, meterValue, meterTimeInMillis, uniqueId, dimensions or dimensions.<name>", target))
		}
	}
	sortDimensionSources(m.dimList)
	return m, errors.Join(errs...)
}

func sortDimensionSources(d []dimensionSource) {
	for i := 1; i < len(d); i++ {
		for j := i; j > 0 && d[j].name < d[j-1].name; j-- {
			d[j], d[j-1] = d[j-1], d[j]
		}
	}
}

// compileSource reads one records.fields value: a quoted string ("..." or
// '...') is a constant, anything else a gjson path.
func compileSource(spec string) (fieldSource, error) {
	s := strings.TrimSpace(spec)
	if s == "" {
		return fieldSource{}, errors.New("empty; give a JSON path or a quoted constant")
	}
	if len(s) >= 2 && (s[0] == '"' && s[len(s)-1] == '"' || s[0] == '\'' && s[len(s)-1] == '\'') {
		return fieldSource{constant: s[1 : len(s)-1], isConst: true}, nil
	}
	return fieldSource{path: s}, nil
}

// Parse validates line and appends its canonical form to dst. It returns the
// extended dst and the record's time in Unix milliseconds. On error dst is
// returned unchanged and the error wraps ErrInvalid.
func (p *Parser) Parse(dst, line []byte, src Origin) ([]byte, int64, error) {
	p.located.line = nil
	if len(line) > p.maxLine {
		return dst, 0, invalid("", "line is %d bytes, over the %d-byte limit (records.max_line_size)", len(line), p.maxLine)
	}
	line = trimSpace(line)
	if len(line) == 0 {
		return dst, 0, invalid("", "empty line")
	}
	if line[0] != '{' {
		return dst, 0, invalid("", "not a JSON object")
	}
	if p.format == FormatMeter {
		if out, ts, ok := p.fastMeter(dst, line, src); ok {
			p.located.line = line
			return out, ts, nil
		}
	}
	if !gjson.ValidBytes(line) {
		return dst, 0, invalid("", "malformed JSON")
	}
	if p.format == FormatJSON {
		return p.parseMapped(dst, line, src)
	}
	return p.parseMeter(dst, line, src)
}

// parseMeter handles lines that already are meter records: strict types.
func (p *Parser) parseMeter(dst, line []byte, src Origin) ([]byte, int64, error) {
	var res [6]gjson.Result
	getMany(line, &res)
	cust, api, val, ts, dims, uid := res[0], res[1], res[2], res[3], res[4], res[5]

	if err := checkID(FieldCustomerID, cust); err != nil {
		return dst, 0, err
	}
	if err := checkID(FieldMeterAPI, api); err != nil {
		return dst, 0, err
	}
	if err := checkValue(val); err != nil {
		return dst, 0, err
	}
	var millis int64
	switch {
	case ts.Exists():
		m, err := strictMillis(ts)
		if err != nil {
			return dst, 0, err
		}
		millis = m
	case src.TimeMillis > 0:
		millis = src.TimeMillis
	default:
		return dst, 0, invalid(FieldTime, "missing")
	}
	if uid.Exists() {
		if err := checkID(FieldUniqueID, uid); err != nil {
			return dst, 0, err
		}
	}

	out := append(dst, `{"customerId":`...)
	out = append(out, cust.Raw...)
	out = append(out, `,"meterApiName":`...)
	out = append(out, api.Raw...)
	out = append(out, `,"meterValue":`...)
	out = append(out, val.Raw...)
	out = append(out, `,"meterTimeInMillis":`...)
	out = strconv.AppendInt(out, millis, 10)
	if dims.Exists() {
		var err error
		if out, err = appendDimensions(out, dims); err != nil {
			return dst, 0, err
		}
	}
	out = append(out, `,"uniqueId":`...)
	if uid.Exists() {
		out = append(out, uid.Raw...)
	} else {
		out = p.appendDerivedID(out, line, src)
	}
	out = append(out, '}')
	return out, millis, nil
}

// getMany looks up the six record fields in one pass over the object.
func getMany(line []byte, res *[6]gjson.Result) {
	found := 0
	gjson.Parse(unsafeString(line)).ForEach(func(key, value gjson.Result) bool {
		var i int
		switch key.Str {
		case FieldCustomerID:
			i = 0
		case FieldMeterAPI:
			i = 1
		case FieldValue:
			i = 2
		case FieldTime:
			i = 3
		case FieldDimensions:
			i = 4
		case FieldUniqueID:
			i = 5
		default:
			return true
		}
		if !res[i].Exists() {
			res[i] = value
			found++
		}
		return found < len(res)
	})
}

func checkID(field string, r gjson.Result) error {
	if !r.Exists() {
		return invalid(field, "missing")
	}
	if r.Type != gjson.String {
		return invalid(field, "must be a string, got %s", typeName(r))
	}
	if r.Str == "" {
		return invalid(field, "must not be empty")
	}
	if len(r.Str) > maxIDLen {
		return invalid(field, "longer than %d bytes", maxIDLen)
	}
	return nil
}

func checkValue(r gjson.Result) error {
	if !r.Exists() {
		return invalid(FieldValue, "missing")
	}
	if r.Type != gjson.Number {
		return invalid(FieldValue, "must be a number, got %s", typeName(r))
	}
	if math.IsInf(r.Num, 0) || math.IsNaN(r.Num) {
		return invalid(FieldValue, "not a finite number: %s", r.Raw)
	}
	if r.Num < 0 {
		return invalid(FieldValue, "must not be negative: %s", r.Raw)
	}
	return nil
}

// strictMillis accepts only an integral JSON number within the sane range.
func strictMillis(r gjson.Result) (int64, error) {
	if r.Type != gjson.Number {
		return 0, invalid(FieldTime, "must be an integer (Unix milliseconds), got %s", typeName(r))
	}
	v, ok := integral(r)
	if !ok {
		return 0, invalid(FieldTime, "must be an integer (Unix milliseconds), got %s", r.Raw)
	}
	return checkMillis(v)
}

func checkMillis(v int64) (int64, error) {
	if v <= 0 {
		return 0, invalid(FieldTime, "must be a positive integer, got %d", v)
	}
	if v < minTime || v >= maxTime {
		return 0, invalid(FieldTime, "%d is outside 2000-01-01..2100-01-01 (Unix milliseconds expected)", v)
	}
	return v, nil
}

// integral returns r as an int64 when it is a whole number that float64
// represents exactly.
func integral(r gjson.Result) (int64, bool) {
	if v, ok := parseDigits(r.Raw); ok {
		return v, true
	}
	f := r.Num
	if math.IsInf(f, 0) || math.IsNaN(f) || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, false
	}
	return int64(f), true
}

// parseDigits parses an optionally signed run of ASCII digits without
// allocating.
func parseDigits(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	neg := false
	if s[0] == '-' {
		neg = true
		s = s[1:]
		if s == "" {
			return 0, false
		}
	}
	var v int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	if neg {
		v = -v
	}
	return v, true
}

func checkDimensions(r gjson.Result) error {
	if !r.IsObject() {
		return invalid(FieldDimensions, "must be an object of strings, got %s", typeName(r))
	}
	var err error
	n := 0
	r.ForEach(func(k, v gjson.Result) bool {
		n++
		err = checkDimension(n, k, v)
		return err == nil
	})
	return err
}

// checkDimension validates the n-th (1-based) entry of a dimensions object.
func checkDimension(n int, k, v gjson.Result) error {
	switch {
	case n > maxDimensions:
		return invalid(FieldDimensions, "more than %d entries", maxDimensions)
	case k.Str == "":
		return invalid(FieldDimensions, "empty key")
	case v.Type != gjson.String:
		return invalid(FieldDimensions+"."+k.Str, "must be a string, got %s", typeName(v))
	case len(v.Str) > maxDimensionLen || len(k.Str) > maxDimensionLen:
		return invalid(FieldDimensions+"."+k.Str, "longer than %d bytes", maxDimensionLen)
	}
	return nil
}

// appendDimensions validates an object of strings and re-emits it without
// whitespace (as ,"dimensions":{...}), reusing the raw, already escaped key
// and value tokens. An empty object writes nothing. One pass does both so
// the hot path walks the object once.
func appendDimensions(dst []byte, r gjson.Result) ([]byte, error) {
	if !r.IsObject() {
		return dst, invalid(FieldDimensions, "must be an object of strings, got %s", typeName(r))
	}
	start := len(dst)
	dst = append(dst, `,"dimensions":{`...)
	var err error
	n := 0
	r.ForEach(func(k, v gjson.Result) bool {
		n++
		if err = checkDimension(n, k, v); err != nil {
			return false
		}
		if n > 1 {
			dst = append(dst, ',')
		}
		dst = append(dst, k.Raw...)
		dst = append(dst, ':')
		dst = append(dst, v.Raw...)
		return true
	})
	if err != nil || n == 0 {
		return dst[:start], err
	}
	return append(dst, '}'), nil
}

func typeName(r gjson.Result) string {
	switch r.Type {
	case gjson.Null:
		return "null"
	case gjson.False, gjson.True:
		return "a boolean"
	case gjson.Number:
		return "a number"
	case gjson.String:
		return "a string"
	}
	if r.IsArray() {
		return "an array"
	}
	return "an object"
}

// appendDerivedID appends a quoted UUID-shaped id derived from the source
// identity, the offset and the line bytes. Hashing the content as well as
// the position means a copytruncated file re-read from offset 0 never
// collides with the lines it held before.
func (p *Parser) appendDerivedID(dst, line []byte, src Origin) []byte {
	s := p.scratch[:0]
	s = append(s, src.ID...)
	s = append(s, 0)
	s = binary.LittleEndian.AppendUint64(s, uint64(src.Offset))
	s = append(s, line...)
	p.scratch = s
	h := xxh3.Hash128(s)
	var b [16]byte
	binary.BigEndian.PutUint64(b[0:8], h.Hi)
	binary.BigEndian.PutUint64(b[8:16], h.Lo)
	// RFC 9562 version 8 (custom) and the RFC variant, so the id is a valid
	// UUID for consumers that check.
	b[6] = b[6]&0x0f | 0x80
	b[8] = b[8]&0x3f | 0x80
	dst = append(dst, '"')
	dst = appendUUID(dst, b)
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"

func appendUUID(dst []byte, b [16]byte) []byte {
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst = append(dst, '-')
		}
		dst = append(dst, hexDigits[c>>4], hexDigits[c&0x0f])
	}
	return dst
}

// Blank reports whether line holds only whitespace: not a record and not
// an error, so sources skip it.
func Blank(line []byte) bool { return len(trimSpace(line)) == 0 }

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r' || b[0] == '\n') {
		b = b[1:]
	}
	for len(b) > 0 {
		c := b[len(b)-1]
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			break
		}
		b = b[:len(b)-1]
	}
	return b
}

// parseTimeValue reads a mapped time: epoch seconds or milliseconds
// (numbers or numeric strings; values below 1e11 are seconds) or RFC 3339.
func parseTimeValue(r gjson.Result) (int64, error) {
	switch r.Type {
	case gjson.Number:
		return epochToMillis(r.Num)
	case gjson.String:
		if f, err := strconv.ParseFloat(r.Str, 64); err == nil {
			return epochToMillis(f)
		}
		t, err := time.Parse(time.RFC3339Nano, r.Str)
		if err != nil {
			return 0, invalid(FieldTime, "%q is neither epoch seconds/milliseconds nor RFC 3339", r.Str)
		}
		return checkMillis(t.UnixMilli())
	}
	return 0, invalid(FieldTime, "must be a number or a timestamp string, got %s", typeName(r))
}

func epochToMillis(f float64) (int64, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, invalid(FieldTime, "not a finite number")
	}
	if math.Abs(f) < 1e11 {
		f *= 1000
	}
	return checkMillis(int64(math.Round(f)))
}
