package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/metership/metership/buffer"
	"github.com/metership/metership/conf"
	"github.com/metership/metership/pipeline"
	"github.com/metership/metership/ship"
)

// The engine builds the parts that need I/O (the buffer, recovered from
// disk; the uploaders, with their AWS configuration) and hands them to the
// pipeline and the meter, so each is built once, in dependency order:
// buffer, meter (needs the buffer's ids), pipeline (counts through the
// meter).

// openBuffer opens (and so recovers) the buffer under cfg.Buffer.
func openBuffer(cfg conf.Config, now func() time.Time, faults func(buffer.FileOp, string) error) (*buffer.Buffer, error) {
	buf, err := buffer.Open(buffer.Options{
		Dir:          cfg.Buffer.Dir,
		MaxSize:      int64(cfg.Buffer.MaxSize),
		SegmentSize:  int64(cfg.Buffer.SegmentSize),
		Sync:         syncPolicy(cfg.Buffer.Sync),
		SyncInterval: cfg.Buffer.SyncInterval.D(),
		AgentID:      cfg.Agent.ID,
		Now:          now,
		Faults:       faults,
	})
	if err != nil {
		return nil, fmt.Errorf("buffer.dir %s: %w", cfg.Buffer.Dir, err)
	}
	return buf, nil
}

func syncPolicy(s conf.SyncMode) buffer.SyncPolicy {
	switch s {
	case conf.SyncInterval:
		return buffer.SyncInterval
	case conf.SyncNever:
		return buffer.SyncNever
	}
	return buffer.SyncAlways
}

// buildUploaders makes the record and dead-letter uploaders. Dead letters
// go to output.dead_letter_url, or the destination's root.
func buildUploaders(ctx context.Context, cfg conf.Config) (pipeline.Uploaders, error) {
	o := cfg.Output
	dest, err := ship.ParseURL(o.URL)
	if err != nil {
		return pipeline.Uploaders{}, fmt.Errorf("output.url: %w", err)
	}
	s3opts := ship.S3Options{
		Region:               o.Region,
		Endpoint:             o.Endpoint,
		ForcePathStyle:       o.ForcePathStyle,
		RoleARN:              o.RoleARN,
		ExternalID:           o.ExternalID,
		ACL:                  o.ACL,
		StorageClass:         o.StorageClass,
		ServerSideEncryption: o.ServerSideEncryption,
		SSEKMSKeyID:          o.SSEKMSKeyID,
		Tags:                 o.Tags,
		MultipartThreshold:   int64(o.MultipartThreshold),
	}
	out, err := dest.NewUploader(ctx, s3opts)
	if err != nil {
		return pipeline.Uploaders{}, fmt.Errorf("output: %w", err)
	}
	// By default the record uploader also places dead letters: at the
	// bucket root for s3, beside ingest/amberdata for file (see
	// ship.Destination.DeadLetterRoot).
	if o.DeadLetterURL == "" {
		return pipeline.Uploaders{Records: out, DeadLetters: out}, nil
	}
	dlDest, err := ship.ParseURL(o.DeadLetterURL)
	if err != nil {
		return pipeline.Uploaders{}, fmt.Errorf("output.dead_letter_url: %w", err)
	}
	dlq, err := dlDest.NewDeadLetterUploader(ctx, s3opts)
	if err != nil {
		return pipeline.Uploaders{}, fmt.Errorf("output.dead_letter_url: %w", err)
	}
	return pipeline.Uploaders{Records: out, DeadLetters: dlq}, nil
}
