package tail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/metership/metership/buffer"
	"github.com/metership/metership/internal/retry"
)

// lineRef locates a complete line in the reader's buffer until the chunk
// holding it is emitted.
type lineRef struct {
	start, end int   // Data is buf[start:end]
	off        int64 // file offset of the line's first byte
	tooLong    bool
}

// reader follows one file (one inode) in its own goroutine, which owns
// every field above mu. The buffer holds, from lineStart, the current
// partial line; before lineStart, the complete lines referenced by refs
// and not yet accepted by the Sink.
type reader struct {
	t     *Tailer
	f     *os.File
	key   fileKey
	input int // index in Options.Inputs of the input that found the file
	wake  chan struct{}
	timer *time.Timer

	source    string   // "" until the generation's first chunk
	stale     []string // sources to forget after the next accepted chunk
	announce  bool     // persist the start offset before reading
	fp        fingerprint
	fpScratch [FingerprintSize]byte
	readOff   int64 // next file offset to read
	commitOff int64 // checkpoint: just past the last accepted byte

	bufp      *[]byte // pool handle of buf; nil while idle
	buf       []byte
	lineStart int   // buf index of the current line's first byte
	lineOff   int64 // file offset of buf[lineStart]
	scanPos   int   // buf[lineStart:scanPos] has no newline
	skipping  bool  // discarding the rest of a too-long line; buf[lineStart:] is its kept prefix

	refs         []lineRef
	pendingEnd   int64 // file offset just past the last line in refs
	pendingBytes int   // line data in refs
	lines        []Line
	meta         []byte
	chunk        Chunk

	lastSize   int64
	lastMod    time.Time
	lastGrowth time.Time
	nlink      uint64

	mu        sync.Mutex // guards below; shared with the scan and Stats
	path      string
	realPath  string
	rotatedAt time.Time
	pub       FileState // Source, Offset, Size and LastRead as last published
}

func newReader(t *Tailer, f *os.File, key fileKey, input int, path, realPath string, now time.Time) *reader {
	return &reader{
		t:          t,
		f:          f,
		key:        key,
		input:      input,
		wake:       make(chan struct{}, 1),
		path:       path,
		realPath:   realPath,
		lastSize:   -1,
		lastGrowth: now,
	}
}

// resume positions a reader that has not started at offset of source.
func (r *reader) resume(source string, offset int64, fp fingerprint) {
	r.source = source
	r.readOff, r.commitOff, r.lineOff = offset, offset, offset
	r.fp = fp
}

// poke wakes the reader if it is idle.
func (r *reader) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// markRotated records that the globs no longer match the file.
func (r *reader) markRotated(now time.Time) {
	r.mu.Lock()
	if r.rotatedAt.IsZero() {
		r.rotatedAt = now
	}
	r.mu.Unlock()
	r.poke()
}

func (r *reader) rotated() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rotatedAt
}

func (r *reader) paths() (path, realPath string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.path, r.realPath
}

func (r *reader) publish() {
	r.mu.Lock()
	r.pub.Source = r.source
	r.pub.Offset = r.commitOff
	r.pub.Size = r.lastSize
	r.pub.LastRead = r.lastGrowth
	r.mu.Unlock()
}

func (r *reader) state() FileState {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.pub
	s.Path = r.path
	s.RotatedAt = r.rotatedAt
	s.Dev, s.Ino = r.key.dev, r.key.ino
	return s
}

// run is the reader goroutine.
func (r *reader) run(ctx context.Context) {
	defer r.t.wg.Done()
	r.timer = time.NewTimer(time.Hour)
	r.timer.Stop()
	finished, err := r.follow(ctx)
	path, _ := r.paths()
	switch {
	case finished:
		r.t.metrics.Rotations.Add(1)
		r.t.log.Info("finished rotated file", zap.String("path", path), zap.String("source", r.source), zap.Int64("offset", r.commitOff))
	case ctx.Err() != nil:
	default:
		r.t.log.Error("reading file failed, it will be reopened", zap.String("path", path), zap.String("source", r.source), zap.Error(err))
		r.t.retire(r, false, true)
	}
	r.timer.Stop()
	r.releaseBuf()
	_ = r.f.Close()
	r.t.metrics.FilesTailed.Add(-1)
}

