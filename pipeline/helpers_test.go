package pipeline

import (
	"context"
	"testing"

	"github.com/metership/metership/buffer"
	"github.com/metership/metership/conf"
	"github.com/metership/metership/ship"
)

// testParts are the parts the engine builds in production: the tests
// choose them.
type testParts struct {
	Uploader ship.Uploader // nil: the uploader for output.url
	Faults   func(buffer.FileOp, string) error
}

// newTestPipeline opens cfg's buffer and builds the uploaders as the
// engine does, and a pipeline on them.
func newTestPipeline(t *testing.T, cfg conf.Config, opts Options, parts testParts) (*Pipeline, error) {
	t.Helper()
	up := parts.Uploader
	if up == nil {
		dest, err := ship.ParseURL(cfg.Output.URL)
		if err != nil {
			return nil, err
		}
		if up, err = dest.NewUploader(context.Background(), ship.S3Options{}); err != nil {
			return nil, err
		}
	}
	buf, err := buffer.Open(buffer.Options{
		Dir:         cfg.Buffer.Dir,
		MaxSize:     int64(cfg.Buffer.MaxSize),
		SegmentSize: int64(cfg.Buffer.SegmentSize),
		AgentID:     cfg.Agent.ID,
		Now:         opts.Now,
		Faults:      parts.Faults,
	})
	if err != nil {
		return nil, err
	}
	p, err := New(cfg, buf, Uploaders{Records: up, DeadLetters: up}, opts)
	if err != nil {
		_ = buf.Close()
	}
	return p, err
}
