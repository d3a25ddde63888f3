package export

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/metership/metership/conf"
	"github.com/metership/metership/ship"
)

// Options are the non-config inputs of New.
type Options struct {
	Logger     *zap.Logger
	Registerer prometheus.Registerer
	// Now replaces the clock (tests); nil is time.Now.
	Now func() time.Time
	// Credentials replace the AWS default credential chain (tests).
	Credentials aws.CredentialsProvider
	// Mailer replaces the jobs.smtp mailer (tests).
	Mailer Mailer
}

// Service is the Jobs API with its store, runner and scheduler, assembled
// from a valid configuration.
type Service struct {
	Store     Store
	Runner    *Runner
	Scheduler *Scheduler
	Server    *Server
	Metrics   *Metrics
}

// New builds the service: the shipped objects are read from output.url
// with output's S3 settings; exports to bare bucket/path and s3:// URLs
// and an s3:// store use output's settings overridden by jobs.s3.
func New(ctx context.Context, cfg conf.Config, opts Options) (*Service, error) {
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	src, err := ship.ParseURL(cfg.Output.URL)
	if err != nil {
		return nil, fmt.Errorf("output.url: %w", err)
	}
	o := cfg.Output
	outOpts := ship.S3Options{
		Region: o.Region, Endpoint: o.Endpoint, ForcePathStyle: o.ForcePathStyle,
		RoleARN: o.RoleARN, ExternalID: o.ExternalID, Credentials: opts.Credentials,
	}
	jobsOpts := outOpts
	{
		s := cfg.Jobs.S3
		if s.Region != "" {
			jobsOpts.Region = s.Region
		}
		if s.Endpoint != "" {
			jobsOpts.Endpoint = s.Endpoint
		}
		if s.ForcePathStyle != nil {
			jobsOpts.ForcePathStyle = *s.ForcePathStyle
		}
		if s.RoleARN != "" {
			jobsOpts.RoleARN, jobsOpts.ExternalID = s.RoleARN, s.ExternalID
		}
	}
	var source Source
	if src.Scheme == ship.SchemeS3 {
		client, err := s3Client(ctx, outOpts, src.Bucket)
		if err != nil {
			return nil, fmt.Errorf("output: %w", err)
		}
		source = &S3Source{Client: client, Bucket: src.Bucket, Prefix: src.Prefix}
	} else {
		source = &DirSource{Dir: src.Dir}
	}
	destClient, err := s3Client(ctx, jobsOpts, "export-destination")
	if err != nil {
		return nil, fmt.Errorf("jobs.s3: %w", err)
	}
	storeDest, err := ship.ParseURL(cfg.Jobs.Store)
	if err != nil {
		return nil, fmt.Errorf("jobs.store: %w", err)
	}
	var store Store
	if storeDest.Scheme == ship.SchemeS3 {
		store = NewS3Store(destClient, storeDest.Bucket, storeDest.Prefix)
	} else if store, err = NewFileStore(storeDest.Dir); err != nil {
		return nil, err
	}
	runner := &Runner{
		Source: source, KeyFormat: o.KeyFormat, Log: log, Now: opts.Now,
		Sink: func(loc Location) (Sink, error) {
			if loc.Scheme == ship.SchemeFile {
				return &DirSink{Dir: loc.Dir}, nil
			}
			return &S3Sink{Client: destClient, Bucket: loc.Bucket}, nil
		},
	}
	metrics := NewMetrics(opts.Registerer)
	var mailer Mailer = opts.Mailer
	if mailer == nil {
		if m := NewSMTPMailer(cfg.Jobs.SMTP); m != nil {
			mailer = m
		}
	}
	sched := &Scheduler{Store: store, Runner: runner, Now: opts.Now, Log: log, Metrics: metrics, Mailer: mailer}
	srv := &Server{Store: store, Scheduler: sched, Source: src, Now: opts.Now, Log: log}
	srv.SetAPIKeys(cfg.Jobs.APIKeys)
	return &Service{Store: store, Runner: runner, Scheduler: sched, Server: srv, Metrics: metrics}, nil
}

// Handler is the Jobs API plus unauthenticated /healthz and, when
// metrics is set, /metrics.
func (s *Service) Handler(metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", s.Server.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	if metrics != nil {
		mux.Handle("GET /metrics", metrics)
	}
	return mux
}

// s3Client builds a client through ship's S3 setup (credential chain,
// role, endpoint, path style); the bucket only satisfies its validation.
func s3Client(ctx context.Context, opts ship.S3Options, bucket string) (*s3.Client, error) {
	opts.Bucket = bucket
	u, err := ship.NewS3Uploader(ctx, opts)
	if err != nil {
		return nil, err
	}
	return u.Client(), nil
}
