package tail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/zeebo/xxh3"

	"github.com/metership/metership/buffer"
)

func TestRotatedWhileDown(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	writeFile(t, path, "l1\nl2\n")
	sink := newRecordingSink(nil)
	_, stop := startTailer(t, testOptions(t, path), sink)
	first := waitLines(t, sink, 2)
	stop()

	// While the agent is down the file gets more lines and is rotated.
	appendFile(t, path, "l3\n")
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, "m1\n")
	writeFile(t, path+".2", "unrelated\n")

	opts := testOptions(t, path)
	opts.Checkpoints = sink.saved()
	sink2 := newRecordingSink(sink.saved())
	tl, _ := startTailer(t, opts, sink2)
	waitLines(t, sink2, 2)
	waitFor(t, "the rotated file to be left", func() bool { return len(tl.Stats()) == 1 && len(sink2.saved()) == 1 })
	time.Sleep(30 * time.Millisecond)
	got := sink2.snapshot()
	slices.SortFunc(got, func(a, b recLine) int { return strings.Compare(a.Data, b.Data) })
	if !slices.Equal(data(got), []string{"l3", "m1"}) {
		t.Fatalf("lines %+v", got)
	}
	if got[0].Source != first[0].Source || got[0].Offset != 6 || got[0].Path != path+".1" {
		t.Fatalf("l3 = %+v, want the old source at offset 6", got[0])
	}
	if u := tl.Unclaimed(); len(u) != 0 {
		t.Fatalf("unclaimed %+v", u)
	}
	sink2.assertConsistent(t)
}

func TestUnclaimedCheckpoints(t *testing.T) {
	dir := t.TempDir()
	gone := FileID{Dev: 1, Ino: 2, FingerprintLen: 3, Fingerprint: 4, Path: filepath.Join(dir, "gone.log")}
	cps := []buffer.Checkpoint{
		{Key: "file:1:2:0000000000000004", Offset: 10, Meta: gone.AppendMeta(nil)},
		{Key: "file:9:9:0000000000000009", Offset: 10, Meta: []byte("garbage")},
		{Key: "stdin:whatever", Offset: 3},
	}
	opts := testOptions(t, filepath.Join(dir, "*.log"))
	opts.Checkpoints = cps
	tl, _ := startTailer(t, opts, newRecordingSink(nil))
	time.Sleep(30 * time.Millisecond)
	u := tl.Unclaimed()
	if len(u) != 2 || u[0].Key != cps[0].Key || u[1].Key != cps[1].Key {
		t.Fatalf("unclaimed %+v", u)
	}
}

func TestSymlinkedFiles(t *testing.T) {
	dir := t.TempDir()
	pods := filepath.Join(dir, "pods", "p1")
	containers := filepath.Join(dir, "containers")
	for _, d := range []string{pods, containers} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	target := filepath.Join(pods, "0.log")
	writeFile(t, target, "t1\n")
	link := filepath.Join(containers, "p1_c.log")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	sink := newRecordingSink(nil)
	tl, _ := startTailer(t, testOptions(t, filepath.Join(containers, "*.log")), sink)
	first := waitLines(t, sink, 1)
	appendFile(t, target, "t2\n")
	waitLines(t, sink, 2)

	// The kubelet rotates the target; the link then names the new file.
	if err := os.Rename(target, target+".20240101"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, target, "u1\n")
	got := waitLines(t, sink, 3)
	waitFor(t, "the rotated target to be left", func() bool { return len(tl.Stats()) == 1 && len(sink.saved()) == 1 })
	if got[0].Path != link || got[2].Data != "u1" || got[2].Source == first[0].Source || got[2].Offset != 0 {
		t.Fatalf("lines %+v", got)
	}
	id, err := DecodeMeta(sink.saved()[0].Meta)
	if err != nil {
		t.Fatal(err)
	}
	if id.Path != link || id.Target != target {
		t.Fatalf("meta %+v", id)
	}
}

func TestExclude(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"a.log", "a.log.gz", "skip.log", "b.log"} {
		writeFile(t, filepath.Join(dir, name), name+"\n")
	}
	sink := newRecordingSink(nil)
	opts := testOptions(t, filepath.Join(dir, "*.log*"))
	opts.Exclude = []string{"*.gz", filepath.Join(dir, "skip.*")}
	startTailer(t, opts, sink)
	waitLines(t, sink, 2)
	time.Sleep(30 * time.Millisecond)
	got := data(sink.snapshot())
	slices.Sort(got)
	if !slices.Equal(got, []string{"a.log", "b.log"}) {
		t.Fatalf("lines %q", got)
	}
}

