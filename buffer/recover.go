package buffer

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Open opens (creating if needed) the buffer in opts.Dir and recovers it:
// it takes the directory lock, loads meta and the state file, scans every
// segment keeping frames up to the last intact commit frame, seals a
// segment left active by a crash, and moves corrupt data aside. What it did
// is in Stats().Recovered.
func Open(opts Options) (*Buffer, error) {
	if opts.Dir == "" {
		return nil, errors.New("buffer: Options.Dir is empty")
	}
	if opts.MaxSize <= 0 {
		opts.MaxSize = DefaultMaxSize
	}
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = DefaultSyncInterval
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	switch opts.Sync {
	case SyncAlways, SyncInterval, SyncNever:
	default:
		return nil, fmt.Errorf("buffer: unknown sync policy %d", opts.Sync)
	}
	if err := os.MkdirAll(opts.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("buffer: create %s: %w", opts.Dir, err)
	}
	lock, err := lockDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	b := &Buffer{
		opts:        opts,
		dir:         opts.Dir,
		lockFile:    lock,
		ops:         withFaults(osFileOps(), opts.Faults),
		changed:     make(chan struct{}),
		failedCh:    make(chan struct{}),
		checkpoints: checkpointMap{},
	}
	b.cond = sync.NewCond(&b.mu)
	if err := b.recover(); err != nil {
		_ = lock.Close() // recovery failed; its error is the one to report
		return nil, err
	}
	if opts.Sync == SyncInterval {
		b.stop = make(chan struct{})
		b.loop.Add(1)
		go b.syncLoop()
	}
	return b, nil
}

// segmentFile is a segment found in the directory.
type segmentFile struct {
	seq  uint64
	name string
	ext  string // openExt or sealedExt
}

// recover rebuilds the in-memory state from the directory. It runs before
// the Buffer is shared, so it does not take mu.
func (b *Buffer) recover() error {
	m, ok, err := readMeta(b.dir)
	if err != nil {
		return err
	}
	metaChanged := false
	if !ok {
		m = meta{Version: 1, AgentID: b.opts.AgentID, NextSeq: 1}
		if m.AgentID == "" {
			m.AgentID = uuid.NewString()
		}
		metaChanged = true
	}
	if b.opts.AgentID != "" && m.AgentID != b.opts.AgentID {
		m.AgentID = b.opts.AgentID
		metaChanged = true
	}

	entries, err := os.ReadDir(b.dir)
	if err != nil {
		return fmt.Errorf("buffer: list %s: %w", b.dir, err)
	}
	var files []segmentFile
	var maxSeq uint64
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, tmpSuffix) {
			// An atomic write that never reached its rename.
			if err := os.Remove(filepath.Join(b.dir, name)); err != nil {
				return fmt.Errorf("buffer: remove leftover %s: %w", name, err)
			}
			continue
		}
		seq, ext, ok := parseSegmentName(name)
		if !ok || e.IsDir() {
			continue
		}
		maxSeq = max(maxSeq, seq)
		if ext == openExt || ext == sealedExt {
			files = append(files, segmentFile{seq: seq, name: name, ext: ext})
		}
	}
	// Ascending seq; for a (never expected) duplicate seq the .seg first.
	slices.SortFunc(files, func(x, y segmentFile) int {
		if c := cmp.Compare(x.seq, y.seq); c != 0 {
			return c
		}
		return cmp.Compare(y.ext, x.ext)
	})
	if m.NextSeq <= maxSeq {
		m.NextSeq = maxSeq + 1
		metaChanged = true
	}
	if m.InstanceID == "" {
		// A new directory, or one last written by a version without
		// instance ids: segments already here keep their agent-id keys.
		m.InstanceID = uuid.NewString()
		m.KeysFrom = m.NextSeq
		metaChanged = true
	}
	if metaChanged {
		if err := writeMeta(b.dir, m); err != nil {
			return err
		}
	}
	b.agentID = m.AgentID
	b.instance = m.instanceMeta
	b.nextSeq = m.NextSeq

	asOf, err := readState(b.dir, b.checkpoints)
	if err != nil {
		return err
	}
	buf := make([]byte, readBufSize)
	var empty []string
	for i, sf := range files {
		if i > 0 && files[i-1].seq == sf.seq {
			if err := b.moveAside(sf.name); err != nil {
				return err
			}
			continue
		}
		seg, drop, err := b.recoverSegment(sf, asOf, &buf)
		if err != nil {
			return err
		}
		if drop != "" {
			empty = append(empty, drop)
		}
		if seg != nil {
			b.sealed = append(b.sealed, seg)
			b.diskSize += seg.Size
			b.report.Segments++
		}
	}
	if err := syncDir(b.dir); err != nil {
		return fmt.Errorf("buffer: sync %s: %w", b.dir, err)
	}
	// The checkpoints now cover every surviving segment: record them before
	// removing segments whose only content was checkpoint commits.
	b.stateGen++
	if err := b.persistState(b.stateGen, encodeState(b.nextSeq, b.checkpoints.sorted())); err != nil {
		return err
	}
	for _, p := range empty {
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("buffer: remove empty segment: %w", err)
		}
	}
	if len(empty) > 0 {
		if err := syncDir(b.dir); err != nil {
			return fmt.Errorf("buffer: sync %s: %w", b.dir, err)
		}
	}
	return nil
}

