package ship

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/gzip"

	"github.com/metership/metership/buffer"
)

// Compression and format names accepted by EncoderOptions (the values of the
// output.compression and output.format settings).
const (
	CompressionGzip = "gzip"
	CompressionNone = "none"
	FormatNDJSON    = "ndjson"
	FormatJSON      = "json"
)

// Content types of encoded objects.
const (
	ContentTypeNDJSON = "application/x-ndjson"
	ContentTypeJSON   = "application/json"
)

// DefaultGzipLevel is a fast level: NDJSON meter records still compress
// about 8:1 at it, and encoding stays far cheaper than the upload.
const DefaultGzipLevel = gzip.BestSpeed

// ErrEncoderOptions is wrapped by NewEncoder errors.
var ErrEncoderOptions = errors.New("invalid encoder options")

// ErrFrameType is returned by Encode for a frame that is neither a record
// nor a dead letter nor buffer bookkeeping.
var ErrFrameType = errors.New("unexpected frame type")

// stagingFlush is how much uncompressed data a group collects before handing
// it to the compressor; batching amortises the per-Write cost of the gzip
// writer over many small records.
const stagingFlush = 32 << 10

// maxOpenGroups bounds the groups of one Encode that stream into their own
// compressor at once (each holds a gzip writer, ~800 KB at level 1, and a
// staging buffer), so memory does not grow with the number of key
// partitions in a segment (days of a backfill). When a segment's frames
// reach another partition with that many open, the least recently used
// group is finished early; frames of a finished partition that come later
// are copied into a spill arena and appended to its object after the
// pass. Time-ordered input (a backfill) never spills.
const maxOpenGroups = 4

// spillChunk is the size of the spill arena's chunks; chunks, unlike one
// growing slice, never hold twice the data while they are copied.
const spillChunk = 256 << 10

// Reuse bounds: buffers larger than these are left to the garbage collector
// instead of being kept for the next segment.
const (
	maxPooledBody    = 16 << 20
	maxPooledStaging = 1 << 20
	maxPooledItems   = 8
)

// FrameSource yields the frames of one sealed segment in order; it is what
// *buffer.Segment provides. Frame.Data is only valid during the callback.
type FrameSource interface {
	Frames(fn func(buffer.Frame) error) error
}

// Object is one encoded object ready for upload.
type Object struct {
	// Key is relative to the destination: record keys go under the
	// destination prefix, dead-letter keys under its dead-letter root.
	Key string
	// Body is the encoded (usually gzipped) content. It belongs to the
	// caller until it passes the object to Encoder.Release.
	Body []byte
	// Records counts the records (or dead letters) in Body.
	Records int
	// DeadLetter marks an object of dead letters.
	DeadLetter      bool
	ContentType     string
	ContentEncoding string
	// MinTime and MaxTime bound the frames' times, Unix ms.
	MinTime, MaxTime int64

	// What Key was rendered from, for CollisionKey: the format, the
	// partition, the $UUID value and $INDEX; rekeys counts fresh keys.
	kf        *KeyFormat
	partition string
	id        string
	seq       uint64
	rekeys    int
}

// EncoderOptions configure an Encoder. Zero values take defaults.
type EncoderOptions struct {
	// Key renders record keys; default DefaultKeyFormat with no prefix.
	Key *KeyFormat
	// Compression is "gzip" (default) or "none".
	Compression string
	// Format is "ndjson" (default, one record per line) or "json" (one JSON
	// array per object).
	Format string
	// DeadLetterKey renders dead-letter keys; default
	// DefaultDeadLetterKeyFormat with no prefix.
	DeadLetterKey *KeyFormat
	// GzipLevel is 1 (fastest) to 9 (smallest), or -1 for gzip's default
	// trade-off; 0 means DefaultGzipLevel.
	GzipLevel int
}

// Encoder turns segments into objects. It is safe for concurrent use.
type Encoder struct {
	key, deadLetterKey *KeyFormat
	gzipLevel          int // 0 when not compressing
	jsonArray          bool
	contentType        string
	contentEncoding    string

	mu       sync.Mutex // guards the free lists below
	freeGzip []*gzip.Writer
	freeBody [][]byte
	freeStag [][]byte

	// peakOpen is the most groups one Encode held open at once (tests).
	peakOpen atomic.Int64
}