func TestFingerprintWindowGrows(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	writeFile(t, path, "a\n")
	sink := newRecordingSink(nil)
	_, stop := startTailer(t, testOptions(t, path), sink)
	first := waitLines(t, sink, 1)
	source := first[0].Source
	var want []string
	want = append(want, "a")
	for i := range 40 {
		l := fmt.Sprintf("line-%02d-%s", i, strings.Repeat("g", 40))
		want = append(want, l)
		appendFile(t, path, l+"\n")
	}
	waitLines(t, sink, len(want))
	// The window is extended whenever the reader finds the file grown at
	// its end; the next chunk's Meta carries it.
	appendFile(t, path, "tick\n")
	got := waitLines(t, sink, len(want)+1)
	for _, l := range got {
		if l.Source != source {
			t.Fatalf("source changed from %s to %s as the file grew", source, l.Source)
		}
	}
	stop()
	cp, _ := sink.checkpoint(source)
	id, err := DecodeMeta(cp.Meta)
	if err != nil {
		t.Fatal(err)
	}
	if id.FingerprintLen != FingerprintSize {
		t.Fatalf("fingerprint covers %d bytes, want %d", id.FingerprintLen, FingerprintSize)
	}

	// The grown fingerprint still identifies the file after a restart.
	appendFile(t, path, "last\n")
	opts := testOptions(t, path)
	opts.Checkpoints = sink.saved()
	sink2 := newRecordingSink(sink.saved())
	startTailer(t, opts, sink2)
	got = waitLines(t, sink2, 1)
	if got[0].Data != "last" || got[0].Source != source {
		t.Fatalf("after restart %+v", got)
	}
}

func TestRunOnceAndStopsCleanly(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.log")
	writeFile(t, path, "x\n")
	var inside, entered atomic.Int32
	sink := sinkFunc(func(ctx context.Context, c *Chunk) error {
		inside.Add(1)
		defer inside.Add(-1)
		entered.Add(1)
		<-ctx.Done() // a buffer stuck on a slow disk
		return ctx.Err()
	})
	tl, err := New(testOptions(t, path), sink)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tl.Run(ctx) }()
	waitFor(t, "a Consume call", func() bool { return entered.Load() > 0 })
	if err := tl.Run(ctx); !errors.Is(err, ErrRunning) {
		t.Fatalf("second Run = %v, want ErrRunning", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := inside.Load(); n != 0 {
		t.Fatalf("%d Consume calls in progress after Run returned", n)
	}
}

type sinkFunc func(ctx context.Context, c *Chunk) error

func (f sinkFunc) Consume(ctx context.Context, c *Chunk) error { return f(ctx, c) }

func TestOptionsValidation(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"no paths", func(o *Options) { o.Paths = nil }, "paths: at least one glob"},
		{"bad glob", func(o *Options) { o.Paths = []string{"/var/log/[a.log"} }, `paths: "/var/log/[a.log"`},
		{"bad exclude", func(o *Options) { o.Exclude = []string{"[x"} }, `exclude: "[x"`},
		{"start_at", func(o *Options) { o.StartAt = "middle" }, `start_at: "middle"`},
		{"negative rotate_wait", func(o *Options) { o.RotateWait = -time.Second }, "rotate_wait: -1s is negative"},
		{"retry bounds", func(o *Options) { o.RetryInitial, o.RetryMax = time.Second, time.Millisecond }, "retry_max"},
		{"tiny read buffer", func(o *Options) { o.ReadBufferSize = 10 }, "read_buffer_size: 10 is below 512"},
		{"negative line size", func(o *Options) { o.MaxLineSize = -1 }, "max_line_size"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := Options{Paths: []string{"/var/log/*.log"}}
			c.edit(&o)
			_, err := New(o, sinkFunc(nil))
			if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New = %v, want ErrInvalidOptions mentioning %q", err, c.want)
			}
		})
	}
	if _, err := New(Options{Paths: []string{"/x"}}, nil); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("nil sink: %v", err)
	}
	tl, err := New(Options{Paths: []string{"/x/*.log"}}, sinkFunc(nil))
	if err != nil {
		t.Fatal(err)
	}
	o := tl.opts
	if len(o.Inputs) != 1 || o.Inputs[0].StartAt != StartBeginning || o.RefreshInterval != time.Second || o.PollInterval != 250*time.Millisecond ||
		o.Inputs[0].RotateWait != 5*time.Second || o.MaxLineSize != 1<<20 || o.ReadBufferSize != 64<<10 ||
		o.MaxChunkLines != 4096 || o.MaxChunkBytes != 1<<20 || o.FlushPartialAfter != 0 {
		t.Fatalf("defaults %+v", o)
	}
}

