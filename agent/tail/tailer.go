package tail

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"

	"github.com/metership/metership/buffer"
)

// ErrRunning is returned by Run when the Tailer is running or has run: a
// Tailer runs once; build a new one (with the acknowledged checkpoints) to
// start again.
var ErrRunning = errors.New("tail: Run called more than once")

// errNotRotated says a file found next to a vanished file's path is not
// that file (its inode was reused).
var errNotRotated = errors.New("tail: not the rotated file")

// errFinishing says a file's previous reader is still forgetting its
// checkpoint: the file is opened by a later scan, once that is durable.
var errFinishing = errors.New("tail: file being left")

// maxRetired bounds the files remembered after their reader stopped.
const maxRetired = 1024

// scanDebounce delays a scan asked for by a directory event, so a burst of
// events (rename then create) costs one scan.
const scanDebounce = 5 * time.Millisecond

// Line is one line of a file.
type Line struct {
	// Offset is the file offset of the line's first byte.
	Offset int64
	// Data is the line without its newline and without a '\r' right
	// before the newline. It aliases the reader's buffer: copy it to keep
	// it past Consume.
	Data []byte
	// TooLong says the line was longer than MaxLineSize and Data holds
	// only its first MaxLineSize bytes.
	TooLong bool
}

// Chunk is a run of consecutive lines of one file and the checkpoint that
// covers them. Lines and Checkpoint.Meta are only valid during Consume.
type Chunk struct {
	// Source is the file generation's stable identity (see the package
	// documentation); it equals Checkpoint.Source.
	Source string
	// Path is the path the file was last matched by; a file renamed out
	// of the globs keeps the path it had (its new name is unknown), one
	// found rotated at startup has the name it was found under.
	Path string
	// Input is the index in Options.Inputs of the input following the
	// file.
	Input int
	// Lines may be empty: the chunk then only moves the checkpoint (the
	// start position of start_at end, or the forgetting of a source).
	Lines []Line
	// Checkpoint is what the buffer must persist in the same commit as
	// the lines: Offset is just past the last byte this chunk consumed.
	// Offset < 0 means the source is finished (its file was rotated away
	// or rewritten): the buffer forgets the checkpoint.
	Checkpoint buffer.Checkpoint
}

// Sink receives chunks. Consume returns nil only once the chunk's lines
// and checkpoint are durable; the tailer then advances. On any error the
// tailer keeps its position and retries the same chunk with backoff (a
// Sink that made its first lines durable, with a checkpoint just past
// them, before failing removes them from c.Lines, so the retry does not
// send them again):
// buffer.ErrFull is back-pressure, not failure, and nothing is dropped.
// Consume is called from one goroutine per file, concurrently across
// files, and must honour ctx.
type Sink interface {
	Consume(ctx context.Context, c *Chunk) error
}

// FileState describes a followed file for metrics, readiness and
// checkpoint garbage collection.
type FileState struct {
	// Source is empty until the file's first chunk.
	Source string
	Path   string
	Dev    uint64
	Ino    uint64
	// Offset is the checkpointed offset: everything before it is durable.
	Offset int64
	// Size is the file size at the last check.
	Size int64
	// RotatedAt is when the file was found no longer matched by the globs
	// (renamed away or deleted); zero while it is matched.
	RotatedAt time.Time
	// LastRead is when data was last read from the file.
	LastRead time.Time
}

// Tailer follows the files matched by a set of globs and hands their lines
// to a Sink. Run's goroutine owns the scan; each file has one reader
// goroutine that owns its file state.
type Tailer struct {
	opts    Options
	sink    Sink
	log     *zap.Logger
	metrics *Metrics
	running atomic.Bool
	bufs    sync.Pool // *[]byte read buffers of idle readers
	wg      sync.WaitGroup
	first   bool // the scan in progress is the first one

	mu         sync.Mutex // guards everything below
	readers    map[fileKey]*reader
	byRealPath map[string]*reader
	retired    map[fileKey]retiredFile
	restored   map[fileKey][]restoredCheckpoint
	undecoded  []buffer.Checkpoint // restored checkpoints with unreadable Meta

	// Owned by Run's goroutine.
	watcher   *fsnotify.Watcher
	watched   map[string]bool
	seen      map[fileKey]bool
	failing   map[string]bool // paths that could not be opened, warned about
	scanTimer *time.Timer
	scanArmed bool
}