// NewEncoder validates opts and returns an Encoder.
func NewEncoder(opts EncoderOptions) (*Encoder, error) {
	e := &Encoder{key: opts.Key, deadLetterKey: opts.DeadLetterKey}
	var err error
	if e.key == nil {
		if e.key, err = CompileKeyFormat("", DefaultKeyFormat, ""); err != nil {
			return nil, err
		}
	}
	if e.deadLetterKey == nil {
		if e.deadLetterKey, err = CompileKeyFormat("", DefaultDeadLetterKeyFormat, ""); err != nil {
			return nil, err
		}
	}
	switch opts.Format {
	case "", FormatNDJSON:
		e.contentType = ContentTypeNDJSON
	case FormatJSON:
		e.jsonArray = true
		e.contentType = ContentTypeJSON
	default:
		return nil, fmt.Errorf("%w: format %q not supported; use %q or %q", ErrEncoderOptions, opts.Format, FormatNDJSON, FormatJSON)
	}
	switch opts.Compression {
	case "", CompressionGzip:
		e.contentEncoding = "gzip"
		e.gzipLevel = opts.GzipLevel
		if e.gzipLevel == 0 {
			e.gzipLevel = DefaultGzipLevel
		}
		if e.gzipLevel != gzip.DefaultCompression && (e.gzipLevel < gzip.BestSpeed || e.gzipLevel > gzip.BestCompression) {
			return nil, fmt.Errorf("%w: gzip level %d out of range; use 1..9 or -1", ErrEncoderOptions, opts.GzipLevel)
		}
	case CompressionNone:
	default:
		return nil, fmt.Errorf("%w: compression %q not supported; use %q or %q", ErrEncoderOptions, opts.Compression, CompressionGzip, CompressionNone)
	}
	return e, nil
}

// group accumulates the frames of one future object.
type group struct {
	deadLetter bool
	partition  string
	used       int64  // frame number of the group's last frame, for LRU
	closed     bool   // finished early (evicted): its body so far is in done
	done       []byte // the body of a closed group
	spill      int    // >= 0: index of a closed group's later frames in the spill arena
	body       bodyWriter
	gz         *gzip.Writer // nil without compression
	staging    []byte       // uncompressed bytes not yet given to gz
	records    int
	minT, maxT int64
}

// bodyWriter appends to a byte slice; it is the gzip writer's sink.
type bodyWriter struct{ b []byte }