func TestMetaRoundTrip(t *testing.T) {
	ids := []FileID{
		{},
		{Dev: 66306, Ino: 1 << 40, FingerprintLen: FingerprintSize, Fingerprint: 0xdeadbeefcafef00d, Path: "/var/log/containers/a.log", Target: "/var/log/pods/ns_p_uid/c/0.log"},
		{Dev: 1, Ino: 2, FingerprintLen: 7, Fingerprint: 3, Path: "relative/ü.log"},
	}
	for _, id := range ids {
		got, err := DecodeMeta(id.AppendMeta([]byte("prefix"))[len("prefix"):])
		if err != nil || got != id {
			t.Fatalf("round trip of %+v = %+v, %v", id, got, err)
		}
	}
	good := ids[1].AppendMeta(nil)
	bad := map[string][]byte{
		"empty":         nil,
		"version":       append([]byte{2}, good[1:]...),
		"truncated":     good[:len(good)-1],
		"trailing":      append(slices.Clone(good), 0),
		"short":         good[:5],
		"fingerprint":   FileID{FingerprintLen: FingerprintSize + 1}.AppendMeta(nil),
		"path too long": {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200, 'a'},
	}
	for name, b := range bad {
		if _, err := DecodeMeta(b); !errors.Is(err, ErrBadMeta) {
			t.Errorf("%s: DecodeMeta = %v, want ErrBadMeta", name, err)
		}
	}
}

func TestFormatSource(t *testing.T) {
	got := formatSource(fileKey{dev: 66306, ino: 1234}, fingerprint{n: 10, sum: 0xab})
	if want := "file:66306:1234:00000000000000ab"; got != want {
		t.Fatalf("source %q, want %q", got, want)
	}
}

func TestLastLineStart(t *testing.T) {
	cases := []struct {
		content string
		want    int64
	}{
		{"", 0},
		{"abc\n", 4},
		{"abc\ndef", 4},
		{"no newline at all", 0},
		{"x\n" + strings.Repeat("y", 50), 52}, // longer than maxLine+2: start at the end
	}
	for _, c := range cases {
		r := strings.NewReader(c.content)
		got, err := lastLineStart(r, int64(len(c.content)), 4, 20)
		if err != nil || got != c.want {
			t.Errorf("lastLineStart(%q) = %d, %v; want %d", c.content, got, err, c.want)
		}
	}
}

func TestRecoveryIgnoresReusedInode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	other := path + ".1"
	writeFile(t, other, "0123456789\nnew\n")
	fi, err := os.Stat(other)
	if err != nil {
		t.Fatal(err)
	}
	key, _, _ := statKey(fi)
	f, err := os.Open(other)
	if err != nil {
		t.Fatal(err)
	}
	var real fingerprint
	if _, err := real.verify(f, 11, make([]byte, FingerprintSize)); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()

	for _, c := range []struct {
		name    string
		fp      fingerprint
		want    []string
		claimed bool
	}{
		// A vanished app.log whose inode the unrelated app.log.1 now has.
		{"reused inode", fingerprint{n: 11, sum: real.sum ^ 1}, nil, false},
		// app.log renamed to app.log.1 while the tailer was down.
		{"rotated", real, []string{"new"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			id := FileID{Dev: key.dev, Ino: key.ino, FingerprintLen: c.fp.n, Fingerprint: c.fp.sum, Path: path}
			cp := buffer.Checkpoint{Key: formatSource(key, c.fp), Offset: 11, Meta: id.AppendMeta(nil)}
			opts := testOptions(t, path)
			opts.Checkpoints = []buffer.Checkpoint{cp}
			sink := newRecordingSink(opts.Checkpoints)
			tl, stop := startTailer(t, opts, sink)
			if c.claimed {
				waitLines(t, sink, 1)
				waitFor(t, "the file to be left", func() bool { return len(tl.Stats()) == 0 })
			} else {
				time.Sleep(50 * time.Millisecond)
			}
			stop()
			if got := data(sink.snapshot()); !slices.Equal(got, c.want) {
				t.Fatalf("lines %q, want %q", got, c.want)
			}
			if claimed := len(tl.Unclaimed()) == 0; claimed != c.claimed {
				t.Fatalf("unclaimed %+v", tl.Unclaimed())
			}
		})
	}
}

