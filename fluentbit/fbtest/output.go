package fbtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
)

// Record is one shipped meter record.
type Record struct {
	CustomerID string            `json:"customerId"`
	MeterAPI   string            `json:"meterApiName"`
	Value      json.Number       `json:"meterValue"`
	Time       int64             `json:"meterTimeInMillis"`
	Dimensions map[string]string `json:"dimensions"`
	UniqueID   string            `json:"uniqueId"`
}

// DeadLetter is one shipped dead-letter entry.
type DeadLetter struct {
	Source string `json:"source"`
	Offset int64  `json:"offset"`
	Line   string `json:"line"`
	Reason string `json:"reason"`
}

// ReadDir returns the NDJSON lines of every object file under dir (gzip
// when named *.gz), sorted; a missing dir has none. Hidden files (the
// uploader's temporaries) are skipped.
func ReadDir(t testing.TB, dir string) []string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), ".") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		lines = append(lines, Lines(t, path, b)...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return lines
}

// Lines splits an object body (gunzipped when name ends in .gz) into its
// non-empty lines.
func Lines(t testing.TB, name string, body []byte) []string {
	t.Helper()
	var r io.Reader = bytes.NewReader(body)
	if strings.HasSuffix(name, ".gz") {
		zr, err := gzip.NewReader(r)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		r = zr
	}
	var lines []string
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		if len(sc.Bytes()) > 0 {
			lines = append(lines, sc.Text())
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return lines
}

// ParseRecords decodes record lines strictly: unknown fields fail.
func ParseRecords(t testing.TB, lines []string) []Record {
	t.Helper()
	out := make([]Record, len(lines))
	for i, l := range lines {
		dec := json.NewDecoder(strings.NewReader(l))
		dec.UseNumber()
		dec.DisallowUnknownFields()
		if err := dec.Decode(&out[i]); err != nil {
			t.Fatalf("record %q: %v", l, err)
		}
	}
	return out
}

// ParseDeadLetters decodes dead-letter lines, sorted by source then
// offset.
func ParseDeadLetters(t testing.TB, lines []string) []DeadLetter {
	t.Helper()
	out := make([]DeadLetter, len(lines))
	for i, l := range lines {
		dec := json.NewDecoder(strings.NewReader(l))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&out[i]); err != nil {
			t.Fatalf("dead letter %q: %v", l, err)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Source != out[j].Source {
			return out[i].Source < out[j].Source
		}
		return out[i].Offset < out[j].Offset
	})
	return out
}

// AssertOnce fails t unless there are want records and every uniqueId
// occurs once.
func AssertOnce(t testing.TB, recs []Record, want int) {
	t.Helper()
	seen := map[string]int{}
	for _, r := range recs {
		seen[r.UniqueID]++
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("uniqueId %s shipped %d times", id, n)
		}
	}
	if len(recs) != want {
		t.Errorf("%d records shipped, want %d", len(recs), want)
	}
}

// AssertCustomers fails t unless exactly the customers
// CustomerName(first..first+n-1) were shipped, each once, and every
// uniqueId is distinct.
func AssertCustomers(t testing.TB, recs []Record, first, n int) {
	t.Helper()
	got := map[string]int{}
	for _, r := range recs {
		got[r.CustomerID]++
	}
	for i := first; i < first+n; i++ {
		if c := CustomerName(i); got[c] != 1 {
			t.Errorf("%s shipped %d times, want once", c, got[c])
		}
	}
	AssertOnce(t, recs, n)
}