// follow reads the file until it is finished (true), ctx is done or
// reading fails.
func (r *reader) follow(ctx context.Context) (bool, error) {
	if r.announce {
		if err := r.commit(ctx, nil, r.readOff); err != nil {
			return false, err
		}
	}
	for {
		if err := r.readToEOF(ctx); err != nil {
			return false, err
		}
		done, err := r.idle(ctx)
		if err != nil {
			return false, err
		}
		if done {
			if finished, err := r.finish(ctx); finished || err != nil {
				return finished, err
			}
		}
	}
}

// readToEOF reads and emits chunks until the file has no more data for
// now; complete lines read are all accepted when it returns nil.
func (r *reader) readToEOF(ctx context.Context) error {
	eof := false
	for {
		r.parse()
		if r.chunkFull() {
			if err := r.emit(ctx); err != nil {
				return err
			}
			continue
		}
		if eof {
			if len(r.refs) > 0 {
				return r.emit(ctx)
			}
			return nil
		}
		if err := r.makeRoom(ctx); err != nil {
			return err
		}
		n, err := r.read()
		if err != nil && !errors.Is(err, io.EOF) {
			path, _ := r.paths()
			return fmt.Errorf("read %s at offset %d: %w", path, r.readOff, err)
		}
		if n > 0 {
			r.lastGrowth = time.Now()
		}
		eof = err != nil || n == 0
	}
}

func (r *reader) chunkFull() bool {
	o := &r.t.opts
	return len(r.refs) >= o.MaxChunkLines || (len(r.refs) > 0 && r.pendingBytes >= o.MaxChunkBytes)
}

// read reads once into the free end of the buffer. While skipping the rest
// of a too-long line, bytes before its newline are dropped where they
// landed, so the line never occupies more than MaxLineSize bytes.
func (r *reader) read() (int, error) {
	free := r.buf[len(r.buf):cap(r.buf)]
	n, err := r.f.ReadAt(free, r.readOff)
	if n == 0 {
		return 0, err
	}
	r.readOff += int64(n)
	if !r.skipping {
		r.buf = r.buf[:len(r.buf)+n]
		return n, err
	}
	data := free[:n]
	i := bytes.IndexByte(data, '\n')
	if i < 0 {
		return n, err
	}
	newline := r.readOff - int64(n) + int64(i)
	r.refs = append(r.refs, lineRef{start: r.lineStart, end: len(r.buf), off: r.lineOff, tooLong: true})
	r.pendingBytes += len(r.buf) - r.lineStart
	r.pendingEnd = newline + 1
	start := len(r.buf)
	r.buf = r.buf[:start+n-i-1]
	copy(r.buf[start:], data[i+1:])
	r.lineStart, r.lineOff, r.scanPos = start, newline+1, start
	r.skipping = false
	return n, err
}

// parse turns the newlines found after scanPos into line references,
// stopping when the chunk is full. A partial line that cannot fit in
// MaxLineSize (plus a possible '\r') switches to skipping.
func (r *reader) parse() {
	if r.skipping {
		return
	}
	maxLine := r.t.opts.MaxLineSize
	for !r.chunkFull() {
		i := bytes.IndexByte(r.buf[r.scanPos:], '\n')
		if i < 0 {
			r.scanPos = len(r.buf)
			if len(r.buf)-r.lineStart > maxLine+1 {
				r.buf = r.buf[:r.lineStart+maxLine]
				r.scanPos = len(r.buf)
				r.skipping = true
			}
			return
		}
		newline := r.scanPos + i
		end := newline
		if end > r.lineStart && r.buf[end-1] == '\r' {
			end--
		}
		ref := lineRef{start: r.lineStart, end: end, off: r.lineOff}
		if end-r.lineStart > maxLine {
			ref.end, ref.tooLong = r.lineStart+maxLine, true
		}
		r.refs = append(r.refs, ref)
		r.pendingBytes += ref.end - ref.start
		next := r.lineOff + int64(newline+1-r.lineStart)
		r.pendingEnd = next
		r.lineStart, r.lineOff, r.scanPos = newline+1, next, newline+1
	}
}

