package pipeline

import (
	"context"
	"errors"
	"io"

	"github.com/metership/metership/record"
)

// streamBatchBytes is the batch size of one-shot streams: big batches mean
// few fsyncs, and a crash only repeats work that was never acknowledged.
const streamBatchBytes = 4 << 20

// Stream is one complete input read by IngestStream (a file handed to
// metership ship, or its stdin).
type Stream struct {
	R io.Reader
	// Start is the offset of R's first byte in the input.
	Start int64
	// Source is the records' record.Origin ID (their uniqueIds derive from
	// it and each line's offset) and, with Checkpoint, the checkpoint's.
	Source string
	// Name names the input in dead letters.
	Name string
	// Tag is the batches' tag ($TAG in keys).
	Tag string
	// Checkpoint commits, with each batch, the checkpoint Source at the
	// offset just past its last line, with Meta.
	Checkpoint bool
	Meta       []byte
	// Forget are checkpoints to forget with the first batch.
	Forget []string
}

// StreamResult counts what IngestStream made durable.
type StreamResult struct {
	Accepted, Rejected int64
}

// IngestStream reads s line by line under the line policy (LineReader,
// Ingester.AddLine) into durable batches, committed on Full (the one split
// rule) and at the end, and returns once every line is durable or a
// commit failed (it then stops reading: the rest would be read for
// nothing). Parsing overlaps commits: the reader fills one Ingester while
// a single goroutine commits the previous one, in order, so a checkpoint
// is never durable before the records it covers.
func (p *Pipeline) IngestStream(ctx context.Context, s Stream) (StreamResult, error) {
	lr := NewLineReader(s.R, s.Start, int(p.cfg.Records.MaxLineSize))
	c, err := p.newCommitter(ctx, s.Tag)
	if err != nil {
		return StreamResult{}, err
	}
	in := c.ingester()
	if in != nil {
		for _, src := range s.Forget {
			in.SetCheckpoint(src, -1, nil)
		}
	}
	flush := func() {
		if s.Checkpoint {
			in.SetCheckpoint(s.Source, lr.Offset(), s.Meta)
		}
		c.commit(in)
		in = c.ingester()
	}
	for in != nil {
		line, off, tooLong, err := lr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			_ = c.close()
			return c.res, err
		}
		in.AddLine(line, tooLong, record.Origin{ID: s.Source, Offset: off}, s.Name)
		if in.Full() {
			flush()
		}
	}
	if in != nil {
		flush()
	}
	err = c.close()
	return c.res, err
}

// committer commits a stream's batches on one goroutine, in order.
type committer struct {
	ctx    context.Context
	queue  chan *Ingester
	free   chan *Ingester
	failed chan struct{} // closed when a commit fails: stop reading
	done   chan struct{}
	err    error // set by the commit goroutine before failed is closed
	res    StreamResult
}

func (p *Pipeline) newCommitter(ctx context.Context, tag string) (*committer, error) {
	c := &committer{ctx: ctx, queue: make(chan *Ingester, 1), free: make(chan *Ingester, 2), failed: make(chan struct{}), done: make(chan struct{})}
	for i := 0; i < 2; i++ {
		in, err := p.NewIngester(tag)
		if err != nil {
			return nil, err
		}
		in.SetBatchLimit(streamBatchBytes)
		c.free <- in
	}
	go c.loop()
	return c, nil
}

func (c *committer) loop() {
	defer close(c.done)
	for in := range c.queue {
		a, rj := in.Counts()
		switch {
		case c.err != nil:
			in.Discard() // read before the reader saw the failure
		default:
			if err := in.CommitWait(c.ctx); err != nil {
				c.err = err
				close(c.failed)
				in.Discard()
			} else {
				c.res.Accepted += int64(a)
				c.res.Rejected += int64(rj)
			}
		}
		c.free <- in
	}
}

// ingester returns an empty Ingester, or nil once a commit failed.
func (c *committer) ingester() *Ingester {
	select {
	case <-c.failed:
		return nil
	default:
	}
	select {
	case in := <-c.free:
		return in
	case <-c.failed:
		return nil
	}
}

func (c *committer) commit(in *Ingester) { c.queue <- in }

// close waits for every queued commit and returns the first error.
func (c *committer) close() error {
	close(c.queue)
	<-c.done
	return c.err
}
