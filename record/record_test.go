package record

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

func mustParser(t *testing.T, opts Options) *Parser {
	t.Helper()
	p, err := NewParser(opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseMeterCanonical(t *testing.T) {
	p := mustParser(t, Options{})
	src := Origin{ID: "file:1", Offset: 42}
	tests := []struct {
		name, in, want string
	}{
		{
			name: "full record keeps uniqueId and orders fields",
			in:   `{ "uniqueId":"u-1", "dimensions": {"region" : "us-east-1", "tier":"gold"}, "meterTimeInMillis": 1654560000000, "meterValue": 1.50, "meterApiName":"api-calls", "customerId":"c1", "extra": [1,2] }`,
			want: `{"customerId":"c1","meterApiName":"api-calls","meterValue":1.50,"meterTimeInMillis":1654560000000,"dimensions":{"region":"us-east-1","tier":"gold"},"uniqueId":"u-1"}`,
		},
		{
			name: "empty dimensions are omitted",
			in:   `{"customerId":"c1","meterApiName":"m","meterValue":0,"meterTimeInMillis":1654560000000,"dimensions":{},"uniqueId":"x"}`,
			want: `{"customerId":"c1","meterApiName":"m","meterValue":0,"meterTimeInMillis":1654560000000,"uniqueId":"x"}`,
		},
		{
			name: "escaped strings stay escaped",
			in:   `{"customerId":"c\"1\u00e9","meterApiName":"m","meterValue":3,"meterTimeInMillis":1654560000000,"uniqueId":"x"}`,
			want: `{"customerId":"c\"1\u00e9","meterApiName":"m","meterValue":3,"meterTimeInMillis":1654560000000,"uniqueId":"x"}`,
		},
		{
			name: "integral float time",
			in:   `{"customerId":"c","meterApiName":"m","meterValue":3,"meterTimeInMillis":1.6545600e12,"uniqueId":"x"}`,
			want: `{"customerId":"c","meterApiName":"m","meterValue":3,"meterTimeInMillis":1654560000000,"uniqueId":"x"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, ts, err := p.Parse(nil, []byte(tt.in), src)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tt.want {
				t.Fatalf("got  %s\nwant %s", out, tt.want)
			}
			if ts != 1654560000000 {
				t.Fatalf("time %d", ts)
			}
			if !json.Valid(out) {
				t.Fatal("output not valid JSON")
			}
		})
	}
}

func TestParseMeterRejects(t *testing.T) {
	p := mustParser(t, Options{MaxLineSize: 300})
	base := map[string]any{"customerId": "c", "meterApiName": "m", "meterValue": 1, "meterTimeInMillis": 1654560000000}
	with := func(k string, v any) string {
		m := map[string]any{}
		for kk, vv := range base {
			m[kk] = vv
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	tests := []struct{ in, wantErr string }{
		{`{"customerId":"c",`, "malformed JSON"},
		{`[1,2]`, "not a JSON object"},
		{``, "empty line"},
		{`"str"`, "not a JSON object"},
		{with("customerId", nil), "customerId: missing"},
		{with("customerId", 12), "customerId: must be a string, got a number"},
		{with("customerId", ""), "customerId: must not be empty"},
		{with("meterApiName", nil), "meterApiName: missing"},
		{with("meterApiName", true), "meterApiName: must be a string, got a boolean"},
		{with("meterValue", nil), "meterValue: missing"},
		{with("meterValue", "12"), "meterValue: must be a number, got a string"},
		{with("meterValue", -1), "meterValue: must not be negative"},
		{`{"customerId":"c","meterApiName":"m","meterValue":1e999,"meterTimeInMillis":1654560000000}`, "meterValue: not a finite number"},
		{with("meterTimeInMillis", nil), "meterTimeInMillis: missing"},
		{with("meterTimeInMillis", 1654560000.5), "meterTimeInMillis: must be an integer"},
		{with("meterTimeInMillis", "1654560000000"), "meterTimeInMillis: must be an integer (Unix milliseconds), got a string"},
		{with("meterTimeInMillis", -5), "meterTimeInMillis: must be a positive integer"},
		{with("meterTimeInMillis", 1654560000), "outside 2000-01-01..2100-01-01"},
		{with("dimensions", []string{"a"}), "dimensions: must be an object of strings, got an array"},
		{with("dimensions", map[string]any{"a": 1}), "dimensions.a: must be a string, got a number"},
		{with("uniqueId", 5), "uniqueId: must be a string"},
		{with("customerId", strings.Repeat("x", 400)), "over the 300-byte limit"},
	}
	for _, tt := range tests {
		t.Run(tt.wantErr, func(t *testing.T) {
			dst := []byte("prefix")
			out, _, err := p.Parse(dst, []byte(tt.in), Origin{})
			if err == nil {
				t.Fatalf("accepted %s -> %s", tt.in, out)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %q, want it to contain %q", err, tt.wantErr)
			}
			if string(out) != "prefix" {
				t.Fatalf("dst modified on error: %q", out)
			}
		})
	}
}

func TestDerivedUniqueID(t *testing.T) {
	p := mustParser(t, Options{})
	line := []byte(`{"customerId":"c","meterApiName":"m","meterValue":1,"meterTimeInMillis":1654560000000}`)
	id := func(src Origin, l []byte) string {
		out, _, err := p.Parse(nil, l, src)
		if err != nil {
			t.Fatal(err)
		}
		var rec struct{ UniqueID string }
		if err := json.Unmarshal(out, &rec); err != nil {
			t.Fatal(err)
		}
		return rec.UniqueID
	}
	a := id(Origin{ID: "f", Offset: 0}, line)
	if a != id(Origin{ID: "f", Offset: 0}, line) {
		t.Fatal("same source+offset+line gave different ids")
	}
	if len(a) != 36 || a[14] != '8' {
		t.Fatalf("not a version-8 UUID: %s", a)
	}
	seen := map[string]bool{a: true}
	for _, other := range []string{
		id(Origin{ID: "f", Offset: 1}, line),
		id(Origin{ID: "g", Offset: 0}, line),
		id(Origin{ID: "f", Offset: 0}, []byte(`{"customerId":"c","meterApiName":"m","meterValue":2,"meterTimeInMillis":1654560000000}`)),
	} {
		if seen[other] {
			t.Fatalf("id collision: %s", other)
		}
		seen[other] = true
	}
}

func TestFallbackTime(t *testing.T) {
	p := mustParser(t, Options{})
	out, ts, err := p.Parse(nil, []byte(`{"customerId":"c","meterApiName":"m","meterValue":1,"uniqueId":"u"}`), Origin{TimeMillis: 1654560000123})
	if err != nil {
		t.Fatal(err)
	}
	if ts != 1654560000123 || !strings.Contains(string(out), `"meterTimeInMillis":1654560000123`) {
		t.Fatalf("fallback time not used: %s", out)
	}
}

func TestParseMapped(t *testing.T) {
	p := mustParser(t, Options{Format: FormatJSON, Fields: map[string]string{
		"customerId":        "tenant.id",
		"meterApiName":      `"api-calls"`,
		"meterValue":        "bytes",
		"meterTimeInMillis": "ts",
		"dimensions.region": "cloud.region",
		"dimensions.method": "req.method",
	}})
	tests := []struct{ name, in, want, wantErr string }{
		{
			name: "rfc3339 and numeric tenant",
			in:   `{"tenant":{"id":42},"bytes":512,"ts":"2022-06-07T00:00:00.250Z","cloud":{"region":"eu-west-1"},"req":{"method":"GET"},"uniqueId":"abc"}`,
			want: `{"customerId":"42","meterApiName":"api-calls","meterValue":512,"meterTimeInMillis":1654560000250,"dimensions":{"method":"GET","region":"eu-west-1"},"uniqueId":"abc"}`,
		},
		{
			name: "epoch seconds and numeric string value, optional dimension absent",
			in:   `{"tenant":{"id":"t1"},"bytes":"2.5","ts":1654560000,"cloud":{"region":"eu"},"uniqueId":"abc"}`,
			want: `{"customerId":"t1","meterApiName":"api-calls","meterValue":2.5,"meterTimeInMillis":1654560000000,"dimensions":{"region":"eu"},"uniqueId":"abc"}`,
		},
		{
			name: "epoch millis",
			in:   `{"tenant":{"id":"t1"},"bytes":1,"ts":1654560000999,"uniqueId":"abc"}`,
			want: `{"customerId":"t1","meterApiName":"api-calls","meterValue":1,"meterTimeInMillis":1654560000999,"uniqueId":"abc"}`,
		},
		{name: "missing customer", in: `{"bytes":1,"ts":1654560000}`, wantErr: `customerId: missing (mapped from "tenant.id")`},
		{name: "bad value", in: `{"tenant":{"id":"t"},"bytes":"lots","ts":1654560000}`, wantErr: `meterValue: "lots" is not a number`},
		{name: "bad time", in: `{"tenant":{"id":"t"},"bytes":1,"ts":"yesterday"}`, wantErr: `meterTimeInMillis: "yesterday" is neither`},
		{name: "object dimension", in: `{"tenant":{"id":"t"},"bytes":1,"ts":1654560000,"cloud":{"region":{}}}`, wantErr: `dimensions.region: must be a string`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := p.Parse(nil, []byte(tt.in), Origin{ID: "s"})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tt.want {
				t.Fatalf("got  %s\nwant %s", out, tt.want)
			}
		})
	}
}

func TestNewParserErrors(t *testing.T) {
	tests := []struct {
		opts    Options
		wantErr string
	}{
		{Options{Format: "xml"}, `records.format: "xml" not supported`},
		{Options{Fields: map[string]string{"customerId": "a"}}, "records.fields: only used with records.format json"},
		{Options{Format: FormatJSON, Fields: map[string]string{"cost": "a"}}, "records.fields.cost: unknown target"},
		{Options{Format: FormatJSON, Fields: map[string]string{"customerId": " "}}, "records.fields.customerId: empty"},
		{Options{Format: FormatJSON, Fields: map[string]string{"dimensions": `"x"`}}, "records.fields.dimensions: must be a JSON path"},
	}
	for _, tt := range tests {
		_, err := NewParser(tt.opts)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%+v: err = %v, want %q", tt.opts, err, tt.wantErr)
		}
	}
}

func TestDeadLetter(t *testing.T) {
	got := AppendDeadLetter(nil, "app.log", 7, []byte("bad \"line\"\xff\n"), "malformed JSON")
	var v struct {
		Source string
		Offset int64
		Line   string
		Reason string
	}
	if err := json.Unmarshal(got, &v); err != nil {
		t.Fatalf("%s: %v", got, err)
	}
	if v.Source != "app.log" || v.Offset != 7 || v.Line != "bad \"line\"\ufffd\n" || v.Reason != "malformed JSON" {
		t.Fatalf("%+v", v)
	}
}

func TestParseAllocs(t *testing.T) {
	p := mustParser(t, Options{})
	line := []byte(`{"customerId":"customer-000123","meterApiName":"api-calls","meterValue":17,"meterTimeInMillis":1654560000000,"dimensions":{"region":"us-east-1","tier":"gold"}}`)
	dst := make([]byte, 0, 4096)
	allocs := testing.AllocsPerRun(100, func() {
		var err error
		if _, _, err = p.Parse(dst[:0], line, Origin{ID: "file", Offset: 9}); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Parse allocates %.1f times per record; the hot path must not allocate", allocs)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"customerId":"c","meterApiName":"m","meterValue":1,"meterTimeInMillis":1654560000000}`), false)
	f.Add([]byte(`{"customerId":"c","meterApiName":"m","meterValue":1.5e3,"meterTimeInMillis":1654560000000,"dimensions":{"a":"\u0000"}}`), false)
	f.Add([]byte(`{"tenant":{"id":1},"bytes":"3","ts":"2022-06-07T00:00:00Z"}`), true)
	meter := &Parser{format: FormatMeter, maxLine: DefaultMaxLineSize}
	mapped, err := NewParser(Options{Format: FormatJSON, Fields: map[string]string{"customerId": "tenant.id", "meterValue": "bytes", "meterTimeInMillis": "ts", "meterApiName": `"x"`, "dimensions.d": "d"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, line []byte, useMapped bool) {
		p := meter
		if useMapped {
			p = mapped
		}
		out, ts, err := p.Parse(nil, line, Origin{ID: "fuzz"})
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		if !json.Valid(out) {
			t.Fatalf("accepted %q but produced invalid JSON %q", line, out)
		}
		var rec map[string]any
		if err := json.Unmarshal(out, &rec); err != nil {
			t.Fatal(err)
		}
		if ts < minTime || ts >= maxTime {
			t.Fatalf("time %d out of range", ts)
		}
		// The canonical output must itself be a valid meter record that
		// re-parses to the same bytes.
		again, _, err := meter.Parse(nil, out, Origin{ID: "other"})
		if err != nil || string(again) != string(out) {
			t.Fatalf("canonical output not stable:\n%s\n%s (%v)", out, again, err)
		}
	})
}

// FuzzFastPath: whenever the fast path accepts a line, the gjson path must
// accept it too and write the very same bytes.
func FuzzFastPath(f *testing.F) {
	f.Add([]byte(`{"customerId":"c","meterApiName":"m","meterValue":1,"meterTimeInMillis":1654560000000}`))
	f.Add([]byte(`{"customerId":"c","meterApiName":"m","meterValue":1.5e3,"meterTimeInMillis":1654560000000,"dimensions":{"a":"b","c":"d"},"uniqueId":"u"}`))
	f.Add([]byte(` { "meterValue" : 0 , "x":[1,{"y":null}], "customerId":"c","meterApiName":"m","meterTimeInMillis":1654560000000, "customerId":"dup"} `))
	f.Add([]byte(`{"customerId":"c","meterApiName":"m","meterValue":-0,"meterTimeInMillis":1654560000000,"dimensions":{}}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		p := &Parser{format: FormatMeter, maxLine: DefaultMaxLineSize}
		fast, fts, ok := p.fastMeter(nil, trimSpace(line), Origin{ID: "f", Offset: 3})
		if !ok {
			return
		}
		q := &Parser{format: FormatMeter, maxLine: DefaultMaxLineSize}
		l := trimSpace(line)
		if !gjson.ValidBytes(l) {
			t.Fatalf("fast path accepted invalid JSON %q", line)
		}
		slow, sts, err := q.parseMeter(nil, l, Origin{ID: "f", Offset: 3})
		if err != nil {
			t.Fatalf("fast path accepted %q, slow path rejects: %v", line, err)
		}
		if string(fast) != string(slow) || fts != sts {
			t.Fatalf("paths disagree on %q:\nfast %s\nslow %s", line, fast, slow)
		}
	})
}

// TestAppendJSONString: every string becomes valid JSON that decodes back
// to it (invalid UTF-8 bytes become U+FFFD, one each).
func TestAppendJSONString(t *testing.T) {
	tests := map[string]string{
		"":                 `""`,
		"plain":            `"plain"`,
		`q"uote`:           `"q\"uote"`,
		`back\slash`:       `"back\\slash"`,
		"nl\n cr\r tab\t":  `"nl\n cr\r tab\t"`,
		"\x00\x01\x1f\x7f": `"\u0000\u0001\u001f\u007f"`,
		"héllo ✓ 😀":        `"héllo ✓ 😀"`,
		"bad \xff\xfe":     `"bad \ufffd\ufffd"`,
		"\xe2\x82":         `"\ufffd\ufffd"`,
		"end\xc3":          `"end\ufffd"`,
		"\u2028</script>&": "\"\u2028</script>&\"",
	}
	for in, want := range tests {
		if got := string(AppendJSONBytes([]byte("x"), []byte(in))); got != "x"+want {
			t.Errorf("%q: got %s, want x%s", in, got, want)
		}
	}
}

func FuzzAppendJSONString(f *testing.F) {
	f.Add([]byte("plain \"q\" \xff \x01 ✓"))
	f.Fuzz(func(t *testing.T, s []byte) {
		got := AppendJSONBytes(nil, s)
		if !json.Valid(got) {
			t.Fatalf("%q: invalid JSON %s", s, got)
		}
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatal(err)
		}
		if utf8.Valid(s) && back != string(s) {
			t.Fatalf("%q: decodes to %q", s, back)
		}
	})
}

// Located gives the fields the fast path copied into the canonical line,
// and nothing when the last Parse did not take it.
func TestLocated(t *testing.T) {
	p, err := NewParser(Options{})
	if err != nil {
		t.Fatal(err)
	}
	line := []byte(` {"meterValue":2.50,"customerId":"c-1","meterApiName":"api","meterTimeInMillis":1714521600000,"dimensions":{"team":"red","region":""}} `)
	out, _, err := p.Parse(nil, line, Origin{ID: "f"})
	if err != nil {
		t.Fatal(err)
	}
	l, ok := p.Located()
	if !ok {
		t.Fatal("fast path line: not located")
	}
	var dims []string
	for i := range l.Dimensions() {
		k, v := l.Dimension(i)
		dims = append(dims, string(k)+"="+string(v))
	}
	if got := fmt.Sprintf("%s|%s|%s|%v", l.CustomerID(), l.MeterAPIName(), l.MeterValue(), dims); got != "c-1|api|2.50|[team=red region=]" {
		t.Errorf("located %s", got)
	}
	// The same bytes are in the canonical line.
	for _, b := range [][]byte{l.CustomerID(), l.MeterAPIName(), l.MeterValue()} {
		if !bytes.Contains(out, b) {
			t.Errorf("canonical line %s lacks %q", out, b)
		}
	}

	for _, tc := range []struct {
		name string
		opts Options
		line string
	}{
		{"escaped string", Options{}, `{"customerId":"c\"1","meterApiName":"api","meterValue":1,"meterTimeInMillis":1714521600000}`},
		{"exponent", Options{}, `{"customerId":"c-1","meterApiName":"api","meterValue":1e2,"meterTimeInMillis":1714521600000}`},
		{"rejected", Options{}, `{"customerId":"c-1","meterApiName":"api","meterValue":"1"}`},
		{"not JSON", Options{}, `meterValue=1`},
		{"format json", Options{Format: FormatJSON, Fields: map[string]string{"customerId": "c", "meterApiName": "'api'", "meterValue": "v"}}, `{"c":"c-1","v":1}`},
	} {
		p, err := NewParser(tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := p.Parse(nil, line, Origin{ID: "f"}); err != nil && tc.opts.Format == "" {
			t.Fatal(err)
		}
		p.Parse(nil, []byte(tc.line), Origin{ID: "f", TimeMillis: 1714521600000})
		if _, ok := p.Located(); ok {
			t.Errorf("%s: located after a Parse that did not take the fast path", tc.name)
		}
	}
}