// makeRoom ensures ReadBufferSize free bytes at the end of the buffer:
// by compacting, by growing it (up to a chunk plus a maximal line), or by
// emitting the pending lines.
func (r *reader) makeRoom(ctx context.Context) error {
	o := &r.t.opts
	if r.bufp == nil {
		r.acquireBuf()
	}
	maxCap := max(o.MaxChunkBytes, o.MaxLineSize+2) + o.ReadBufferSize
	for cap(r.buf)-len(r.buf) < o.ReadBufferSize {
		switch {
		case len(r.refs) == 0 && r.lineStart > 0:
			r.compact()
		case cap(r.buf) < maxCap && (len(r.refs) == 0 || r.pendingBytes < o.MaxChunkBytes):
			grown := make([]byte, len(r.buf), min(max(2*cap(r.buf), len(r.buf)+o.ReadBufferSize), maxCap))
			copy(grown, r.buf)
			r.buf = grown
		case len(r.refs) > 0:
			if err := r.emit(ctx); err != nil {
				return err
			}
		default:
			return fmt.Errorf("tail: no buffer room (len %d, cap %d)", len(r.buf), cap(r.buf))
		}
	}
	return nil
}

// compact moves the current partial line to the front of the buffer. It
// requires refs to be empty.
func (r *reader) compact() {
	n := copy(r.buf, r.buf[r.lineStart:])
	r.buf = r.buf[:n]
	r.scanPos -= r.lineStart
	r.lineStart = 0
}

func (r *reader) acquireBuf() {
	p, _ := r.t.bufs.Get().(*[]byte)
	if p == nil {
		b := make([]byte, 0, r.t.opts.ReadBufferSize)
		p = &b
	}
	r.bufp, r.buf = p, (*p)[:0]
	r.lineStart, r.scanPos = 0, 0
}

// releaseBuf returns the buffer of a reader holding no data to the pool,
// so idle files cost no buffer memory.
func (r *reader) releaseBuf() {
	if r.bufp == nil {
		return
	}
	*r.bufp = r.buf[:0]
	r.t.bufs.Put(r.bufp)
	r.bufp, r.buf = nil, nil
	r.lineStart, r.scanPos = 0, 0
	clear(r.lines[:cap(r.lines)])
}

func (r *reader) hasPartial() bool {
	return r.skipping || r.lineStart < len(r.buf)
}

// emit hands the pending lines to the Sink and drops them once accepted.
func (r *reader) emit(ctx context.Context) error {
	r.lines = r.lines[:0]
	for _, ref := range r.refs {
		r.lines = append(r.lines, Line{Offset: ref.off, Data: r.buf[ref.start:ref.end:ref.end], TooLong: ref.tooLong})
	}
	if err := r.commit(ctx, r.lines, r.pendingEnd); err != nil {
		return err
	}
	r.refs = r.refs[:0]
	r.pendingBytes = 0
	r.compact()
	return nil
}

// flushPartial emits the current partial line (or a too-long line still
// waiting for its newline) as a line ending at readOff.
func (r *reader) flushPartial(ctx context.Context) error {
	ref := lineRef{start: r.lineStart, end: len(r.buf), off: r.lineOff, tooLong: r.skipping}
	if !ref.tooLong && ref.end > ref.start && r.buf[ref.end-1] == '\r' {
		ref.end-- // the line policy: a last line's '\r' is not part of it
	}
	if ref.end-ref.start > r.t.opts.MaxLineSize {
		ref.end, ref.tooLong = ref.start+r.t.opts.MaxLineSize, true
	}
	r.refs = append(r.refs, ref)
	r.pendingBytes += ref.end - ref.start
	r.pendingEnd = r.readOff
	r.skipping = false
	r.lineStart, r.lineOff, r.scanPos = len(r.buf), r.readOff, len(r.buf)
	return r.emit(ctx)
}

