// Package s3server runs a real S3 server for tests: versitygw (Apache-2.0)
// with its posix backend, built from the version pinned in tools/go.mod and
// listening on a free 127.0.0.1 port over a temporary root directory.
//
//	srv := s3server.Start(t)
//	u, _ := ship.NewS3Uploader(ctx, ship.S3Options{
//		Bucket: srv.Bucket(), Endpoint: srv.Endpoint(), ForcePathStyle: true,
//		Credentials: credentials.NewStaticCredentialsProvider(srv.AccessKey(), srv.SecretKey(), ""),
//	})
package s3server

import (
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/metership/metership/internal/testutil/childproc"
)

// Defaults of a started server.
const (
	DefaultBucket    = "metership-test"
	DefaultAccessKey = "metership-access"
	DefaultSecretKey = "metership-secret-key"
	Region           = "us-east-1"
	startTimeout     = 30 * time.Second
)

// Option configures Start.
type Option func(*options)

type options struct {
	bucket         string
	access, secret string
	noBucket       bool
}

// WithBucket names the bucket created at start.
func WithBucket(name string) Option { return func(o *options) { o.bucket = name } }

// WithoutBucket starts the server with no bucket.
func WithoutBucket() Option { return func(o *options) { o.noBucket = true } }

// WithCredentials sets the root access key and secret.
func WithCredentials(access, secret string) Option {
	return func(o *options) { o.access, o.secret = access, secret }
}

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Key          string
	Size         int64
	ETag         string
	LastModified time.Time
}

// Server is a running versitygw process. Its methods are meant for the test
// goroutine.
type Server struct {
	t    testing.TB
	bin  string
	root string
	addr string
	opts options

	mu     sync.Mutex // guards everything below
	cmd    *exec.Cmd
	exited chan struct{}
	output *childproc.Output
	client *s3.Client
	httpc  *http.Client
}

// Start builds (once) and starts versitygw on a free loopback port with a
// t.TempDir root, waits until it answers, creates the bucket and stops the
// server at t.Cleanup.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	o := options{bucket: DefaultBucket, access: DefaultAccessKey, secret: DefaultSecretKey}
	for _, opt := range opts {
		opt(&o)
	}
	s := &Server{t: t, bin: Binary(t), root: t.TempDir(), addr: freeAddr(t), opts: o}
	t.Cleanup(s.close)
	s.start()
	if !o.noBucket {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		if _, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(o.bucket)}); err != nil {
			t.Fatalf("s3server: create bucket %s: %v", o.bucket, err)
		}
	}
	return s
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("s3server: find a free port: %v", err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// start launches the process and waits until it answers HTTP.
func (s *Server) start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.t.Fatalf("s3server: already running")
	}
	out := &childproc.Output{}
	cmd := exec.Command(s.bin,
		"--port", s.addr,
		"--access", s.opts.access,
		"--secret", s.opts.secret,
		"--region", Region,
		"--quiet",
		"posix", s.root)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("s3server: start %s: %v", s.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited, s.output = cmd, exited, out

	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(startTimeout)
	for {
		resp, err := hc.Get(s.Endpoint() + "/")
		if err == nil {
			// Any HTTP answer (403 for an anonymous request) means ready.
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return
		}
		select {
		case <-exited:
			s.cmd = nil
			s.t.Fatalf("s3server: versitygw exited at start: %v\n%s", cmd.ProcessState, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stopLocked()
			s.t.Fatalf("s3server: versitygw did not answer on %s within %s: %v\n%s", s.addr, startTimeout, err, out.String())
		}
	}
}

// Endpoint is the server's base URL, http://127.0.0.1:PORT.
func (s *Server) Endpoint() string { return "http://" + s.addr }

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.addr }

// Bucket is the bucket created at start.
func (s *Server) Bucket() string { return s.opts.bucket }

// AccessKey is the root access key.
func (s *Server) AccessKey() string { return s.opts.access }

// SecretKey is the root secret key.
func (s *Server) SecretKey() string { return s.opts.secret }

// Root is the posix backend's root directory (one folder per bucket).
func (s *Server) Root() string { return s.root }

// Output returns what the process printed so far.
func (s *Server) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.output == nil {
		return ""
	}
	return s.output.String()
}

// Stop kills the server; the port then refuses connections until Restart.
// Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *Server) stopLocked() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Restart stops the server if it runs and starts it again on the same port
// and root, with the data in place.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

func (s *Server) close() {
	s.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.httpc != nil {
		s.httpc.CloseIdleConnections()
	}
}

// Credentials returns a provider of the root credentials.
func (s *Server) Credentials() aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(s.opts.access, s.opts.secret, "")
}

// Client returns an SDK client for the server (path style, root
// credentials). Its idle connections are closed at cleanup.
func (s *Server) Client() *s3.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == nil {
		s.httpc = &http.Client{Transport: &http.Transport{}}
		s.client = s3.New(s3.Options{
			Region:       Region,
			BaseEndpoint: aws.String(s.Endpoint()),
			UsePathStyle: true,
			Credentials:  s.Credentials(),
			HTTPClient:   s.httpc,
		})
	}
	return s.client
}

// ListObjects lists every object of the bucket, in key order.
func (s *Server) ListObjects(t testing.TB) []ObjectInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	var objs []ObjectInfo
	p := s3.NewListObjectsV2Paginator(s.Client(), &s3.ListObjectsV2Input{Bucket: aws.String(s.opts.bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatalf("s3server: list %s: %v", s.opts.bucket, err)
		}
		for _, o := range page.Contents {
			objs = append(objs, ObjectInfo{
				Key:          aws.ToString(o.Key),
				Size:         aws.ToInt64(o.Size),
				ETag:         aws.ToString(o.ETag),
				LastModified: aws.ToTime(o.LastModified),
			})
		}
	}
	return objs
}

// GetObject returns the stored bytes of key, exactly as uploaded.
func (s *Server) GetObject(t testing.TB, key string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	out, err := s.Client().GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.opts.bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("s3server: get %s: %v", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatalf("s3server: read %s: %v", key, err)
	}
	return b
}
