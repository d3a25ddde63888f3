package tail

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/metership/metership/buffer"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recLine is a line as a recording sink saw it.
type recLine struct {
	Source  string
	Path    string
	Offset  int64
	Data    string
	TooLong bool
}

// recordingSink stands in for the buffer: it records lines and checkpoints
// atomically per chunk, like a buffer commit, and checks that the chunks of
// each source continue exactly where its checkpoint was.
type recordingSink struct {
	mu          sync.Mutex
	lines       []recLine
	checkpoints map[string]buffer.Checkpoint
	chunks      int
	calls       int
	violations  []string
	// fail, if set, is asked before each chunk is accepted; an error
	// refuses the chunk.
	fail func(call int, c *Chunk) error
}

func newRecordingSink(restored []buffer.Checkpoint) *recordingSink {
	s := &recordingSink{checkpoints: map[string]buffer.Checkpoint{}}
	for _, cp := range restored {
		s.checkpoints[cp.Key] = cp
	}
	return s
}

func (s *recordingSink) Consume(ctx context.Context, c *Chunk) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	s.calls++
	if s.fail != nil {
		if err := s.fail(s.calls, c); err != nil {
			return err
		}
	}
	if c.Source != c.Checkpoint.Key || !strings.HasPrefix(c.Source, SourcePrefix) {
		s.violations = append(s.violations, fmt.Sprintf("chunk source %q, checkpoint source %q", c.Source, c.Checkpoint.Key))
	}
	// The first line continues exactly at the checkpoint; later lines
	// follow their predecessor's newline (one byte, or two with a '\r';
	// any distance after a too-long line).
	prev, had := s.checkpoints[c.Source]
	lo, hi := prev.Offset, prev.Offset
	for i, l := range c.Lines {
		if (had || i > 0) && (l.Offset < lo || (hi >= 0 && l.Offset > hi)) {
			s.violations = append(s.violations, fmt.Sprintf("%s: line at %d, expected %d..%d", c.Source, l.Offset, lo, hi))
		}
		lo = l.Offset + int64(len(l.Data)) + 1
		hi = lo + 1
		if l.TooLong {
			hi = -1
		}
		s.lines = append(s.lines, recLine{Source: c.Source, Path: c.Path, Offset: l.Offset, Data: string(l.Data), TooLong: l.TooLong})
	}
	if c.Checkpoint.Offset < 0 {
		delete(s.checkpoints, c.Source)
	} else {
		// A delivered unterminated last line ends without a newline.
		if len(c.Lines) > 0 && (c.Checkpoint.Offset < lo-1 || (hi >= 0 && c.Checkpoint.Offset > hi)) {
			s.violations = append(s.violations, fmt.Sprintf("%s: checkpoint %d, last line ends at %d..%d", c.Source, c.Checkpoint.Offset, lo-1, hi))
		}
		s.checkpoints[c.Source] = buffer.Checkpoint{Key: c.Source, Offset: c.Checkpoint.Offset, Meta: slices.Clone(c.Checkpoint.Meta)}
	}
	s.chunks++
	return nil
}

func (s *recordingSink) snapshot() []recLine {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.lines)
}

func (s *recordingSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.lines)
}

func (s *recordingSink) saved() []buffer.Checkpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]buffer.Checkpoint, 0, len(s.checkpoints))
	for _, cp := range s.checkpoints {
		out = append(out, buffer.Checkpoint{Key: cp.Key, Offset: cp.Offset, Meta: slices.Clone(cp.Meta)})
	}
	slices.SortFunc(out, func(a, b buffer.Checkpoint) int { return strings.Compare(a.Key, b.Key) })
	return out
}

func (s *recordingSink) checkpoint(source string) (buffer.Checkpoint, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cp, ok := s.checkpoints[source]
	return cp, ok
}

func (s *recordingSink) assertConsistent(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.violations {
		t.Error(v)
	}
}

// data returns the recorded lines' data.
func data(lines []recLine) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l.Data
	}
	return out
}

// testOptions are fast defaults for tests.
func testOptions(t testing.TB, paths ...string) Options {
	return Options{
		Paths:           paths,
		RefreshInterval: 10 * time.Millisecond,
		PollInterval:    10 * time.Millisecond,
		RotateWait:      100 * time.Millisecond,
		RetryInitial:    time.Millisecond,
		RetryMax:        10 * time.Millisecond,
		Logger:          testLogger(t),
		Metrics:         new(Metrics),
	}
}

func testLogger(t testing.TB) *zap.Logger {
	if tt, ok := t.(*testing.T); ok && testing.Verbose() {
		return zaptest.NewLogger(tt, zaptest.Level(zap.InfoLevel))
	}
	return zap.NewNop()
}

// startTailer runs a Tailer until the returned stop is called (or the test
// ends) and checks that Run returned nil.
func startTailer(t testing.TB, opts Options, sink Sink) (*Tailer, func()) {
	t.Helper()
	tl, err := New(opts, sink)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tl.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return tl, stop
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func waitLines(t testing.TB, s *recordingSink, n int) []recLine {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d lines", n), func() bool { return s.count() >= n })
	return s.snapshot()
}

func appendFile(t testing.TB, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t testing.TB, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