// recoverSegment scans one segment file. It keeps the frames up to the last
// intact commit frame and truncates the rest; a corrupt .seg is first copied
// aside, a corrupt header moves the whole file aside. Commit frames of
// segments with seq >= asOf are applied to the checkpoints. It returns the
// sealed segment, or the path to remove when nothing committed holds
// records or dead letters.
func (b *Buffer) recoverSegment(sf segmentFile, asOf uint64, buf *[]byte) (seg *Segment, drop string, err error) {
	path := filepath.Join(b.dir, sf.name)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, "", fmt.Errorf("buffer: open %s: %w", path, err)
	}
	defer func() {
		if f != nil {
			_ = f.Close() // recovery fsyncs what it repairs before this
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return nil, "", fmt.Errorf("buffer: stat %s: %w", path, err)
	}
	size := fi.Size()
	if sf.ext == openExt && size < segHeaderSize {
		// Created but its header never reached the disk: nothing was
		// committed in it, since a commit is fsync'd with the whole file.
		b.report.TruncatedBytes += size
		return nil, path, nil
	}
	var hdr [segHeaderSize]byte
	seq, created, herr := uint64(0), time.Time{}, error(nil)
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		herr = err
	} else {
		seq, created, herr = decodeSegHeader(hdr[:])
	}
	if herr != nil || seq != sf.seq {
		_ = f.Close() // unreadable header: the file is moved aside
		f = nil
		return nil, "", b.moveAside(sf.name)
	}

	r := frameReader{r: f, limit: size, pos: segHeaderSize, buf: *buf}
	defer func() { *buf = r.buf }()
	sc, err := b.scanFrames(&r, path, seq >= asOf)
	if err != nil {
		return nil, "", err
	}
	committed, records, dead := sc.committed, sc.records, sc.dead
	if err := b.dropTail(f, sf, path, size, sc); err != nil {
		return nil, "", err
	}
	if records+dead == 0 {
		return nil, path, nil
	}
	if sf.ext == openExt || size != committed {
		// Make the recovered content durable before it is handed out as
		// sealed; an intact .seg was fsync'd when it was sealed.
		if err := f.Sync(); err != nil {
			return nil, "", fmt.Errorf("buffer: sync %s: %w", path, err)
		}
	}
	if sf.ext == openExt {
		sealedPath := filepath.Join(b.dir, segmentName(seq, sealedExt))
		if err := os.Rename(path, sealedPath); err != nil {
			return nil, "", fmt.Errorf("buffer: seal recovered %s: %w", path, err)
		}
		path = sealedPath
	}
	return &Segment{
		Seq:         seq,
		Size:        committed,
		Created:     created,
		Records:     records,
		DeadLetters: dead,
		FirstTime:   time.UnixMilli(sc.minT),
		LastTime:    time.UnixMilli(sc.maxT),
		path:        path,
		pool:        &b.readBufs,
	}, "", nil
}

