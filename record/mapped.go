package record

import (
	"strconv"

	"github.com/tidwall/gjson"
)

// parseMapped handles records.format json: each target field comes from a
// JSON path (or a constant). Types are looser than for meter lines: ids may
// be numbers, values numeric strings, times epoch s/ms or RFC 3339.
func (p *Parser) parseMapped(dst, line []byte, src Origin) ([]byte, int64, error) {
	m := &p.fields
	out := append(dst, `{"customerId":`...)
	var err error
	if out, err = appendMappedID(out, line, FieldCustomerID, m.customerID); err != nil {
		return dst, 0, err
	}
	out = append(out, `,"meterApiName":`...)
	if out, err = appendMappedID(out, line, FieldMeterAPI, m.meterAPI); err != nil {
		return dst, 0, err
	}
	out = append(out, `,"meterValue":`...)
	if out, err = appendMappedValue(out, line, m.value); err != nil {
		return dst, 0, err
	}

	var millis int64
	tr, constant := lookup(line, m.time)
	switch {
	case constant:
		return dst, 0, invalid(FieldTime, "a constant time makes no sense; map it to a field")
	case tr.Exists() && tr.Type != gjson.Null:
		if millis, err = parseTimeValue(tr); err != nil {
			return dst, 0, err
		}
	case src.TimeMillis > 0:
		millis = src.TimeMillis
	default:
		return dst, 0, invalid(FieldTime, "missing (mapped from %q)", m.time.path)
	}
	out = append(out, `,"meterTimeInMillis":`...)
	out = strconv.AppendInt(out, millis, 10)

	if out, err = p.appendMappedDimensions(out, line); err != nil {
		return dst, 0, err
	}

	out = append(out, `,"uniqueId":`...)
	ur, isConst := lookup(line, m.uniqueID)
	switch {
	case isConst:
		return dst, 0, invalid(FieldUniqueID, "a constant uniqueId would make every record a duplicate")
	case ur.Exists() && ur.Type != gjson.Null:
		if out, err = appendIDValue(out, FieldUniqueID, ur); err != nil {
			return dst, 0, err
		}
	default:
		out = p.appendDerivedID(out, line, src)
	}
	return append(out, '}'), millis, nil
}

// lookup resolves a field source against the line. For constants it returns
// a synthetic string result and true.
func lookup(line []byte, s fieldSource) (gjson.Result, bool) {
	if s.isConst {
		return gjson.Result{Type: gjson.String, Str: s.constant}, true
	}
	return gjson.Get(unsafeString(line), s.path), false
}

func appendMappedID(dst, line []byte, field string, s fieldSource) ([]byte, error) {
	r, _ := lookup(line, s)
	if !r.Exists() || r.Type == gjson.Null {
		return dst, invalid(field, "missing (mapped from %q)", s.path)
	}
	return appendIDValue(dst, field, r)
}

// appendIDValue writes a string id; numbers are accepted and written as
// their decimal text, since log fields often carry numeric tenant ids.
func appendIDValue(dst []byte, field string, r gjson.Result) ([]byte, error) {
	switch r.Type {
	case gjson.String:
		if r.Str == "" {
			return dst, invalid(field, "must not be empty")
		}
		if len(r.Str) > maxIDLen {
			return dst, invalid(field, "longer than %d bytes", maxIDLen)
		}
		if r.Raw != "" {
			return append(dst, r.Raw...), nil
		}
		return appendJSONString(dst, r.Str), nil
	case gjson.Number:
		dst = append(dst, '"')
		dst = append(dst, r.Raw...)
		return append(dst, '"'), nil
	}
	return dst, invalid(field, "must be a string, got %s", typeName(r))
}

func appendMappedValue(dst, line []byte, s fieldSource) ([]byte, error) {
	r, _ := lookup(line, s)
	if !r.Exists() || r.Type == gjson.Null {
		return dst, invalid(FieldValue, "missing (mapped from %q)", s.path)
	}
	if r.Type == gjson.String {
		// A numeric string, or a constant such as '"1"'.
		f, err := strconv.ParseFloat(r.Str, 64)
		if err != nil {
			return dst, invalid(FieldValue, "%q is not a number", r.Str)
		}
		if err := checkValue(gjson.Result{Type: gjson.Number, Num: f, Raw: r.Str}); err != nil {
			return dst, err
		}
		return strconv.AppendFloat(dst, f, 'f', -1, 64), nil
	}
	if err := checkValue(r); err != nil {
		return dst, err
	}
	return append(dst, r.Raw...), nil
}

func (p *Parser) appendMappedDimensions(dst, line []byte) ([]byte, error) {
	m := &p.fields
	obj := gjson.Get(unsafeString(line), m.dimensions.path)
	hasObj := obj.Exists() && obj.Type != gjson.Null
	if hasObj {
		if err := checkDimensions(obj); err != nil {
			return dst, err
		}
	}
	start := len(dst)
	dst = append(dst, `,"dimensions":{`...)
	n := 0
	if hasObj {
		obj.ForEach(func(k, v gjson.Result) bool {
			if p.dimensionMapped(k.Str) {
				return true // an explicit dimensions.<name> mapping wins
			}
			if n > 0 {
				dst = append(dst, ',')
			}
			n++
			dst = append(dst, k.Raw...)
			dst = append(dst, ':')
			dst = append(dst, v.Raw...)
			return true
		})
	}
	for _, d := range m.dimList {
		r, _ := lookup(line, d.src)
		if !r.Exists() || r.Type == gjson.Null {
			continue // optional: a log line without the field has no such dimension
		}
		var val string
		switch r.Type {
		case gjson.String:
			val = r.Str
		case gjson.Number, gjson.True, gjson.False:
			val = r.Raw
		default:
			return dst[:start], invalid(FieldDimensions+"."+d.name, "must be a string, got %s", typeName(r))
		}
		if len(val) > maxDimensionLen {
			return dst[:start], invalid(FieldDimensions+"."+d.name, "longer than %d bytes", maxDimensionLen)
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		n++
		dst = appendJSONString(dst, d.name)
		dst = append(dst, ':')
		dst = appendJSONString(dst, val)
	}
	if n == 0 {
		return dst[:start], nil
	}
	if n > maxDimensions {
		return dst[:start], invalid(FieldDimensions, "more than %d entries", maxDimensions)
	}
	return append(dst, '}'), nil
}

func (p *Parser) dimensionMapped(name string) bool {
	for _, d := range p.fields.dimList {
		if d.name == name {
			return true
		}
	}
	return false
}