// With polling and rescans made too slow to matter, only inotify can
// deliver appended lines and new files in time.
func TestNotifyWakesReadersAndScans(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.log")
	writeFile(t, path, "one\n")
	sink := newRecordingSink(nil)
	opts := testOptions(t, filepath.Join(dir, "*.log"))
	opts.PollInterval = time.Hour
	opts.RefreshInterval = time.Hour
	startTailer(t, opts, sink)
	waitLines(t, sink, 1)
	appendFile(t, path, "two\n")
	waitLines(t, sink, 2)
	writeFile(t, filepath.Join(dir, "b.log"), "three\n")
	got := waitLines(t, sink, 3)
	if !slices.Equal(data(got), []string{"one", "two", "three"}) {
		t.Fatalf("lines %q", data(got))
	}
}

// WholeFileSource keeps the format ship's checkpoints have always used:
// prefix, device, inode and the xxh3 of the first FingerprintSize bytes as
// 16 hex digits; a short file is fingerprinted by the bytes it has, an
// empty one (nothing to resume) by zero, as the tailer does.
// TestResumeFile checks the whole-file identity metership ship uses: a new
// file gets the tailer's Source under the prefix; a file that grew keeps
// its Source and resumes at its checkpoint, from 0 bytes up through the
// fingerprint window; a file rewritten at the same inode starts over and
// the old checkpoint is stale; a checkpoint from before the Meta held a
// FileID (ship's old format: Meta is the path) is still matched.
func TestResumeFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	resume := func(cps []buffer.Checkpoint) FileCursor {
		t.Helper()
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fi, _ := f.Stat()
		c, err := ResumeFile("ship:", f, fi, path, cps)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	write := func(data []byte) {
		t.Helper()
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	data := bytes.Repeat([]byte("0123456789abcde\n"), 3*FingerprintSize/16)
	write(nil)
	first := resume(nil)
	st, _ := os.Stat(path)
	sys := st.Sys().(*syscall.Stat_t)
	if want := fmt.Sprintf("ship:%d:%d:%016x", uint64(sys.Dev), sys.Ino, 0); first.Source != want || first.Offset != 0 {
		t.Fatalf("new empty file: %+v, want Source %q at 0", first, want)
	}
	cps := []buffer.Checkpoint{{Key: first.Source, Offset: 0, Meta: first.Meta}}
	for _, size := range []int{1, 16, 100, FingerprintSize - 1, FingerprintSize, FingerprintSize + 1, len(data)} {
		write(data[:size])
		c := resume(cps)
		if c.Source != first.Source || c.Offset != cps[0].Offset || len(c.Stale) != 0 {
			t.Fatalf("grown to %d bytes: %+v, want Source %q at %d", size, c, first.Source, cps[0].Offset)
		}
		cps[0] = buffer.Checkpoint{Key: c.Source, Offset: int64(size), Meta: c.Meta}
	}
	// Rewritten in place: not the same file any more.
	rewritten := bytes.Clone(data)
	rewritten[5] = 'X'
	write(rewritten)
	if c := resume(cps); c.Source == first.Source || c.Offset != 0 || len(c.Stale) != 1 || c.Stale[0] != first.Source {
		t.Fatalf("rewritten: %+v, want a new Source at 0 and %q stale", c, first.Source)
	}
	// ship's old checkpoints: Source with the fingerprint of the first
	// min(size, FingerprintSize) bytes shipped, Meta the path.
	for _, size := range []int{10, FingerprintSize, 2 * FingerprintSize} {
		write(data[:size])
		old := fmt.Sprintf("ship:%d:%d:%016x", uint64(sys.Dev), sys.Ino, xxh3.Hash(data[:min(size, FingerprintSize)]))
		write(data)
		c := resume([]buffer.Checkpoint{{Key: old, Offset: int64(size), Meta: []byte(path)}})
		if c.Source != old || c.Offset != int64(size) {
			t.Fatalf("old checkpoint at %d: %+v, want %q at %d", size, c, old, size)
		}
	}
}
