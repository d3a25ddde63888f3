package pipeline

import (
	"errors"
	"io"
	"strings"
	"testing"
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
