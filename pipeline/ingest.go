package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/metership/metership/buffer"
	"github.com/metership/metership/record"
)

// maxBatchBytes keeps one commit small enough to never be ErrTooLarge and
// to bound memory; sources commit when Full reports true.
const maxBatchBytes = 1 << 20

// Ingester turns input lines into one durable batch at a time. It is not
// safe for concurrent use: each input goroutine (a tailed file, a Fluent
// Bit flush) uses its own, so the hot path allocates nothing.
type Ingester struct {
	p       *Pipeline
	parser  *record.Parser
	batch   buffer.Batch
	scratch []byte
	limit   int
	// maxLine is records.max_line_size; tooLong is the reason of lines
	// over it (TooLongReason).
	maxLine int
	tooLong error
	// count sums the batch's records for metering as they are parsed; nil
	// when metering is off.
	count BatchCount
	// onPause is told of CommitWait's waits (OnPause).
	onPause func(time.Duration)

	accepted, rejected int
}

// NewIngester returns an Ingester whose batches carry tag ($TAG in keys).
func (p *Pipeline) NewIngester(tag string) (*Ingester, error) {
	parser, err := record.NewParser(record.Options{
		Format:      p.cfg.Records.Format,
		Fields:      p.cfg.Records.Fields,
		MaxLineSize: int(p.cfg.Records.MaxLineSize),
	})
	if err != nil {
		return nil, err
	}
	maxLine := int(p.cfg.Records.MaxLineSize)
	if maxLine <= 0 {
		maxLine = record.DefaultMaxLineSize
	}
	in := &Ingester{p: p, parser: parser, limit: p.BatchLimit(maxBatchBytes), maxLine: maxLine,
		tooLong: &record.Error{Reason: TooLongReason(maxLine)}}
	if p.counter != nil {
		in.count = p.counter.NewBatchCount()
	}
	in.batch.SetTag(tag)
	return in, nil
}

// SetBatchLimit sets the batch size at which Full reports true (capped by
// BatchLimit). Larger batches mean fewer fsyncs (one-shot shipping);
// smaller ones acknowledge sooner.
func (in *Ingester) SetBatchLimit(n int) { in.limit = in.p.BatchLimit(n) }

// BatchLimit caps a batch size of n bytes at a quarter of buffer.max_size
// (a commit always fits) and at a little under half a segment: a batch
// never spans segments, so batches of half a segment would each fill one
// (twice the segments, objects and ledger writes for the same records),
// and at a quarter of the largest frame. Inputs that size their own
// commits (the tailer's chunks) use it too. With an entry at most half of
// max_size (and of a frame), a batch committed as soon as it is Full
// always fits: no input ever needs a "too large, split it" fallback.
func (p *Pipeline) BatchLimit(n int) int {
	seg := int(p.cfg.Buffer.SegmentSize)
	return min(n, int(p.cfg.Buffer.MaxSize/4), seg/2-seg/32, buffer.MaxFrameData/4)
}

// SetTag changes the tag of the batch being built (the Fluent Bit tag of
// the chunk).
func (in *Ingester) SetTag(tag string) { in.batch.SetTag(tag) }

// AddLine adds one input line under the line policy every input shares
// (see TrimEOL): a line over records.max_line_size, or one its reader
// marked tooLong after keeping only its first bytes, is dead-lettered with
// its first max_line_size bytes and TooLongReason; a blank line is
// skipped; any other is parsed by Add. line must already be trimmed.
func (in *Ingester) AddLine(line []byte, tooLong bool, src record.Origin, sourceName string) {
	switch {
	case tooLong || len(line) > in.maxLine:
		in.reject(line, src.Offset, sourceName, in.tooLong)
	case record.Blank(line):
	default:
		in.Add(line, src, sourceName)
	}
}

// Add parses one line. A valid record joins the batch; an invalid one
// joins it as a dead letter naming sourceName, the offset and the reason.
// Either way it is durable once Commit returns nil.
func (in *Ingester) Add(line []byte, src record.Origin, sourceName string) {
	out, ts, err := in.parser.Parse(in.scratch[:0], line, src)
	if err != nil {
		in.reject(line, src.Offset, sourceName, err)
		return
	}
	in.scratch = out
	if in.count != nil {
		loc, _ := in.parser.Located()
		in.count.Add(ts, loc, out)
	}
	in.batch.AddRecord(ts, out)
	in.accepted++
}

// Reject dead-letters a line the source already knows is bad (a Fluent
// Bit event that is not a record). Like every dead letter, it keeps at
// most the first records.max_line_size bytes of line.
func (in *Ingester) Reject(line []byte, offset int64, sourceName, reason string) {
	in.reject(line, offset, sourceName, &record.Error{Reason: reason})
}

