package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/metership/metership/agent/tail"
	"github.com/metership/metership/conf"
	"github.com/metership/metership/engine"
	"github.com/metership/metership/pipeline"
	"github.com/metership/metership/record"
)

// cmdShip pushes files (or stdin) through the pipeline once and exits 0
// only when every record is in the output or dead-lettered.
func cmdShip(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ship", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	timeout := fs.Duration("timeout", 0, "give up waiting for the output after this long (0: wait until it works); what is not shipped stays in buffer.dir")
	tag := fs.String("tag", "metership", "tag of the records ($TAG in output.key_format)")
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	inputs := fs.Args()
	if len(inputs) == 0 {
		inputs = []string{"-"}
	}
	cfg, ok := loadConfig(*path, false, stderr)
	if !ok {
		return exitConfig
	}
	log := engine.NewLogger(cfg.Log, stderr)
	defer func() { _ = log.Sync() }()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}

	start := time.Now()
	rt, err := engine.Start(ctx, cfg, engine.Options{Logger: log, SettleShared: true})
	if err != nil {
		fmt.Fprintf(stderr, "metership: %v\n", err)
		return exitFailure
	}
	var summary shipSummary
	// An input that cannot be read (missing, a directory, an I/O error)
	// is reported and the others still go through; everything accepted is
	// shipped unless ctx ended (signal or --timeout).
	var unread []string
	for _, in := range inputs {
		if ctx.Err() != nil {
			unread = append(unread, displayName(in))
			continue
		}
		n, err := shipInput(ctx, rt.Pipeline(), in, stdin, *tag, cfg, log)
		summary.add(n)
		if err != nil {
			fmt.Fprintf(stderr, "metership: %s: %v\n", displayName(in), err)
			unread = append(unread, displayName(in))
		}
	}
	shipped := ctx.Err() == nil
	if err := rt.Finish(ctx, shipped); err != nil {
		fmt.Fprintf(stderr, "metership: %v\n", err)
		shipped = false
	}
	st := rt.Pipeline().Stats()
	fmt.Fprintf(stdout, "records accepted:   %d\n", summary.accepted)
	fmt.Fprintf(stdout, "records rejected:   %d (dead-lettered)\n", summary.rejected)
	if summary.skipped > 0 {
		fmt.Fprintf(stdout, "bytes skipped:      %d (already shipped, per checkpoint)\n", summary.skipped)
	}
	fmt.Fprintf(stdout, "objects written:    %d (%d records)\n", st.ObjectsWritten.Load(), st.RecordsShipped.Load())
	fmt.Fprintf(stdout, "dead-letter objects: %d (%d entries)\n", st.DeadLetterObjs.Load(), st.DeadLetters.Load())
	fmt.Fprintf(stdout, "bytes written:      %d\n", st.ObjectBytes.Load())
	for _, line := range rt.MeteringSummary() {
		fmt.Fprintln(stdout, line)
	}
	fmt.Fprintf(stdout, "elapsed:            %s\n", time.Since(start).Round(time.Millisecond))
	switch {
	case !shipped:
		fmt.Fprintln(stdout, "status:             INCOMPLETE (what was accepted is safe in buffer.dir and ships on the next run)")
		return exitFailure
	case len(unread) > 0:
		fmt.Fprintf(stdout, "status:             INCOMPLETE: not read (fully): %s; every record of the rest is in the output or dead-lettered\n", strings.Join(unread, ", "))
		return exitFailure
	}
	fmt.Fprintln(stdout, "status:             complete (every record is in the output or dead-lettered)")
	return exitOK
}

type shipSummary struct {
	accepted, rejected int64
	skipped            int64
}

func (s *shipSummary) add(o shipSummary) {
	s.accepted += o.accepted
	s.rejected += o.rejected
	s.skipped += o.skipped
}

func displayName(in string) string {
	if in == "-" {
		return "stdin"
	}
	return in
}