func (w *bodyWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// groupIndex finds the group of a frame: a one-entry memo of the previous
// frame's cache key in front of the partition map, so the common case of a
// segment with a single partition costs a division and a comparison.
type groupIndex struct {
	kf     *KeyFormat
	groups map[string]*group
	last   *group
	lastCK partitionCacheKey
}

// spillArena holds the frames that reached groups after they were
// closed, in frame order.
type spillArena struct {
	chunks [][]byte
	recs   []spilledRecord
	groups []*group // by spill index
}

type spilledRecord struct {
	spill  int32 // the group's spill index
	chunk  int32
	off, n uint32 // within the chunk; a frame is far below 4 GiB
	ts     int64
}

func (a *spillArena) add(g *group, ts int64, data []byte) {
	if g.spill < 0 {
		g.spill = len(a.groups)
		a.groups = append(a.groups, g)
	}
	last := len(a.chunks) - 1
	if last < 0 || len(a.chunks[last])+len(data) > cap(a.chunks[last]) {
		a.chunks = append(a.chunks, make([]byte, 0, max(spillChunk, len(data))))
		last++
	}
	c := a.chunks[last]
	a.recs = append(a.recs, spilledRecord{spill: int32(g.spill), chunk: int32(last), off: uint32(len(c)), n: uint32(len(data)), ts: ts})
	a.chunks[last] = append(c, data...)
}

// evict finishes the least recently used open group: its body so far goes
// to done, and its later frames, if any, to the spill arena.
func (e *Encoder) evict(open []*group) ([]*group, error) {
	lru := 0
	for i, g := range open {
		if g.used < open[lru].used {
			lru = i
		}
	}
	g := open[lru]
	open = slices.Delete(open, lru, lru+1)
	body, err := e.finish(g)
	if err != nil {
		return open, err
	}
	g.closed, g.done = true, body
	return open, nil
}

// reopen rebuilds a closed group's stream so that its spilled frames can
// follow: a fresh compressor gets the content of done (gunzipped; a JSON
// array without its closing bracket), then add continues after it.
func (e *Encoder) reopen(g *group, zr **gzip.Reader) error {
	raw := g.done
	if e.gzipLevel != 0 {
		var err error
		if *zr == nil {
			*zr, err = gzip.NewReader(bytes.NewReader(g.done))
		} else {
			err = (*zr).Reset(bytes.NewReader(g.done))
		}
		if err == nil {
			raw, err = io.ReadAll(*zr)
		}
		if err != nil {
			return fmt.Errorf("reopen %s: %w", g.partition, err)
		}
	}
	if e.jsonArray {
		raw = raw[:len(raw)-1]
	}
	e.openGroup(g)
	if g.gz != nil {
		if _, err := g.gz.Write(raw); err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
	} else {
		g.body.b = append(g.body.b, raw...)
	}
	e.Release([]Object{{Body: g.done}})
	g.done, g.closed = nil, false
	return nil
}

// encodeSpilled appends to each closed group that has spilled frames
// those frames, in the order they arrived, one group at a time. A
// counting sort by group keeps each group's frames in order.
func (e *Encoder) encodeSpilled(a *spillArena) error {
	start := make([]int, len(a.groups)+1)
	for _, r := range a.recs {
		start[r.spill+1]++
	}
	for i := 1; i < len(start); i++ {
		start[i] += start[i-1]
	}
	order := make([]int32, len(a.recs))
	next := slices.Clone(start[:len(a.groups)])
	for i, r := range a.recs {
		order[next[r.spill]] = int32(i)
		next[r.spill]++
	}
	var zr *gzip.Reader
	for si, g := range a.groups {
		if err := e.reopen(g, &zr); err != nil {
			e.discard([]*group{g})
			return err
		}
		e.notePeak(1) // the streamed groups are finished by now
		for _, ri := range order[start[si]:start[si+1]] {
			r := &a.recs[ri]
			if err := e.add(g, r.ts, a.chunks[r.chunk][r.off:r.off+r.n]); err != nil {
				e.discard([]*group{g})
				return err
			}
		}
		body, err := e.finish(g)
		if err != nil {
			return err
		}
		g.closed, g.done = true, body
	}
	return nil
}

func (e *Encoder) notePeak(open int) {
	for {
		cur := e.peakOpen.Load()
		if int64(open) <= cur || e.peakOpen.CompareAndSwap(cur, int64(open)) {
			return
		}
	}
}

// Encode reads src in one pass and returns its objects sorted by key: one
// per record partition and one per dead-letter partition. Keys fill $UUID
// with ObjectUUID(keyID, seq, partition) (for dead letters the partition
// name is prefixed with "\x00D", so their ids never equal a record
// object's) and $INDEX with seq. An empty segment yields no objects.
//
// At most maxOpenGroups partitions are compressed at once (see there), so
// memory is bounded by the segment's size however many partitions it
// holds. The objects are the same for the same segment, bytes included.
//
// The bodies are freshly owned by the caller; handing the objects back with
// Release after the upload lets the next Encode reuse their memory.
func (e *Encoder) Encode(keyID string, seq uint64, src FrameSource) ([]Object, error) {
	records := groupIndex{kf: e.key, groups: make(map[string]*group, 1)}
	deadLetters := groupIndex{kf: e.deadLetterKey, groups: make(map[string]*group)}
	var all, open []*group
	var spill spillArena
	var frames int64
	fail := func(err error) ([]Object, error) {
		for _, g := range all {
			if g.closed {
				e.Release([]Object{{Body: g.done}})
				g.done = nil
			} else {
				e.recycle(g, true)
			}
		}
		return nil, fmt.Errorf("ship: encode segment %d: %w", seq, err)
	}
	err := src.Frames(func(f buffer.Frame) error {
		var gi *groupIndex
		switch f.Type {
		case buffer.FrameRecord:
			gi = &records
		case buffer.FrameDeadLetter:
			gi = &deadLetters
		case buffer.FrameTag, buffer.FrameCommit, buffer.FrameAggregate:
			return nil
		default:
			return fmt.Errorf("%w %q", ErrFrameType, byte(f.Type))
		}
		ck := gi.kf.cacheKey(f.Time, f.Tag)
		g := gi.last
		if g == nil || ck != gi.lastCK {
			p := gi.kf.Partition(f.Time, f.Tag)
			g = gi.groups[p]
			if g == nil {
				if len(open) == maxOpenGroups {
					var err error
					if open, err = e.evict(open); err != nil {
						return err
					}
				}
				g = &group{deadLetter: gi == &deadLetters, partition: p, spill: -1}
				e.openGroup(g)
				open = append(open, g)
				e.notePeak(len(open))
				gi.groups[p] = g
				all = append(all, g)
			}
			gi.last = g
			// The memo keeps the tag; Frame.Tag may alias the segment.
			if ck.tag != gi.lastCK.tag {
				ck.tag = strings.Clone(ck.tag)
			}
			gi.lastCK = ck
		}
		if g.closed {
			spill.add(g, f.Time, f.Data)
			return nil
		}
		frames++
		g.used = frames
		return e.add(g, f.Time, f.Data)
	})
	if err != nil {
		return fail(err)
	}
	for len(open) > 0 {
		if open, err = e.evict(open); err != nil {
			return fail(err)
		}
	}
	if len(spill.groups) > 0 {
		if err := e.encodeSpilled(&spill); err != nil {
			return fail(err)
		}
	}
	objs := make([]Object, len(all))
	for i, g := range all {
		objs[i] = e.object(g, g.done, keyID, seq)
		g.done = nil
	}
	slices.SortFunc(objs, func(a, b Object) int { return strings.Compare(a.Key, b.Key) })
	return objs, nil
}

// object names a finished group's body.
func (e *Encoder) object(g *group, body []byte, keyID string, seq uint64) Object {
	kf, name := e.key, g.partition
	if g.deadLetter {
		// Dead-letter and record partitions come from different
		// formats and could render alike; keep their ids apart.
		kf, name = e.deadLetterKey, "\x00D"+g.partition
	}
	id := ObjectUUID(keyID, seq, name)
	return Object{
		Key:             kf.Key(g.partition, id, seq),
		Body:            body,
		Records:         g.records,
		DeadLetter:      g.deadLetter,
		ContentType:     e.contentType,
		ContentEncoding: e.contentEncoding,
		MinTime:         g.minT,
		MaxTime:         g.maxT,
		kf:              kf,
		partition:       g.partition,
		id:              id,
		seq:             seq,
	}
}

// openGroup gives g a body and, when compressing, a staging buffer and a
// compressor, from the free lists where possible.
func (e *Encoder) openGroup(g *group) {
	e.mu.Lock()
	g.body.b = pop(&e.freeBody)
	if e.gzipLevel != 0 {
		g.staging = pop(&e.freeStag)
		g.gz = pop(&e.freeGzip)
	}
	e.mu.Unlock()
	if e.gzipLevel != 0 {
		if g.staging == nil {
			g.staging = make([]byte, 0, stagingFlush+4096)
		}
		if g.gz == nil {
			// The level was validated by NewEncoder.
			g.gz, _ = gzip.NewWriterLevel(&g.body, e.gzipLevel)
		} else {
			g.gz.Reset(&g.body)
		}
	}
}

// add appends one frame's data to its group.
func (e *Encoder) add(g *group, ts int64, data []byte) error {
	if g.records == 0 {
		g.minT, g.maxT = ts, ts
	} else {
		g.minT, g.maxT = min(g.minT, ts), max(g.maxT, ts)
	}
	dst := &g.body.b
	if g.gz != nil {
		dst = &g.staging
	}
	switch {
	case !e.jsonArray:
		*dst = append(append(*dst, data...), '\n')
	case g.records == 0:
		*dst = append(append(*dst, '['), data...)
	default:
		*dst = append(append(*dst, ','), data...)
	}
	g.records++
	if g.gz != nil && len(g.staging) >= stagingFlush {
		return g.flush()
	}
	return nil
}

// flush hands the staged bytes to the compressor.
func (g *group) flush() error {
	if _, err := g.gz.Write(g.staging); err != nil {
		return fmt.Errorf("gzip: %w", err)
	}
	g.staging = g.staging[:0]
	return nil
}

// finish completes a group's body and recycles its compressor.
func (e *Encoder) finish(g *group) ([]byte, error) {
	if e.jsonArray {
		if g.gz != nil {
			g.staging = append(g.staging, ']')
		} else {
			g.body.b = append(g.body.b, ']')
		}
	}
	if g.gz != nil {
		if err := g.flush(); err != nil {
			e.discard([]*group{g})
			return nil, err
		}
		if err := g.gz.Close(); err != nil {
			e.discard([]*group{g})
			return nil, fmt.Errorf("gzip: %w", err)
		}
	}
	body := g.body.b
	e.recycle(g, false)
	return body, nil
}

// discard recycles everything of unfinished groups.
func (e *Encoder) discard(groups []*group) {
	for _, g := range groups {
		e.recycle(g, true)
	}
}

// recycle returns a group's compressor and staging buffer to the free lists,
// and its body too when withBody is set.
func (e *Encoder) recycle(g *group, withBody bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if g.gz != nil {
		g.gz.Reset(nil)
		push(&e.freeGzip, g.gz)
		g.gz = nil
	}
	if g.staging != nil && cap(g.staging) <= maxPooledStaging {
		push(&e.freeStag, g.staging[:0])
	}
	g.staging = nil
	if withBody && g.body.b != nil && cap(g.body.b) <= maxPooledBody {
		push(&e.freeBody, g.body.b[:0])
	}
	g.body.b = nil
}

// Release hands the bodies of objs back for reuse by later Encode calls. The
// caller must not touch the bodies afterwards. Calling it is optional (the
// garbage collector takes unreleased bodies); it may be called from any
// goroutine.
func (e *Encoder) Release(objs []Object) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range objs {
		if b := objs[i].Body; b != nil && cap(b) <= maxPooledBody {
			push(&e.freeBody, b[:0])
		}
		objs[i].Body = nil
	}
}

func pop[T any](list *[]T) T {
	var zero T
	n := len(*list)
	if n == 0 {
		return zero
	}
	v := (*list)[n-1]
	(*list)[n-1] = zero
	*list = (*list)[:n-1]
	return v
}

func push[T any](list *[]T, v T) {
	if len(*list) < maxPooledItems {
		*list = append(*list, v)
	}
}