// commit hands lines and the checkpoint end to the Sink, retrying until it
// accepts them, then forgets the stale sources.
func (r *reader) commit(ctx context.Context, lines []Line, end int64) error {
	if r.source == "" {
		if _, err := r.fp.verify(r.f, FingerprintSize, r.fpScratch[:]); err != nil && r.fp.n == 0 {
			return err
		}
		r.source = formatSource(r.key, r.fp)
	}
	path, realPath := r.paths()
	id := FileID{Dev: r.key.dev, Ino: r.key.ino, FingerprintLen: r.fp.n, Fingerprint: r.fp.sum, Path: path}
	if realPath != path {
		id.Target = realPath
	}
	r.meta = id.AppendMeta(r.meta[:0])
	r.chunk = Chunk{
		Source:     r.source,
		Input:      r.input,
		Path:       path,
		Lines:      lines,
		Checkpoint: buffer.Checkpoint{Key: r.source, Offset: end, Meta: r.meta},
	}
	if err := r.consume(ctx, &r.chunk); err != nil {
		return err
	}
	m := r.t.metrics
	m.LinesRead.Add(uint64(len(lines)))
	if end > r.commitOff {
		m.BytesRead.Add(uint64(end - r.commitOff))
	}
	for i := range lines {
		if lines[i].TooLong {
			m.TooLongLines.Add(1)
		}
	}
	r.commitOff = end
	r.publish()
	for len(r.stale) > 0 {
		if err := r.forget(ctx, r.stale[0]); err != nil {
			return err
		}
		r.stale = r.stale[1:]
	}
	return nil
}

// forget tells the Sink that source's checkpoint is no longer needed.
func (r *reader) forget(ctx context.Context, source string) error {
	path, _ := r.paths()
	r.chunk = Chunk{Source: source, Input: r.input, Path: path, Checkpoint: buffer.Checkpoint{Key: source, Offset: -1}}
	if err := r.consume(ctx, &r.chunk); err != nil {
		return err
	}
	r.t.log.Debug("forgot checkpoint", zap.String("source", source), zap.String("path", path))
	return nil
}

// consume calls the Sink until it accepts c or ctx is done, backing off
// (internal/retry: exponential, equal jitter, RetryInitial..RetryMax) in
// between and counting the time as back-pressure.
func (r *reader) consume(ctx context.Context, c *Chunk) error {
	o := &r.t.opts
	m := r.t.metrics
	var pausedAt time.Time
	bo := retry.Backoff{Initial: o.RetryInitial, Max: o.RetryMax}
	for {
		err := r.t.sink.Consume(ctx, c)
		if err == nil || ctx.Err() != nil {
			if !pausedAt.IsZero() {
				m.BackPressureNanos.Add(int64(time.Since(pausedAt)))
			}
			if err != nil {
				return fmt.Errorf("consume %s: %w", c.Source, ctx.Err())
			}
			return nil
		}
		m.SinkErrors.Add(1)
		wait := bo.Next()
		if errors.Is(err, buffer.ErrFull) {
			m.SinkFull.Add(1)
			r.t.log.Debug("buffer full, pausing", zap.String("path", c.Path), zap.Duration("backoff", wait))
		} else {
			r.t.log.Warn("sink failed, retrying", zap.String("path", c.Path), zap.Duration("backoff", wait), zap.Error(err))
		}
		if pausedAt.IsZero() {
			pausedAt = time.Now()
		}
		r.timer.Reset(wait)
		select {
		case <-ctx.Done():
			r.timer.Stop()
		case <-r.timer.C:
		}
	}
}