// retiredFile is a file whose reader stopped while the file still existed
// (renamed out of the globs, or a read error): found again, it resumes.
type retiredFile struct {
	source string
	offset int64
	fp     fingerprint
	at     time.Time
	// forgetting is set while the reader that left the file forgets its
	// checkpoint, forgot once it has: a reader resuming the file must
	// then checkpoint its position at once.
	forgetting, forgot bool
}

// restoredCheckpoint is a checkpoint from Options.Checkpoints, decoded.
type restoredCheckpoint struct {
	cp buffer.Checkpoint
	id FileID
}

// New validates opts and returns a Tailer that hands lines to sink.
func New(opts Options, sink Sink) (*Tailer, error) {
	if sink == nil {
		return nil, fmt.Errorf("%w: sink is nil", ErrInvalidOptions)
	}
	if !inodesSupported {
		return nil, fmt.Errorf("tail: inode numbers unavailable: %w", errors.ErrUnsupported)
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	t := &Tailer{
		opts:       o,
		sink:       sink,
		log:        o.Logger,
		metrics:    o.Metrics,
		readers:    make(map[fileKey]*reader),
		byRealPath: make(map[string]*reader),
		retired:    make(map[fileKey]retiredFile),
		restored:   make(map[fileKey][]restoredCheckpoint),
		watched:    make(map[string]bool),
		seen:       make(map[fileKey]bool),
		failing:    make(map[string]bool),
	}
	for _, cp := range o.Checkpoints {
		if !strings.HasPrefix(cp.Key, SourcePrefix) || cp.Offset < 0 {
			continue
		}
		id, err := DecodeMeta(cp.Meta)
		if err != nil {
			t.log.Warn("ignoring checkpoint with unreadable meta", zap.String("source", cp.Key), zap.Error(err))
			t.undecoded = append(t.undecoded, cloneCheckpoint(cp))
			continue
		}
		k := fileKey{dev: id.Dev, ino: id.Ino}
		t.restored[k] = append(t.restored[k], restoredCheckpoint{cp: cloneCheckpoint(cp), id: id})
	}
	return t, nil
}

func cloneCheckpoint(cp buffer.Checkpoint) buffer.Checkpoint {
	cp.Meta = slices.Clone(cp.Meta)
	return cp
}

// Run follows the files until ctx is done, then stops every reader and
// returns nil once none is inside Consume. It returns ErrRunning if called
// twice.
func (t *Tailer) Run(ctx context.Context) error {
	if !t.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	readCtx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		t.wg.Wait()
		if t.watcher != nil {
			_ = t.watcher.Close()
		}
	}()

	var events chan fsnotify.Event
	var watchErrs chan error
	if !t.opts.DisableNotify {
		w, err := fsnotify.NewWatcher()
		if err != nil {
			t.log.Warn("inotify unavailable, polling only", zap.Error(err))
		} else {
			t.watcher = w
			events, watchErrs = w.Events, w.Errors
		}
	}
	t.scanTimer = time.NewTimer(time.Hour)
	t.scanTimer.Stop()
	defer t.scanTimer.Stop()

	t.first = true
	t.scan(readCtx)
	t.recoverRotated(readCtx)
	t.first = false
	t.updateWatches()
	var startup backlog
	if t.opts.OnCaughtUp != nil {
		startup = t.checkCaughtUp(t.startupBacklog())
	}

	ticker := time.NewTicker(t.opts.RefreshInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			t.scanAndWatch(readCtx)
			startup = t.checkCaughtUp(startup)
		case <-t.scanTimer.C:
			t.scanArmed = false
			t.scanAndWatch(readCtx)
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			t.handleEvent(ev)
		case err, ok := <-watchErrs:
			if !ok {
				watchErrs = nil
				continue
			}
			t.log.Warn("inotify error, rescanning", zap.Error(err))
			t.wakeAll()
			t.scanAndWatch(readCtx)
		}
	}
}

func (t *Tailer) scanAndWatch(ctx context.Context) {
	t.scan(ctx)
	t.updateWatches()
}

// handleEvent wakes the reader of a written file and schedules a scan when
// a directory changes.
func (t *Tailer) handleEvent(ev fsnotify.Event) {
	if ev.Has(fsnotify.Write) {
		t.mu.Lock()
		r := t.byRealPath[ev.Name]
		t.mu.Unlock()
		if r != nil {
			r.poke()
		}
	}
	if ev.Has(fsnotify.Create) || ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
		if (ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename)) && t.watched[ev.Name] {
			delete(t.watched, ev.Name) // the kernel dropped the watch
		}
		if !t.scanArmed {
			t.scanArmed = true
			t.scanTimer.Reset(scanDebounce)
		}
	}
}

