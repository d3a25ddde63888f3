package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/metership/metership/buffer"
	"github.com/metership/metership/record"
)

// groupCounter is a Counter that records each segment's Merge and each
// Sync, and checks that no segment is acknowledged before a Sync covers
// its count.
type groupCounter struct {
	buf *buffer.Buffer

	mu         sync.Mutex
	merged     []uint64   // since the last successful Sync
	syncs      [][]uint64 // what each successful Sync covered
	failSyncs  int        // the next Syncs that fail
	violations []string
}

type groupCount struct {
	c   *groupCounter
	seq uint64
}

func (c *groupCounter) BeginCount(seq uint64) SegmentCount { return &groupCount{c, seq} }
func (c *groupCounter) NewBatchCount() BatchCount          { return nil }

func (c *groupCounter) Sync() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, seq := range c.merged {
		if !c.buf.Live(seq) {
			c.violations = append(c.violations, fmt.Sprintf("segment %d acknowledged before its count was written", seq))
		}
	}
	if c.failSyncs > 0 {
		c.failSyncs--
		return errors.New("ledger disk full")
	}
	if len(c.merged) > 0 {
		c.syncs = append(c.syncs, c.merged)
		c.merged = nil
	}
	return nil
}

func (c *groupCounter) state() (merged []uint64, syncs [][]uint64, violations []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.merged), slices.Clone(c.syncs), slices.Clone(c.violations)
}

func (g *groupCount) Add(buffer.Frame) {}
func (g *groupCount) Close()           {}
func (g *groupCount) Merge(ctx context.Context) error {
	g.c.mu.Lock()
	defer g.c.mu.Unlock()
	g.c.merged = append(g.c.merged, g.seq)
	return nil
}

// fillSegments commits one record per segment and seals each.
func fillSegments(t *testing.T, p *Pipeline, n int) []uint64 {
	t.Helper()
	in, err := p.NewIngester("app")
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		line := fmt.Sprintf(`{"customerId":"c","meterApiName":"m","meterValue":1,"meterTimeInMillis":1654560000000,"uniqueId":"u%d"}`, i)
		in.Add([]byte(line), record.Origin{ID: "s", Offset: int64(i)}, "src")
		if err := in.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := p.Buffer().Seal(); err != nil {
			t.Fatal(err)
		}
	}
	var seqs []uint64
	for seq := uint64(0); seq < 100; seq++ {
		if p.Buffer().Live(seq) {
			seqs = append(seqs, seq)
		}
	}
	if len(seqs) != n {
		t.Fatalf("%d segments sealed, want %d", len(seqs), n)
	}
	return seqs
}

