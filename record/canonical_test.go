package record

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// readCanonical renders what ScanCanonical and NextDimension read, or why
// the line is not in the layout.
func readCanonical(line string, customer bool) string {
	var c Canonical
	if !ScanCanonical([]byte(line), customer, &c) {
		return "not canonical"
	}
	s := fmt.Sprintf("%s|%s|%s", c.CustomerID, c.MeterAPIName, c.MeterValue)
	for {
		k, v, found, ok := c.NextDimension()
		if !ok {
			return "not canonical"
		}
		if !found {
			return s
		}
		s += fmt.Sprintf("|%s=%s", k, v)
	}
}

func TestScanCanonical(t *testing.T) {
	const head = `{"customerId":"c","meterApiName":"m","meterValue":1.5,"meterTimeInMillis":1654560000000`
	tests := []struct {
		line     string
		customer bool
		want     string
	}{
		{head + `,"uniqueId":"u"}`, true, "c|m|1.5"},
		{head + `,"uniqueId":"u"}`, false, "|m|1.5"},
		{head + `}`, true, "c|m|1.5"},
		{head + `,"dimensions":{"a":"1","b":""},"uniqueId":"u"}`, true, "c|m|1.5|a=1|b="},
		{head + `,"dimensions":{},"uniqueId":"u"}`, true, "c|m|1.5"},
		// Escapes, another order, whitespace: a JSON parser reads them.
		{`{"customerId":"c\"","meterApiName":"m","meterValue":1,"meterTimeInMillis":1}`, true, "not canonical"},
		{`{"customerId":"c\"","meterApiName":"m","meterValue":1,"meterTimeInMillis":1}`, false, "not canonical"},
		{`{"meterApiName":"m","customerId":"c","meterValue":1,"meterTimeInMillis":1}`, true, "not canonical"},
		{`{"customerId": "c","meterApiName":"m","meterValue":1,"meterTimeInMillis":1}`, true, "not canonical"},
		{head + `,"dimensions":{"a":"\u0031"}}`, true, "not canonical"},
		{head + `,"dimensions":{"a":1}}`, true, "not canonical"},
		{head + `,"dimensions":{"a":"1"`, true, "not canonical"},
		{head, true, "not canonical"},
		{`{"customerId":"c","meterApiName":"m","meterValue":,"meterTimeInMillis":1}`, true, "not canonical"},
	}
	for _, tt := range tests {
		if got := readCanonical(tt.line, tt.customer); got != tt.want {
			t.Errorf("%s (customer %v): got %s, want %s", tt.line, tt.customer, got, tt.want)
		}
	}
}

// ScanCanonical reads a line without allocating: metering reads every
// stored record with it.
func TestScanCanonicalAllocatesNothing(t *testing.T) {
	line := []byte(`{"customerId":"c","meterApiName":"m","meterValue":1,"meterTimeInMillis":1654560000000,"dimensions":{"a":"1","b":"2"},"uniqueId":"u"}`)
	var c Canonical
	allocs := testing.AllocsPerRun(100, func() {
		if !ScanCanonical(line, true, &c) {
			t.Fatal("not canonical")
		}
		for {
			_, _, found, _ := c.NextDimension()
			if !found {
				break
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("ScanCanonical allocates %.1f times per line", allocs)
	}
}

// FuzzScanCanonical: the canonical reader reads what the Parser writes.
// Every line the Parser accepts comes out in the layout: unless a string
// in it needed escapes, ScanCanonical reads it, and finds the fields a
// JSON parser finds.
func FuzzScanCanonical(f *testing.F) {
	f.Add([]byte(`{"customerId":"c","meterApiName":"m","meterValue":1,"meterTimeInMillis":1654560000000}`))
	f.Add([]byte(`{"customerId":"c","meterApiName":"m","meterValue":1.5e3,"meterTimeInMillis":1654560000000,"dimensions":{"a":"b","c":""},"uniqueId":"u"}`))
	f.Add([]byte(` { "meterValue" : 0 , "meterApiName":"m","customerId":"c","meterTimeInMillis":1654560000000,"dimensions":{"x":"y"}} `))
	f.Add([]byte(`{"customerId":"c\u0041","meterApiName":"m","meterValue":-0,"meterTimeInMillis":1654560000000,"dimensions":{}}`))
	f.Add([]byte(`{"customerId":"c\"q","meterApiName":"m","meterValue":2,"meterTimeInMillis":1654560000000}`))
	p := &Parser{format: FormatMeter, maxLine: DefaultMaxLineSize}
	f.Fuzz(func(t *testing.T, line []byte) {
		out, _, err := p.Parse(nil, line, Origin{ID: "fuzz"})
		if err != nil {
			return
		}
		var want strings.Builder
		root := gjson.ParseBytes(out)
		fmt.Fprintf(&want, "%s|%s|%s", root.Get(FieldCustomerID).String(), root.Get(FieldMeterAPI).String(), root.Get(FieldValue).Raw)
		root.Get(FieldDimensions).ForEach(func(k, v gjson.Result) bool {
			fmt.Fprintf(&want, "|%s=%s", k.String(), v.String())
			return true
		})
		got := readCanonical(string(out), true)
		if bytes.IndexByte(out, '\\') >= 0 {
			if got != "not canonical" && got != want.String() {
				t.Fatalf("%s: read %s, want %s", out, got, want.String())
			}
			return
		}
		if got != want.String() {
			t.Fatalf("%s: read %s, want %s", out, got, want.String())
		}
	})
}