func (t *Tailer) wakeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, r := range t.readers {
		r.poke()
	}
}

// scan evaluates the globs, starts a reader for each file identity not yet
// followed, updates the paths of followed files and marks the readers of
// files no longer matched as rotated.
func (t *Tailer) scan(ctx context.Context) {
	clear(t.seen)
	for input := range t.opts.Inputs {
		t.scanInput(ctx, input)
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	for key, r := range t.readers {
		if !t.seen[key] {
			r.markRotated(now)
		}
	}
}

// scanInput evaluates one input's globs. A file another input (or another
// glob) already matched in this scan is skipped: whatever globs match a
// file, one reader follows it.
func (t *Tailer) scanInput(ctx context.Context, input int) {
	for _, pattern := range t.opts.Inputs[input].Paths {
		matches, err := filepath.Glob(pattern)
		if err != nil {
			continue // validated in New
		}
		for _, path := range matches {
			if t.excluded(input, path) {
				continue
			}
			fi, err := os.Stat(path)
			if err != nil || !fi.Mode().IsRegular() {
				continue
			}
			key, _, ok := statKey(fi)
			if !ok || t.seen[key] {
				continue
			}
			t.seen[key] = true
			t.mu.Lock()
			r := t.readers[key]
			t.mu.Unlock()
			if r != nil {
				t.matched(r, path)
				continue
			}
			if k, ok := t.open(ctx, path, input, false); ok && k != key {
				t.seen[k] = true // the path was replaced between stat and open
			}
		}
	}
}

// matched records that r's file is matched by the globs at path.
func (t *Tailer) matched(r *reader, path string) {
	r.mu.Lock()
	moved := r.path != path
	wasRotated := !r.rotatedAt.IsZero()
	r.path = path
	r.rotatedAt = time.Time{}
	oldReal := r.realPath
	r.mu.Unlock()
	if wasRotated {
		t.log.Info("file matched again", zap.String("path", path))
	}
	if !moved {
		return
	}
	real := resolve(path)
	t.mu.Lock()
	if t.byRealPath[oldReal] == r {
		delete(t.byRealPath, oldReal)
	}
	t.byRealPath[real] = r
	t.mu.Unlock()
	r.mu.Lock()
	r.realPath = real
	r.mu.Unlock()
}

func (t *Tailer) excluded(input int, path string) bool {
	for _, p := range t.opts.Inputs[input].Exclude {
		if ok, _ := filepath.Match(p, path); ok {
			return true
		}
		if !strings.ContainsRune(p, filepath.Separator) {
			if ok, _ := filepath.Match(p, filepath.Base(path)); ok {
				return true
			}
		}
	}
	return false
}

// resolve returns path with symbolic links resolved, or path itself.
func resolve(path string) string {
	if real, err := filepath.EvalSymlinks(path); err == nil {
		return real
	}
	return path
}

// open starts a reader for the file at path unless its identity is
// already followed. rotated marks a file found outside the globs. It
// returns the file's key and whether it is (now) followed.
func (t *Tailer) open(ctx context.Context, path string, input int, rotated bool) (fileKey, bool) {
	f, err := os.Open(path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			t.warnOnce(path, "cannot open file", err)
		}
		return fileKey{}, false
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		_ = f.Close()
		return fileKey{}, false
	}
	key, _, ok := statKey(fi)
	if !ok {
		_ = f.Close()
		return fileKey{}, false
	}
	t.mu.Lock()
	if r := t.readers[key]; r != nil {
		t.mu.Unlock()
		_ = f.Close()
		if !rotated {
			t.matched(r, path)
		}
		return key, true
	}
	now := time.Now()
	r := newReader(t, f, key, input, path, resolve(path), now)
	if err := t.plan(r, fi.Size(), rotated); err != nil {
		t.mu.Unlock()
		_ = f.Close()
		if !errors.Is(err, errNotRotated) && !errors.Is(err, errFinishing) {
			t.warnOnce(path, "cannot read file", err)
		}
		return fileKey{}, false
	}
	delete(t.failing, path)
	if rotated {
		r.rotatedAt = now
	}
	r.publish()
	t.readers[key] = r
	t.byRealPath[r.realPath] = r
	t.mu.Unlock()

	t.metrics.FilesOpened.Add(1)
	t.metrics.FilesTailed.Add(1)
	t.log.Info("following file", zap.String("path", path), zap.String("input", t.opts.Inputs[input].Name), zap.String("source", r.source),
		zap.Int64("offset", r.readOff), zap.Bool("rotated", rotated))
	t.wg.Add(1)
	go r.run(ctx)
	return key, true
}