// waitUntil polls cond until it holds, failing the test after 10 s with
// what() as the reason.
func waitUntil(t *testing.T, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(what())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitMerged waits until the counter has merged want segments (in any
// order) since its last Sync.
func waitMerged(t *testing.T, c *groupCounter, want []uint64) {
	t.Helper()
	var merged []uint64
	waitUntil(t, func() bool {
		merged, _, _ = c.state()
		slices.Sort(merged)
		return slices.Equal(merged, want)
	}, func() string { return fmt.Sprintf("merged %v, want %v", merged, want) })
}

// startRun runs p until the returned stop, which also closes it.
func startRun(t *testing.T, p *Pipeline) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	return func() {
		t.Helper()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// drain drains p, failing the test if it takes over 10 s.
func drain(t *testing.T, p *Pipeline) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
}

// Counts of several segments are made durable by one Sync, and a segment
// is acknowledged only after the Sync that covers its count: shut down
// before it, the segments stay in the buffer; a failing Sync is retried
// and acknowledges nothing until it succeeds.
func TestCountsGroupedBeforeAck(t *testing.T) {
	root := t.TempDir()
	cfg := testConfig(t, filepath.Join(root, "out"))
	open := func() (*Pipeline, *groupCounter) {
		c := &groupCounter{}
		p, err := newTestPipeline(t, cfg, Options{Counter: c}, testParts{})
		if err != nil {
			t.Fatal(err)
		}
		c.buf = p.Buffer()
		p.ackDelay = time.Hour // only Drain (or a full group) writes
		return p, c
	}
	p, c := open()
	seqs := fillSegments(t, p, 3)
	stop := startRun(t, p)
	waitMerged(t, c, seqs)
	stop()
	if _, syncs, _ := c.state(); len(syncs) != 0 {
		t.Fatalf("synced %v without Drain", syncs)
	}
	if n := p.Stats().SegmentsShipped.Load(); n != 0 {
		t.Fatalf("%d segments acknowledged before their counts were written", n)
	}

	// Restarted: the segments were not acknowledged, so they ship and are
	// counted again (the real counter ignores a second count).
	p, c = open()
	if st := p.Buffer().Stats(); st.SegmentsSealed != 3 {
		t.Fatalf("after the shutdown the buffer holds %+v, want the 3 segments", st)
	}
	c.failSyncs = 1
	stop = startRun(t, p)
	waitMerged(t, c, seqs)
	drain(t, p)
	stop()
	_, syncs, violations := c.state()
	for _, v := range violations {
		t.Error(v)
	}
	if len(syncs) != 1 {
		t.Fatalf("syncs %v, want one covering %v", syncs, seqs)
	}
	slices.Sort(syncs[0])
	if !slices.Equal(syncs[0], seqs) {
		t.Fatalf("the sync covered %v, want %v", syncs[0], seqs)
	}
	if n := p.Stats().SegmentsShipped.Load(); n != 3 {
		t.Fatalf("%d segments acknowledged, want 3", n)
	}
	if st := p.Buffer().Stats(); st.SegmentsSealed != 0 {
		t.Fatalf("buffer after Drain: %+v", st)
	}
	if objs := readObjects(t, filepath.Join(root, "out")); len(objs) != 3 {
		t.Fatalf("%d objects, want 3", len(objs))
	}
}

// Without metering too, shipped segments are acknowledged in groups: one
// state write for several, at the latest when Drain waits.
func TestAcksGrouped(t *testing.T) {
	root := t.TempDir()
	out := filepath.Join(root, "out")
	cfg := testConfig(t, out)
	p, err := newTestPipeline(t, cfg, Options{}, testParts{})
	if err != nil {
		t.Fatal(err)
	}
	p.ackDelay = time.Hour
	fillSegments(t, p, 3)
	stop := startRun(t, p)
	defer stop()
	waitUntil(t, func() bool { return len(readObjects(t, out)) == 3 }, func() string { return "segments not uploaded" })
	if n, st := p.Stats().SegmentsShipped.Load(), p.Buffer().Stats(); n != 0 || st.SegmentsSealed != 3 {
		t.Fatalf("before Drain: %d acknowledged, buffer %+v; want none yet", n, st)
	}
	drain(t, p)
	if n, st := p.Stats().SegmentsShipped.Load(), p.Buffer().Stats(); n != 3 || st.SegmentsSealed != 0 {
		t.Fatalf("after Drain: %d acknowledged, buffer %+v", n, st)
	}
}

// A buffer at least half full is not kept waiting for a group: a segment
// shipped then is acknowledged at once, freeing its space.
func TestAcksAtOnceWhenBufferHalfFull(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Buffer.SegmentSize = 64 << 10
	cfg.Buffer.MaxSize = 128 << 10
	p, err := newTestPipeline(t, cfg, Options{}, testParts{})
	if err != nil {
		t.Fatal(err)
	}
	p.ackDelay = time.Hour
	in, err := p.NewIngester("app")
	if err != nil {
		t.Fatal(err)
	}
	for seg := range 2 { // two segments of ~40 KiB: over half of max_size
		for i := range 250 {
			line := fmt.Sprintf(`{"customerId":"customer-%04d","meterApiName":"api-calls","meterValue":1,"meterTimeInMillis":1654560000000,"uniqueId":"u-%d-%d"}`, i, seg, i)
			in.Add([]byte(line), record.Origin{ID: "s", Offset: int64(seg*1000 + i)}, "src")
		}
		if err := in.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := p.Buffer().Seal(); err != nil {
			t.Fatal(err)
		}
	}
	if st := p.Buffer().Stats(); st.BytesOnDisk < int64(cfg.Buffer.MaxSize)/2 {
		t.Fatalf("buffer holds %d bytes, want at least half of %d", st.BytesOnDisk, cfg.Buffer.MaxSize)
	}
	stop := startRun(t, p)
	defer stop()
	// Only an Ack made at once brings the buffer under half full: a group
	// would wait for ackDelay, an hour.
	waitUntil(t, func() bool { return p.Buffer().Stats().BytesOnDisk < int64(cfg.Buffer.MaxSize)/2 },
		func() string { return fmt.Sprintf("buffer still half full: %+v", p.Buffer().Stats()) })
}

// A sealed segment damaged on disk while the pipeline runs does not stop
// it: a copy is set aside, the segment's intact batches ship, and so do
// the segments after it.
func TestDamagedSegmentSalvaged(t *testing.T) {
	root := t.TempDir()
	out := filepath.Join(root, "out")
	cfg := testConfig(t, out)
	p, err := newTestPipeline(t, cfg, Options{}, testParts{})
	if err != nil {
		t.Fatal(err)
	}
	in, err := p.NewIngester("app")
	if err != nil {
		t.Fatal(err)
	}
	add := func(id string, seal bool) {
		in.Add([]byte(`{"customerId":"c","meterApiName":"m","meterValue":1,"meterTimeInMillis":1654560000000,"uniqueId":"`+id+`"}`), record.Origin{ID: "s"}, "src")
		if err := in.Commit(); err != nil {
			t.Fatal(err)
		}
		if seal {
			if err := p.Buffer().Seal(); err != nil {
				t.Fatal(err)
			}
		}
	}
	add("intact", false)
	add("damaged", true) // the first segment: two batches
	add("next-1", true)
	add("next-2", true)
	// Damage the first segment's second batch.
	first := filepath.Join(cfg.Buffer.Dir, fmt.Sprintf("%020d.seg", 1))
	f, err := os.OpenFile(first, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	if _, err := f.WriteAt([]byte{0xff, 0xff, 0xff}, st.Size()-40); err != nil {
		t.Fatal(err)
	}
	f.Close()

	stop := startRun(t, p)
	drain(t, p)
	stop()
	var shipped []string
	for _, body := range readObjects(t, out) {
		for _, line := range strings.Split(strings.TrimSpace(body), "\n") {
			var r struct{ UniqueID string }
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatal(err)
			}
			shipped = append(shipped, r.UniqueID)
		}
	}
	slices.Sort(shipped)
	if want := []string{"intact", "next-1", "next-2"}; !slices.Equal(shipped, want) {
		t.Fatalf("shipped %v, want %v", shipped, want)
	}
	if _, err := os.Stat(first + ".bad"); err != nil {
		t.Fatalf("damaged segment not set aside: %v", err)
	}
	var m dto.Metric
	if err := p.metrics.SegmentsDamaged.Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Fatalf("metership_buffer_segments_damaged_total = %v (%v)", m.GetCounter().GetValue(), err)
	}
}
