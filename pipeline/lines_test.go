package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/metership/metership/record"
)

// TestLineReader checks the line policy of LineReader, with lines short
// and longer than its read buffer: a '\r' before the newline (or at the
// end of an unterminated last line) is not part of the line and does not
// count against maxLine; a longer line is returned once, cut to maxLine
// and marked too long, and offsets stay exact.
func TestLineReader(t *testing.T) {
	type line struct {
		data    string
		off     int64
		tooLong bool
	}
	for _, maxLine := range []int{4, 300 << 10} {
		n := maxLine
		x := strings.Repeat("x", n)
		input := x + "\r\n" + x + "y\r\n" + x + "\n" + "ab\r\n" + x + "\r\r\n" + "\r\n" + x + "\r"
		want := []line{
			{x, 0, false},
			{x, int64(n + 2), true},
			{x, int64(2*n + 5), false},
			{"ab", int64(3*n + 6), false},
			{x, int64(3*n + 10), true}, // x + '\r' is n+1 bytes
			{"", int64(4*n + 13), false},
			{x, int64(4*n + 15), false},
		}
		lr := NewLineReader(strings.NewReader(input), 0, maxLine)
		for i, w := range want {
			data, off, tooLong, err := lr.Next()
			if err != nil || string(data) != w.data || off != w.off || tooLong != w.tooLong {
				t.Fatalf("max %d, line %d: %.20q (%d bytes) at %d, too long %v, %v; want %.20q (%d bytes) at %d, too long %v",
					maxLine, i, data, len(data), off, tooLong, err, w.data, len(w.data), w.off, w.tooLong)
			}
		}
		if _, _, _, err := lr.Next(); !errors.Is(err, io.EOF) {
			t.Fatalf("max %d: after the last line: %v, want io.EOF", maxLine, err)
		}
		if lr.Offset() != int64(len(input)) {
			t.Fatalf("max %d: Offset %d, want %d", maxLine, lr.Offset(), len(input))
		}
	}
}

// TestAddLinePolicy checks the line policy in the Ingester, the one place
// every input's lines go through: blank lines are skipped, a line of
// exactly records.max_line_size is a record, a longer one (or one a reader
// marked too long) is dead-lettered with its first max_line_size bytes and
// TooLongReason, and any dead letter (a bad Fluent Bit event) keeps at most
// max_line_size bytes of its line, saying so.
func TestAddLinePolicy(t *testing.T) {
	root := t.TempDir()
	cfg := testConfig(t, filepath.Join(root, "ingest", "amberdata"))
	cfg.Records.MaxLineSize = 1024
	p, err := newTestPipeline(t, cfg, Options{}, testParts{})
	if err != nil {
		t.Fatal(err)
	}
	in, err := p.NewIngester("app")
	if err != nil {
		t.Fatal(err)
	}
	rec := func(n int) []byte {
		short := `{"customerId":"c","meterApiName":"m","meterValue":1,"meterTimeInMillis":1654560000000,"uniqueId":""}`
		return []byte(`{"customerId":"c","meterApiName":"m","meterValue":1,"meterTimeInMillis":1654560000000,"uniqueId":"` + strings.Repeat("u", n-len(short)) + `"}`)
	}
	src := record.Origin{ID: "s"}
	in.AddLine(nil, false, src, "f")
	in.AddLine([]byte(" \t "), false, src, "f")
	in.AddLine(rec(1024), false, src, "f")
	long := rec(1025)
	in.AddLine(long, false, src, "f")
	in.AddLine([]byte("cut by its reader"), true, src, "f")
	bad := bytes.Repeat([]byte("b"), 3000)
	in.Reject(bad, 7, "f", "not a Fluent Bit event")
	if a, r := in.Counts(); a != 1 || r != 3 {
		t.Fatalf("counts: %d records, %d dead letters; want 1 and 3", a, r)
	}
	if err := in.Commit(); err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	drain(t, p)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	var dead []struct{ Line, Reason string }
	for k, body := range readObjects(t, root) {
		if !strings.HasPrefix(k, "failed-requests/") {
			continue
		}
		for _, l := range strings.Split(strings.TrimSpace(body), "\n") {
			var d struct{ Line, Reason string }
			if err := json.Unmarshal([]byte(l), &d); err != nil {
				t.Fatal(err)
			}
			dead = append(dead, d)
		}
	}
	want := []struct{ Line, Reason string }{
		{string(long[:1024]), TooLongReason(1024)},
		{"cut by its reader", TooLongReason(1024)},
		{string(bad[:1024]), "not a Fluent Bit event (line cut to its first 1024 bytes, records.max_line_size)"},
	}
	if !slices.Equal(dead, want) {
		t.Fatalf("dead letters:\n%+v\nwant:\n%+v", dead, want)
	}
}