// warnOnce logs a failure to open path once, not at every scan.
func (t *Tailer) warnOnce(path, msg string, err error) {
	if t.failing[path] {
		return
	}
	if len(t.failing) >= maxRetired {
		clear(t.failing)
	}
	t.failing[path] = true
	t.log.Warn(msg+" (not repeated while it fails)", zap.String("path", path), zap.Error(err))
}

// plan decides where r starts: where a stopped reader of the same file
// left off, at a matching restored checkpoint, at the end (start_at end,
// first scan only) or at 0. A restored checkpoint for the same inode whose
// fingerprint no longer matches was left by an earlier file (the inode was
// reused, or the file was truncated and rewritten): the file is new since
// that checkpoint, so it is read from 0 and the stale checkpoint is
// forgotten. A file found outside the globs (recovering) is only followed
// if a checkpoint matches it; else plan returns errNotRotated. Called with
// t.mu held.
func (t *Tailer) plan(r *reader, size int64, recovering bool) error {
	if ret, ok := t.retired[r.key]; ok {
		if ret.forgetting {
			return errFinishing
		}
		delete(t.retired, r.key)
		fp := ret.fp
		ok, err := fp.verify(r.f, size, r.fpScratch[:])
		if err != nil {
			return err
		}
		if ok && size >= ret.offset {
			r.resume(ret.source, ret.offset, fp)
			r.announce = ret.forgot && ret.source != ""
			return nil
		}
	}
	if cands := t.restored[r.key]; len(cands) > 0 {
		best, bestFP, stale, err := matchCheckpoint(cands, r.f, size, r.fpScratch[:])
		if err != nil {
			return err
		}
		r.stale = stale
		if best == nil && recovering {
			r.stale = nil
			return errNotRotated
		}
		delete(t.restored, r.key)
		if best != nil {
			r.resume(best.cp.Key, best.cp.Offset, bestFP)
			return nil
		}
		t.log.Info("file replaced since its checkpoint, reading from the start",
			zap.String("path", r.path), zap.Strings("stale", r.stale))
		_, err = r.fp.verify(r.f, size, r.fpScratch[:])
		return err
	}
	if _, err := r.fp.verify(r.f, size, r.fpScratch[:]); err != nil {
		return err
	}
	if t.first && t.opts.Inputs[r.input].StartAt == StartEnd && size > 0 {
		off, err := lastLineStart(r.f, size, t.opts.ReadBufferSize, t.opts.MaxLineSize)
		if err != nil {
			return err
		}
		r.resume("", off, r.fp)
		r.announce = off > 0
	}
	return nil
}

// recoverRotated looks for files that were rotated while the tailer was
// not running: a restored checkpoint that matched nothing in the globs may
// belong to a file renamed next to its old path with a suffix (app.log ->
// app.log.1, 0.log -> 0.log.20240101-120000). Such a file is followed from
// its checkpoint to its end, then left.
func (t *Tailer) recoverRotated(ctx context.Context) {
	type place struct{ dir, base string }
	t.mu.Lock()
	var places []place
	for _, cands := range t.restored {
		for _, c := range cands {
			places = append(places, place{filepath.Dir(c.id.Path), filepath.Base(c.id.Path)})
			if c.id.Target != "" {
				places = append(places, place{filepath.Dir(c.id.Target), filepath.Base(c.id.Target)})
			}
		}
	}
	t.mu.Unlock()
	slices.SortFunc(places, func(a, b place) int { return strings.Compare(a.dir+"\x00"+a.base, b.dir+"\x00"+b.base) })
	places = slices.Compact(places)
	listed := map[string][]fs.DirEntry{}
	for _, p := range places {
		entries, ok := listed[p.dir]
		if !ok {
			entries, _ = os.ReadDir(p.dir)
			listed[p.dir] = entries
		}
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), p.base) || e.Name() == p.base || !e.Type().IsRegular() {
				continue
			}
			fi, err := e.Info()
			if err != nil {
				continue
			}
			key, _, ok := statKey(fi)
			if !ok {
				continue
			}
			t.mu.Lock()
			_, wanted := t.restored[key]
			t.mu.Unlock()
			if wanted {
				t.open(ctx, filepath.Join(p.dir, e.Name()), t.inputOf(p.dir, p.base), true)
			}
		}
	}
}

