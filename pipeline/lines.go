package pipeline

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// The line policy every input shares (the tailer, metership ship and the
// Fluent Bit plugin's {"log": text} events):
//
//   - a line ends at '\n'; one '\r' right before it, or at the end of an
//     unterminated last line, is not part of the line (TrimEOL), and it is
//     removed before records.max_line_size is applied;
//   - a line longer than records.max_line_size is dead-lettered with its
//     first max_line_size bytes and the reason TooLongReason names; a
//     reader never holds more of it than that;
//   - a blank line is neither a record nor an error: it is skipped.
//
// Ingester.AddLine applies the last two; readers only split and trim.

// TrimEOL returns b without a trailing '\n' and then without one trailing
// '\r'.
func TrimEOL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b
}

// TooLongReason is the dead-letter reason of a line longer than
// records.max_line_size (maxLine bytes).
func TooLongReason(maxLine int) string {
	return fmt.Sprintf("line exceeds records.max_line_size (%d bytes); only its first %d bytes are kept here", maxLine, maxLine)
}

// LineReader splits a stream into lines under the line policy without
// holding more than maxLine+1 bytes of one line in memory. A last line
// without a newline is returned as a line: a file handed to ship is
// complete.
type LineReader struct {
	r       *bufio.Reader
	maxLine int
	offset  int64 // offset of the next unread byte
	long    []byte
}

// NewLineReader reads r, whose first byte is at offset start.
func NewLineReader(r io.Reader, start int64, maxLine int) *LineReader {
	return &LineReader{r: bufio.NewReaderSize(r, 256<<10), maxLine: maxLine, offset: start}
}

// Offset returns the offset just past the last line returned.
func (lr *LineReader) Offset() int64 { return lr.offset }

// Next returns the next line (TrimEOL applied), its starting offset,
// whether it was longer than maxLine (line then holds its first maxLine
// bytes), and io.EOF at the end. The returned slice is valid until the
// next call.
func (lr *LineReader) Next() (line []byte, off int64, tooLong bool, err error) {
	off = lr.offset
	b, err := lr.r.ReadSlice('\n')
	lr.offset += int64(len(b))
	switch {
	case err == nil || (errors.Is(err, io.EOF) && len(b) > 0):
		line = TrimEOL(b)
		if len(line) > lr.maxLine {
			return line[:lr.maxLine], off, true, nil
		}
		return line, off, false, nil
	case errors.Is(err, bufio.ErrBufferFull):
		return lr.readLong(b, off)
	}
	return nil, off, false, err
}

// readLong reads the rest of a line longer than the read buffer, keeping
// its first maxLine+1 bytes: enough to tell a line of maxLine bytes and a
// '\r' from a line that is too long.
func (lr *LineReader) readLong(first []byte, off int64) ([]byte, int64, bool, error) {
	keep := lr.maxLine + 1
	lr.long = append(lr.long[:0], first[:min(len(first), keep)]...)
	n, last := int64(len(first)), first[len(first)-1]
	for {
		b, err := lr.r.ReadSlice('\n')
		lr.offset += int64(len(b))
		data := b
		if err == nil {
			data = b[:len(b)-1]
		}
		if room := keep - len(lr.long); room > 0 {
			lr.long = append(lr.long, data[:min(len(data), room)]...)
		}
		if len(data) > 0 {
			n, last = n+int64(len(data)), data[len(data)-1]
		}
		switch {
		case err == nil || errors.Is(err, io.EOF):
			if last == '\r' {
				n--
			}
			if n > int64(lr.maxLine) {
				return lr.long[:lr.maxLine], off, true, nil
			}
			return lr.long[:n], off, false, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return nil, off, false, err
		}
	}
}