// shipInput reads one input into the buffer. Files get a checkpoint keyed
// by their identity, so re-running ship after a crash (or on the same
// file) resumes after what is already durable instead of sending it twice.
func shipInput(ctx context.Context, p *pipeline.Pipeline, in string, stdin io.Reader, tag string, cfg conf.Config, log *zap.Logger) (shipSummary, error) {
	var sum shipSummary
	var (
		r        io.Reader
		sourceID = "stdin"
		name     = "stdin"
		start    int64
		size     int64 = -1
	)
	if in == "-" {
		r = stdin
	} else {
		f, err := os.Open(in)
		if err != nil {
			return sum, err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return sum, err
		}
		if st.IsDir() {
			return sum, errors.New("is a directory")
		}
		// Named like the tailer names files, under its own prefix, so a
		// new file at an old path is never mistaken for the old one.
		sourceID, err = tail.WholeFileSource("ship:", f, st)
		if err != nil {
			return sum, err
		}
		if abs, err := filepath.Abs(in); err == nil {
			name = abs
		} else {
			name = in
		}
		size = st.Size()
		for _, cp := range p.Buffer().Checkpoints() {
			if cp.Source == sourceID {
				start = cp.Offset
			}
		}
		if start > 0 {
			if _, err := f.Seek(start, io.SeekStart); err != nil {
				return sum, err
			}
			log.Info("resuming from checkpoint", zap.String("file", name), zap.Int64("offset", start))
			sum.skipped = start
		}
		r = f
	}
	if size >= 0 && start >= size {
		return sum, nil
	}
	lr := newLineReader(r, start, int(cfg.Records.MaxLineSize))
	c, err := newCommitter(ctx, p, tag)
	if err != nil {
		return sum, err
	}
	ing := c.ingester()
	flush := func() {
		if sourceID != "stdin" {
			ing.SetCheckpoint(sourceID, lr.offset, []byte(name))
		}
		c.commit(ing)
		ing = c.ingester()
	}
	for ing != nil {
		line, off, tooLong, err := lr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			_ = c.close()
			return c.sum, err
		}
		switch {
		case tooLong:
			ing.Reject(line, off, name, "line exceeds records.max_line_size ("+strconv.Itoa(int(cfg.Records.MaxLineSize))+" bytes); only its first bytes are kept here")
		case record.Blank(line):
			// Blank lines are not records and not errors.
		default:
			ing.Add(line, record.Source{ID: sourceID, Offset: off}, name)
		}
		if ing.Full() {
			flush()
		}
	}
	if ing != nil {
		flush()
	}
	err = c.close()
	c.sum.skipped = sum.skipped
	return c.sum, err
}

// shipBatchBytes is the batch size of one-shot shipping: big batches mean
// few fsyncs, and a crash only repeats work that was never acknowledged.
const shipBatchBytes = 4 << 20

// committer overlaps parsing with making batches durable: the reader fills
// one Ingester while a single goroutine commits the previous one. Commits
// stay in order, so a checkpoint is never durable before the records it
// covers.
type committer struct {
	ctx    context.Context
	queue  chan *pipeline.Ingester
	free   chan *pipeline.Ingester
	failed chan struct{} // closed when a commit fails: stop reading
	done   chan struct{}
	err    error // set by the commit goroutine before failed is closed
	sum    shipSummary
}

func newCommitter(ctx context.Context, p *pipeline.Pipeline, tag string) (*committer, error) {
	c := &committer{ctx: ctx, queue: make(chan *pipeline.Ingester, 1), free: make(chan *pipeline.Ingester, 2), failed: make(chan struct{}), done: make(chan struct{})}
	for i := 0; i < 2; i++ {
		in, err := p.NewIngester(tag)
		if err != nil {
			return nil, err
		}
		in.SetBatchLimit(shipBatchBytes)
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
				c.sum.accepted += int64(a)
				c.sum.rejected += int64(rj)
			}
		}
		c.free <- in
	}
}

// ingester returns an empty Ingester, or nil once a commit failed (the
// reader then stops, instead of reading the rest of its input for
// nothing).
func (c *committer) ingester() *pipeline.Ingester {
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

func (c *committer) commit(in *pipeline.Ingester) { c.queue <- in }

// close waits for every queued commit and returns the first error.
func (c *committer) close() error {
	close(c.queue)
	<-c.done
	return c.err
}
