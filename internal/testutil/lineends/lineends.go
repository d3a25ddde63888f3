// Package lineends is the shared case of the line-policy tests: one input,
// written with LF or CRLF endings, that the tailer, metership ship and the
// Fluent Bit plugin must all turn into the same records and the same dead
// letters (records.max_line_size MaxLine).
package lineends

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// MaxLine is the records.max_line_size the tests configure ("1KiB").
const MaxLine = 1024

// MaxLineSize is MaxLine as a config value.
const MaxLineSize = "1KiB"

// tooLongReason is pipeline.TooLongReason(MaxLine), spelled out: the
// dead-letter reason is part of the contract.
const tooLongReason = "line exceeds records.max_line_size (1024 bytes); only its first 1024 bytes are kept here"

func record(i int, pad string) string {
	return fmt.Sprintf(`{"customerId":"eol-%d","meterApiName":"calls","meterValue":%d,"meterTimeInMillis":%d,"dimensions":{"pad":"%s"}}`,
		i, i+1, int64(1717200000000)+int64(i)*1000, pad)
}

// exactly returns record i padded to n bytes.
func exactly(i, n int) string {
	short := record(i, "")
	return record(i, strings.Repeat("x", n-len(short)))
}

// badLine is a line to dead-letter and a fragment of its reason.
type badLine struct{ line, reason string }

var bad = []badLine{
	{`{"customerId":"c","meterApiName":"m","meterValue":1,`, "malformed JSON"},
	{`not json at all`, "not a JSON object"},
	{`{"meterApiName":"m","meterValue":1,"meterTimeInMillis":1654560000000}`, "customerId: missing"},
}

// long is a line of 3 KiB: dead-lettered with its first MaxLine bytes.
var long = exactly(99, 3*MaxLine)

// Lines returns the input lines, without line endings: records (one of
// exactly MaxLine bytes, which a CRLF ending must not push over the
// limit), bad lines, blank lines and a too-long line.
func Lines() []string {
	var out []string
	for i := 0; i < 5; i++ {
		out = append(out, record(i, "p"))
		if i < len(bad) {
			out = append(out, bad[i].line)
		}
	}
	out = append(out, "", "   ", exactly(5, MaxLine), long, record(6, "q"), exactly(7, MaxLine-1))
	return out
}

// File returns Lines, each ended by "\n" or, with crlf, "\r\n".
func File(crlf bool) []byte {
	eol := "\n"
	if crlf {
		eol = "\r\n"
	}
	return []byte(strings.Join(Lines(), eol) + eol)
}

// Check fails t unless records and deadLetters (NDJSON lines of the
// output's record and dead-letter objects) are exactly what Lines must
// give: every record once (uniqueIds aside, they name the input), every
// bad line and the too-long line's first MaxLine bytes dead-lettered with
// its reason, nothing for the blank lines.
func Check(t testing.TB, records, deadLetters []string) {
	t.Helper()
	var got []string
	for _, l := range records {
		var r map[string]any
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("record %q: %v", l, err)
		}
		if id, _ := r["uniqueId"].(string); id == "" {
			t.Fatalf("record without uniqueId: %s", l)
		}
		delete(r, "uniqueId")
		b, _ := json.Marshal(r)
		got = append(got, string(b))
	}
	var want []string
	for _, l := range Lines() {
		if !strings.HasPrefix(l, `{"customerId":"eol-`) || l == long {
			continue
		}
		var r map[string]any
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(r)
		want = append(want, string(b))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("records:\n%s\nwant:\n%s", short(got), short(want))
	}

	type dead struct{ line, reason string }
	var gotDead []dead
	for _, l := range deadLetters {
		var d struct{ Line, Reason string }
		if err := json.Unmarshal([]byte(l), &d); err != nil {
			t.Fatalf("dead letter %q: %v", l, err)
		}
		gotDead = append(gotDead, dead{d.Line, d.Reason})
	}
	wantDead := []badLine{{long[:MaxLine], tooLongReason}}
	wantDead = append(wantDead, bad...)
	if len(gotDead) != len(wantDead) {
		t.Fatalf("%d dead letters %q, want %d", len(gotDead), gotDead, len(wantDead))
	}
	for _, w := range wantDead {
		i := slices.IndexFunc(gotDead, func(d dead) bool { return d.line == w.line })
		switch {
		case i < 0:
			t.Fatalf("no dead letter with line %.80q (%d bytes); got %q", w.line, len(w.line), gotDead)
		case w.reason == tooLongReason && gotDead[i].reason != w.reason:
			t.Fatalf("dead letter of the too-long line: reason %q, want %q", gotDead[i].reason, w.reason)
		case !strings.Contains(gotDead[i].reason, w.reason):
			t.Fatalf("dead letter %q: reason %q, want it to say %q", w.line, gotDead[i].reason, w.reason)
		}
	}
}

// short renders records one a line, each cut to 150 bytes.
func short(recs []string) string {
	var b strings.Builder
	for _, r := range recs {
		fmt.Fprintf(&b, "%.150s\n", r)
	}
	return b.String()
}
