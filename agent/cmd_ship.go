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
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/metership/metership/agent/tail"
	"github.com/metership/metership/engine"
	"github.com/metership/metership/pipeline"
)

// cmdShip pushes files (or stdin) through the pipeline once and exits 0
// only when every record is in the output or dead-lettered.
func cmdShip(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ship", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	timeout := fs.Duration("timeout", 0, "give up waiting for the output after this long (0: wait until it works); what is not shipped stays in buffer.dir")
	tag := fs.String("tag", "metership", "tag of the records ($TAG in output.key_format)")
	final := fs.Bool("final", false, "also report the metering hour in progress (and hours within metering.lateness): nothing more will be sent for them from this buffer.dir")
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
	report := engine.FinalClosed
	if *final {
		report = engine.FinalAll
	}
	rt, err := engine.Start(ctx, cfg, engine.Options{Logger: log, FinalReport: report, SettleShared: true})
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
		n, err := shipInput(ctx, rt.Pipeline(), in, stdin, *tag, log)
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

// shipSourcePrefix starts the Source of every file ship reads; the
// tailer's checkpoints (tail.SourcePrefix) are apart.
const shipSourcePrefix = "ship:"

// shipInput reads one input into the buffer. Files get a checkpoint keyed
// by their identity, so re-running ship after a crash (or on the same
// file) resumes after what is already durable instead of sending it twice.
func shipInput(ctx context.Context, p *pipeline.Pipeline, in string, stdin io.Reader, tag string, log *zap.Logger) (shipSummary, error) {
	var sum shipSummary
	var (
		r        io.Reader
		sourceID = "stdin"
		name     = "stdin"
		start    int64
		size     int64 = -1
		meta     []byte
		stale    []string
	)
	if in == "-" {
		r = stdin
	} else {
		f, err := os.Open(in)
		if err != nil {
			return sum, err
		}
		defer f.Close() //nolint:errcheck // read-only input
		st, err := f.Stat()
		if err != nil {
			return sum, err
		}
		if st.IsDir() {
			return sum, errors.New("is a directory")
		}
		if abs, err := filepath.Abs(in); err == nil {
			name = abs
		} else {
			name = in
		}
		// The tailer's file identity, under ship's own prefix: a new file
		// at an old path is never taken for the old one, and a file that
		// grew resumes where the last run stopped, under the same Source.
		cur, err := tail.ResumeFile(shipSourcePrefix, f, st, name, p.Buffer().Checkpoints())
		if err != nil {
			return sum, err
		}
		sourceID, start, meta, stale = cur.Source, cur.Offset, cur.Meta, cur.Stale
		size = st.Size()
		if start > 0 {
			if _, err := f.Seek(start, io.SeekStart); err != nil {
				return sum, err
			}
			log.Info("resuming from checkpoint", zap.String("file", name), zap.Int64("offset", start))
			sum.skipped = start
		}
		r = f
	}
	if size >= 0 && start >= size && len(stale) == 0 {
		return sum, nil
	}
	res, err := p.IngestStream(ctx, pipeline.Stream{
		R: r, Start: start, Source: sourceID, Name: name, Tag: tag,
		Checkpoint: sourceID != "stdin", Meta: meta, Forget: stale,
	})
	sum.accepted, sum.rejected = res.Accepted, res.Rejected
	return sum, err
}
