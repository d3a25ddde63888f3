package tail

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/metership/metership/buffer"
	"github.com/metership/metership/pipeline"
	"github.com/metership/metership/record"
)

// PipelineSink is the agent's Sink: it turns chunks into durable batches
// of a pipeline, under the pipeline's line policy (Ingester.AddLine) and
// its split rule. Consume runs on one goroutine per file, so each call
// borrows its own Ingester.
type PipelineSink struct {
	p       *pipeline.Pipeline
	tags    []string // by Chunk.Input
	pool    sync.Pool
	metrics *Metrics
}

// NewPipelineSink returns a Sink into p; tags are the batches' tags by
// Chunk.Input. Metrics counts its waits for buffer space.
func NewPipelineSink(p *pipeline.Pipeline, tags []string, m *Metrics) (*PipelineSink, error) {
	if m == nil {
		m = new(Metrics)
	}
	s := &PipelineSink{p: p, tags: tags, metrics: m}
	// Fail at start, not at the first line, if the ingester cannot be built.
	in, err := s.newIngester()
	if err != nil {
		return nil, err
	}
	s.pool.Put(in)
	return s, nil
}

// Consume commits the chunk's lines and its checkpoint: as one batch, or,
// when the batch becomes Full first (dead letters escape to up to six
// bytes a byte), as several, each with the checkpoint just past its last
// line. Lines go through the pipeline's line policy (AddLine).
func (s *PipelineSink) Consume(ctx context.Context, c *Chunk) error {
	in, err := s.ingester()
	if err != nil {
		return err
	}
	defer s.pool.Put(in)
	in.SetTag(s.tags[c.Input])
	lines := c.Lines
	for i := range lines {
		l := &lines[i]
		in.AddLine(l.Data, l.TooLong, record.Origin{ID: c.Source, Offset: l.Offset}, c.Path)
		if i+1 < len(lines) && in.Full() {
			in.SetCheckpoint(c.Checkpoint.Key, lines[i+1].Offset, c.Checkpoint.Meta)
			if err := s.commit(ctx, in, c); err != nil {
				return err
			}
			// Durable: the tailer's retry of this chunk, if a later piece
			// fails, must not send these lines again (Sink allows this).
			c.Lines = lines[i+1:]
		}
	}
	in.SetCheckpoint(c.Checkpoint.Key, c.Checkpoint.Offset, c.Checkpoint.Meta)
	return s.commit(ctx, in, c)
}

// commit makes the batch durable. A full buffer is back-pressure: the
// batch is held until an upload frees room (a blind retry by the reader
// would resume up to its RetryMax late, and would re-send pieces of the
// chunk already durable). On error the tailer keeps its position (the
// buffer's checkpoint is the last durable piece's) and re-sends the rest.
func (s *PipelineSink) commit(ctx context.Context, in *pipeline.Ingester, c *Chunk) error {
	err := in.Commit()
	if errors.Is(err, buffer.ErrFull) {
		s.metrics.SinkFull.Add(1)
		err = in.CommitWait(ctx)
	}
	if err != nil {
		in.Discard()
		return fmt.Errorf("%s: %w", c.Path, err)
	}
	return nil
}

func (s *PipelineSink) ingester() (*pipeline.Ingester, error) {
	if in, _ := s.pool.Get().(*pipeline.Ingester); in != nil {
		return in, nil
	}
	return s.newIngester()
}

// newIngester makes an Ingester whose waits for buffer space count as the
// tail readers' back-pressure.
func (s *PipelineSink) newIngester() (*pipeline.Ingester, error) {
	in, err := s.p.NewIngester("")
	if err != nil {
		return nil, err
	}
	in.OnPause(func(d time.Duration) { s.metrics.BackPressureNanos.Add(int64(d)) })
	return in, nil
}
