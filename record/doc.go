// Package record parses, maps and validates meter records and writes them
// back as compact canonical NDJSON in Amberflo's field order:
//
//	{"customerId","meterApiName","meterValue","meterTimeInMillis","dimensions","uniqueId"}
//
// Two input formats exist. "meter" lines already are meter records and are
// validated strictly. "json" lines are arbitrary JSON logs whose fields are
// mapped onto the record with records.fields (target field -> JSON path or a
// quoted constant), with looser typing since log fields rarely match exactly.
//
// Every record leaves with a uniqueId. An incoming uniqueId is kept; else one
// is derived from the source identity, the offset and the line's bytes, so a
// replay of the same input after a crash carries the same ids and downstream
// dedup works, while two different lines never share one.
//
// The hot path (Parser.Parse on a valid line) allocates nothing: it reads the
// line with gjson and appends the output into a caller-owned slice.
package record