// segmentScan is what scanFrames found in a segment: the frames up to the
// last intact commit frame are committed, the ones after it are not.
type segmentScan struct {
	committed  int64 // offset just past the last intact commit frame
	records    int   // committed records
	dead       int   // committed dead letters
	minT, maxT int64 // committed records' and dead letters' time range
	tailFrames int   // frames after the last commit frame
}

// scanFrames reads a segment's frames from r (just past its header) up to
// its end or its first corrupt frame, applying commit frames to the
// checkpoints when replay is set.
func (b *Buffer) scanFrames(r *frameReader, path string, replay bool) (segmentScan, error) {
	sc := segmentScan{committed: segHeaderSize}
	var tailRecords, tailDead int
	var tailMin, tailMax int64
scan:
	for {
		t, ts, data, _, err := r.next()
		if errors.Is(err, io.EOF) || errors.Is(err, ErrCorrupt) {
			break
		}
		if err != nil {
			return sc, fmt.Errorf("buffer: read %s: %w", path, err)
		}
		switch t {
		case FrameRecord, FrameDeadLetter:
			if tailRecords+tailDead == 0 || ts < tailMin {
				tailMin = ts
			}
			if tailRecords+tailDead == 0 || ts > tailMax {
				tailMax = ts
			}
			if t == FrameRecord {
				tailRecords++
			} else {
				tailDead++
			}
		case FrameCommit:
			// Validate before applying, so a malformed commit applies
			// nothing; it then ends the segment like a corrupt frame.
			if decodeCheckpoints(data, func([]byte, int64, []byte) {}) != nil {
				break scan
			}
			if replay {
				_ = decodeCheckpoints(data, b.checkpoints.applyDecoded)
			}
			if tailRecords+tailDead > 0 {
				if sc.records+sc.dead == 0 || tailMin < sc.minT {
					sc.minT = tailMin
				}
				if sc.records+sc.dead == 0 || tailMax > sc.maxT {
					sc.maxT = tailMax
				}
			}
			sc.records += tailRecords
			sc.dead += tailDead
			tailRecords, tailDead, sc.tailFrames = 0, 0, 0
			sc.committed = r.pos
			continue
		}
		sc.tailFrames++
	}
	return sc, nil
}

// dropTail cuts off what follows a segment's last commit frame; the
// damaged tail of a sealed segment is first copied aside.
func (b *Buffer) dropTail(f *os.File, sf segmentFile, path string, size int64, sc segmentScan) error {
	committed := sc.committed
	if dropped := size - committed; dropped > 0 {
		if sf.ext == sealedExt {
			// A sealed segment was fsync'd whole; damage in it is kept.
			bad := sf.name + badExt
			if err := copyFile(path, filepath.Join(b.dir, bad)); err != nil {
				return fmt.Errorf("buffer: copy corrupt %s aside: %w", path, err)
			}
			b.report.MovedAside = append(b.report.MovedAside, bad)
		}
		if err := f.Truncate(committed); err != nil {
			return fmt.Errorf("buffer: truncate %s: %w", path, err)
		}
		b.report.TruncatedBytes += dropped
		b.report.DroppedFrames += sc.tailFrames
	}
	return nil
}

// moveAside renames a segment whose header does not verify to *.bad; its
// bytes are kept for inspection, never deleted.
func (b *Buffer) moveAside(name string) error {
	bad := name + badExt
	if err := os.Rename(filepath.Join(b.dir, name), filepath.Join(b.dir, bad)); err != nil {
		return fmt.Errorf("buffer: move corrupt %s aside: %w", name, err)
	}
	b.report.MovedAside = append(b.report.MovedAside, bad)
	return nil
}
