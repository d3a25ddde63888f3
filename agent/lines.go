package main

import (
	"bufio"
	"errors"
	"io"
)

// lineReader splits a stream into lines without holding more than maxLine
// bytes of one line in memory: a longer line is reported as tooLong with
// its first maxLine bytes, and the rest is skipped up to the newline.
type lineReader struct {
	r       *bufio.Reader
	maxLine int
	offset  int64 // offset of the next unread byte
	long    []byte
}

func newLineReader(r io.Reader, start int64, maxLine int) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 256<<10), maxLine: maxLine, offset: start}
}

// next returns the next line (without the newline or a trailing \r), its
// starting offset, whether it was too long, and io.EOF at the end. A last
// line without a newline is returned as a line: a file handed to ship is
// complete. The returned slice is valid until the next call.
func (lr *lineReader) next() (line []byte, off int64, tooLong bool, err error) {
	off = lr.offset
	b, err := lr.r.ReadSlice('\n')
	lr.offset += int64(len(b))
	switch {
	case err == nil:
		return trimEOL(b), off, len(b)-1 > lr.maxLine, nil
	case errors.Is(err, bufio.ErrBufferFull):
		return lr.readLong(b, off)
	case errors.Is(err, io.EOF) && len(b) > 0:
		return trimEOL(b), off, len(b) > lr.maxLine, nil
	}
	return nil, off, false, err
}

func (lr *lineReader) readLong(first []byte, off int64) ([]byte, int64, bool, error) {
	lr.long = append(lr.long[:0], first[:min(len(first), lr.maxLine)]...)
	for {
		b, err := lr.r.ReadSlice('\n')
		lr.offset += int64(len(b))
		if room := lr.maxLine - len(lr.long); room > 0 {
			lr.long = append(lr.long, b[:min(len(b), room)]...)
		}
		switch {
		case err == nil || errors.Is(err, io.EOF):
			total := lr.offset - off
			if err == nil {
				total--
			}
			return trimEOL(lr.long), off, total > int64(lr.maxLine), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return nil, off, false, err
		}
	}
}

func trimEOL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b
}