// inputOf returns the first input whose globs match the path a file had
// before it was rotated (dir/base), or 0.
func (t *Tailer) inputOf(dir, base string) int {
	path := filepath.Join(dir, base)
	for i, in := range t.opts.Inputs {
		for _, p := range in.Paths {
			if ok, _ := filepath.Match(p, path); ok && !t.excluded(i, path) {
				return i
			}
		}
	}
	return 0
}

// updateWatches keeps inotify watches on the directories that matter: the
// fixed part of each glob, and the directories of followed files and of
// their symbolic-link targets.
func (t *Tailer) updateWatches() {
	if t.watcher == nil {
		return
	}
	want := make(map[string]bool)
	for _, in := range t.opts.Inputs {
		for _, p := range in.Paths {
			want[globBase(p)] = true
		}
	}
	t.mu.Lock()
	for _, r := range t.readers {
		r.mu.Lock()
		if r.rotatedAt.IsZero() {
			want[filepath.Dir(r.path)] = true
			want[filepath.Dir(r.realPath)] = true
		}
		r.mu.Unlock()
	}
	t.mu.Unlock()
	for dir := range want {
		if t.watched[dir] {
			continue
		}
		if err := t.watcher.Add(dir); err == nil {
			t.watched[dir] = true
		}
	}
	for dir := range t.watched {
		if !want[dir] {
			_ = t.watcher.Remove(dir)
			delete(t.watched, dir)
		}
	}
}

// globBase returns the longest leading directory of pattern without
// wildcards.
func globBase(pattern string) string {
	dir := filepath.Dir(pattern)
	for strings.ContainsAny(dir, `*?[\`) {
		dir = filepath.Dir(dir)
	}
	return dir
}

// retire removes r, whose file is finished or failed, from the followed
// set. keep remembers where r stopped so the file resumes there if it is
// matched again. It returns false, leaving r followed, if the file was
// matched again in the meantime.
func (t *Tailer) retire(r *reader, finished, keep bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	r.mu.Lock()
	rotatedAt, realPath := r.rotatedAt, r.realPath
	r.mu.Unlock()
	if finished && rotatedAt.IsZero() {
		return false
	}
	if t.readers[r.key] == r {
		delete(t.readers, r.key)
	}
	if t.byRealPath[realPath] == r {
		delete(t.byRealPath, realPath)
	}
	if keep {
		if len(t.retired) >= maxRetired {
			var oldest fileKey
			var at time.Time
			for k, v := range t.retired {
				if at.IsZero() || v.at.Before(at) {
					oldest, at = k, v.at
				}
			}
			delete(t.retired, oldest)
		}
		t.retired[r.key] = retiredFile{source: r.source, offset: r.commitOff, fp: r.fp, at: time.Now(), forgetting: finished && r.source != ""}
	}
	return true
}

// forgotten records that the reader that left the file key has forgotten
// its checkpoint (or given up doing so): a scan may open the file again.
func (t *Tailer) forgotten(key fileKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ret, ok := t.retired[key]; ok && ret.forgetting {
		ret.forgetting, ret.forgot = false, true
		t.retired[key] = ret
	}
}

// Stats returns the state of every followed file, sorted by path.
func (t *Tailer) Stats() []FileState {
	t.mu.Lock()
	out := make([]FileState, 0, len(t.readers))
	for _, r := range t.readers {
		out = append(out, r.state())
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b FileState) int { return strings.Compare(a.Path, b.Path) })
	return out
}

// Unclaimed returns the restored checkpoints that no file has matched so
// far (files deleted, or rotated out of reach, while the tailer was not
// running), including those with unreadable Meta. The agent may forget
// them after a grace period; the tailer never does.
func (t *Tailer) Unclaimed() []buffer.Checkpoint {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]buffer.Checkpoint, 0, len(t.restored)+len(t.undecoded))
	for _, cands := range t.restored {
		for _, c := range cands {
			out = append(out, cloneCheckpoint(c.cp))
		}
	}
	for _, cp := range t.undecoded {
		out = append(out, cloneCheckpoint(cp))
	}
	slices.SortFunc(out, func(a, b buffer.Checkpoint) int { return strings.Compare(a.Key, b.Key) })
	return out
}