// idle waits at the end of the file until it grows (false, nil) or, for a
// file that left the globs, until RotateWait has passed (true, nil). It
// handles truncation and in-place rewrites, which restart the file at 0,
// and the FlushPartialAfter deadline.
func (r *reader) idle(ctx context.Context) (bool, error) {
	o := &r.t.opts
	for {
		fi, err := r.f.Stat()
		if err != nil {
			return false, fmt.Errorf("stat: %w", err)
		}
		size, mod := fi.Size(), fi.ModTime()
		changed := size != r.lastSize || !mod.Equal(r.lastMod)
		r.lastSize, r.lastMod = size, mod
		if _, nlink, ok := statKey(fi); ok {
			r.nlink = nlink
		}
		if size < r.readOff {
			return false, r.truncated(ctx, "size below the read offset")
		}
		if changed {
			ok, err := r.fp.verify(r.f, size, r.fpScratch[:])
			if err != nil {
				return false, err
			}
			if !ok {
				return false, r.truncated(ctx, "first bytes changed")
			}
			r.publish()
		}
		now := time.Now()
		if size > r.readOff {
			r.lastGrowth = now
			return false, nil
		}
		partial := r.hasPartial()
		wait := o.PollInterval
		if partial && o.FlushPartialAfter > 0 {
			left := o.FlushPartialAfter - now.Sub(r.lastGrowth)
			if left <= 0 {
				return false, r.flushPartial(ctx)
			}
			wait = min(wait, left)
		}
		if rotatedAt := r.rotated(); !rotatedAt.IsZero() {
			left := o.Inputs[r.input].RotateWait - now.Sub(later(rotatedAt, r.lastGrowth))
			if left <= 0 {
				return true, nil
			}
			wait = min(wait, left)
		}
		if !partial {
			r.releaseBuf()
		}
		r.timer.Reset(max(wait, time.Millisecond))
		select {
		case <-ctx.Done():
			r.timer.Stop()
			return false, ctx.Err()
		case <-r.wake:
			r.timer.Stop()
		case <-r.timer.C:
		}
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// truncated restarts the file at offset 0 as a new generation with a new
// Source; the old Source is forgotten after the new generation's first
// accepted chunk, so a crash in between leaves a checkpoint whose
// fingerprint no longer matches, which New treats as a rewritten file.
func (r *reader) truncated(ctx context.Context, reason string) error {
	if r.hasPartial() {
		if err := r.flushPartial(ctx); err != nil {
			return err
		}
	}
	path, _ := r.paths()
	r.t.metrics.Truncations.Add(1)
	r.t.log.Info("file truncated or rewritten, reading it from the start",
		zap.String("path", path), zap.String("reason", reason), zap.String("source", r.source), zap.Int64("offset", r.readOff))
	if r.source != "" {
		r.stale = append(r.stale, r.source)
	}
	r.source = ""
	r.fp = fingerprint{}
	r.readOff, r.commitOff, r.lineOff = 0, 0, 0
	if r.buf != nil {
		r.buf = r.buf[:0]
	}
	r.lineStart, r.scanPos = 0, 0
	r.lastSize = -1
	r.publish()
	return nil
}

// finish leaves a file that left the globs: its unterminated last line is
// delivered, the reader retired and then its checkpoint forgotten. Whether
// the file is left is decided (under the Tailer's lock) before anything is
// forgotten: a file matched again by then goes on with its checkpoint
// untouched (false), so no crash can find it without one. One matched
// again only after the decision is reopened once the forget is durable,
// resuming where this reader stopped and checkpointing that at once.
func (r *reader) finish(ctx context.Context) (bool, error) {
	if r.hasPartial() {
		if err := r.flushPartial(ctx); err != nil {
			return false, err
		}
	}
	for len(r.stale) > 0 {
		if err := r.forget(ctx, r.stale[0]); err != nil {
			return false, err
		}
		r.stale = r.stale[1:]
	}
	if !r.t.retire(r, true, r.nlink > 0) {
		return false, nil
	}
	if r.source == "" {
		return true, nil
	}
	err := r.forget(ctx, r.source)
	r.t.forgotten(r.key)
	return true, err
}

// lastLineStart returns the offset just past the last newline in the file,
// looking back at most maxLine+2 bytes: where start_at end begins so a
// line being written is not cut. Without a newline there, it returns 0 for
// a file that short, else size.
func lastLineStart(f io.ReaderAt, size int64, block, maxLine int) (int64, error) {
	buf := make([]byte, block)
	limit := max(0, size-int64(maxLine)-2)
	for end := size; end > limit; {
		start := max(limit, end-int64(block))
		n, err := f.ReadAt(buf[:end-start], start)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("find last line: %w", err)
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			return start + int64(i) + 1, nil
		}
		end = start
	}
	if limit == 0 {
		return 0, nil
	}
	return size, nil
}
