// Package rotate does to a log file what log rotators do, for tests of
// the tailer and the agent.
package rotate

import (
	"io"
	"os"
	"testing"
)

// CopyTruncate rotates path like logrotate's copytruncate: its content is
// copied to copyTo, then live (the writer's open handle on path) is
// truncated to zero, and the writer carries on in the same file.
func CopyTruncate(tb testing.TB, live *os.File, path, copyTo string) {
	tb.Helper()
	src, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(copyTo)
	if err != nil {
		tb.Fatal(err)
	}
	defer dst.Close()
	if _, err := io.Copy(dst, src); err != nil {
		tb.Fatal(err)
	}
	if err := live.Truncate(0); err != nil {
		tb.Fatal(err)
	}
}