// reject is the one place a dead letter is made, for every input: the
// line is cut to records.max_line_size, then shortened further if its
// escaped entry would not fit in half the buffer, and the reason says so.
func (in *Ingester) reject(line []byte, offset int64, sourceName string, err error) {
	reason := err.Error()
	if len(line) > in.maxLine {
		line = line[:in.maxLine]
		if !errors.Is(err, in.tooLong) {
			reason = fmt.Sprintf("%s (line cut to its first %d bytes, records.max_line_size)", reason, in.maxLine)
		}
	}
	in.scratch = record.AppendDeadLetter(in.scratch[:0], sourceName, offset, line, reason)
	if limit := in.maxEntry(); len(in.scratch) > limit {
		// JSON escaping can make an entry up to six times its line: keep
		// the entry within half the buffer so a batch always fits in
		// buffer.max_size, and say that the line was shortened.
		overhead := len(record.AppendDeadLetter(in.scratch[:0], sourceName, offset, nil, reason)) + 128
		keep := escapedPrefix(line, limit-overhead)
		if errors.Is(err, in.tooLong) {
			reason = fmt.Sprintf("line exceeds records.max_line_size (%d bytes); only its first %d bytes are kept here, to fit buffer.max_size", in.maxLine, keep)
		} else {
			reason = fmt.Sprintf("%s (line shortened to its first %d bytes to fit buffer.max_size)", reason, keep)
		}
		in.scratch = record.AppendDeadLetter(in.scratch[:0], sourceName, offset, line[:keep], reason)
	}
	in.batch.AddDeadLetter(in.p.now().UnixMilli(), in.scratch)
	in.rejected++
	field := "line"
	var re *record.Error
	if errors.As(err, &re) && re.Field != "" {
		field = re.Field
	}
	in.p.metrics.RecordsRejected.WithLabelValues(field).Inc()
}

// maxEntry bounds one dead-letter entry: with a batch committed once it
// reaches a quarter of buffer.max_size, an entry of at most half of it
// keeps every batch below max_size (and below the largest frame).
func (in *Ingester) maxEntry() int {
	return int(min(in.p.cfg.Buffer.MaxSize/2, buffer.MaxFrameData/2))
}

// escapedPrefix returns the length of the longest prefix of b whose JSON
// string form is at most budget bytes, counting conservatively (control
// and non-ASCII bytes as six).
func escapedPrefix(b []byte, budget int) int {
	cost := 0
	for i, c := range b {
		switch {
		case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t':
			cost += 2
		case c < 0x20 || c >= 0x7f:
			cost += 6
		default:
			cost++
		}
		if cost > budget {
			return i
		}
	}
	return len(b)
}

// SetCheckpoint records the source position this batch reaches.
func (in *Ingester) SetCheckpoint(source string, offset int64, meta []byte) {
	in.batch.SetCheckpoint(source, offset, meta)
}

// Full reports whether the batch should be committed before adding more.
// It is the one commit-and-split rule of every input: after each line or
// event it adds, an input whose batch is Full records its progress (a
// checkpoint just past the line, a chunk's event count) and commits, so a
// batch never outgrows the buffer (see BatchLimit) and each piece says how
// far the input is durable.
func (in *Ingester) Full() bool { return in.batch.Size() >= in.limit }

// Empty reports whether there is nothing to commit.
func (in *Ingester) Empty() bool { return in.batch.Empty() }

// Commit makes the batch durable. On buffer.ErrFull nothing was written and
// the batch is kept, so the caller can back off and call Commit again (or
// drop the batch with Discard when its source will resend it, like Fluent
// Bit on FLB_RETRY).
func (in *Ingester) Commit() error {
	if in.batch.Empty() {
		return nil
	}
	if in.count != nil {
		in.batch.SetAggregate(in.count.Aggregate())
	}
	size := in.batch.Size()
	if err := in.p.buf.Write(&in.batch); err != nil {
		if errors.Is(err, buffer.ErrFull) {
			in.p.metrics.BatchesFull.Inc()
		}
		return err
	}
	in.p.metrics.BytesBuffered.Add(float64(size))
	in.p.stats.RecordsAccepted.Add(int64(in.accepted))
	in.p.stats.RecordsRejected.Add(int64(in.rejected))
	in.Discard()
	return nil
}

// CommitWait commits, waiting for buffer space while the buffer is full
// (back-pressure: the source pauses, nothing is dropped, and it commits
// the moment an upload frees room). The pause is added to
// metership_backpressure_seconds_total, and passed to the OnPause hook,
// every second while it lasts, so a long outage shows as it happens.
//
// A batch cut off by a disk error the buffer recovered from in place
// (buffer.ErrNotDurable) is written again at once: nothing of it was
// acknowledged, and the buffer gives up (ErrFailed) rather than recover
// forever, so this ends.
func (in *Ingester) CommitWait(ctx context.Context) error {
	for {
		err := in.Commit()
		if errors.Is(err, buffer.ErrNotDurable) && !errors.Is(err, buffer.ErrFailed) && ctx.Err() == nil {
			continue
		}
		if !errors.Is(err, buffer.ErrFull) {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		start := time.Now()
		werr := in.p.buf.WaitForSpace(wctx, in.batch.Size())
		cancel()
		paused := time.Since(start)
		in.p.metrics.BackPressure.Add(paused.Seconds())
		if in.onPause != nil {
			in.onPause(paused)
		}
		if werr != nil && (ctx.Err() != nil || !errors.Is(werr, context.DeadlineExceeded)) {
			return werr
		}
	}
}

// OnPause sets a hook CommitWait calls with each slice of time it spends
// waiting for buffer space (a source's own back-pressure metric).
func (in *Ingester) OnPause(fn func(time.Duration)) { in.onPause = fn }

// Discard empties the batch without writing it.
func (in *Ingester) Discard() {
	tag := in.batch.Tag()
	in.batch.Reset()
	in.batch.SetTag(tag)
	if in.count != nil {
		in.count.Reset()
	}
	in.accepted, in.rejected = 0, 0
}

// Counts returns the records and dead letters in the pending batch.
func (in *Ingester) Counts() (accepted, rejected int) { return in.accepted, in.rejected }
