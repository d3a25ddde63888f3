package shared

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/metership/metership/internal/fsutil"
	"github.com/metership/metership/ship"
)

// ErrNotFound is returned by Store.Get for a key that does not exist.
var ErrNotFound = errors.New("shared: object not found")

// Object is one listed key.
type Object struct {
	Key      string
	Modified time.Time
}

// Store is the shared state: S3 (s3://bucket/prefix) or a directory
// (file://), with keys relative to the prefix.
type Store interface {
	// Create writes key only if it does not exist (If-None-Match: *);
	// created is false when it existed, whoever wrote it.
	Create(ctx context.Context, key string, body []byte) (created bool, err error)
	// Put writes key, replacing it (heartbeats only).
	Put(ctx context.Context, key string, body []byte) error
	// Get reads key; ErrNotFound when it does not exist.
	Get(ctx context.Context, key string) ([]byte, error)
	// List returns the keys under prefix that sort after startAfter
	// ("" for all), in key order.
	List(ctx context.Context, prefix, startAfter string) ([]Object, error)
	Close() error
}

// Open opens the store of a metering.state_url. S3 stores use the client
// the output's uploader builds (endpoint, path style, region, credential
// chain, role_arn), so the state needs no settings of its own.
func Open(ctx context.Context, stateURL string, s3opts ship.S3Options) (Store, error) {
	d, err := ship.ParseURL(stateURL)
	if err != nil {
		return nil, fmt.Errorf("metering.state_url: %w", err)
	}
	if d.Scheme == ship.SchemeFile {
		if err := os.MkdirAll(d.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("metering.state_url: %w", err)
		}
		return &fileStore{root: d.Dir}, nil
	}
	s3opts.Bucket, s3opts.Prefix = d.Bucket, ""
	u, err := ship.NewS3Uploader(ctx, s3opts)
	if err != nil {
		return nil, fmt.Errorf("metering.state_url: %w", err)
	}
	return &s3Store{up: u, client: u.Client(), bucket: d.Bucket, prefix: d.Prefix}, nil
}

// s3Store keeps the state in a bucket. The client makes one attempt per
// call (ship's uploader disables SDK retries); the agent's next step
// retries, every step being idempotent.
type s3Store struct {
	up     *ship.S3Uploader
	client *s3.Client
	bucket string
	prefix string
}

func (s *s3Store) key(k string) string {
	if s.prefix == "" {
		return k
	}
	return s.prefix + "/" + k
}

func (s *s3Store) put(ctx context.Context, key string, body []byte, ifNoneMatch bool) error {
	in := &s3.PutObjectInput{
		Bucket:        aws.String(s.bucket),
		Key:           aws.String(s.key(key)),
		Body:          bytes.NewReader(body),
		ContentLength: aws.Int64(int64(len(body))),
		ContentType:   aws.String("application/json"),
	}
	if ifNoneMatch {
		in.IfNoneMatch = aws.String("*")
	}
	_, err := s.client.PutObject(ctx, in)
	return err
}

func (s *s3Store) Create(ctx context.Context, key string, body []byte) (bool, error) {
	err := s.put(ctx, key, body, true)
	if err == nil {
		return true, nil
	}
	if preconditionFailed(err) {
		return false, nil
	}
	return false, fmt.Errorf("shared: create s3://%s/%s: %w", s.bucket, s.key(key), err)
}

func (s *s3Store) Put(ctx context.Context, key string, body []byte) error {
	if err := s.put(ctx, key, body, false); err != nil {
		return fmt.Errorf("shared: put s3://%s/%s: %w", s.bucket, s.key(key), err)
	}
	return nil
}

func (s *s3Store) Get(ctx context.Context, key string) ([]byte, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(key))})
	if err != nil {
		var nsk *types.NoSuchKey
		var re *awshttp.ResponseError
		if errors.As(err, &nsk) || errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("shared: get s3://%s/%s: %w", s.bucket, s.key(key), err)
	}
	defer out.Body.Close() //nolint:errcheck // read in full and checked below
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, fmt.Errorf("shared: get s3://%s/%s: %w", s.bucket, s.key(key), err)
	}
	return b, nil
}

func (s *s3Store) List(ctx context.Context, prefix, startAfter string) ([]Object, error) {
	in := &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(s.key(prefix))}
	if startAfter != "" {
		in.StartAfter = aws.String(s.key(startAfter))
	}
	var out []Object
	p := s3.NewListObjectsV2Paginator(s.client, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("shared: list s3://%s/%s: %w", s.bucket, s.key(prefix), err)
		}
		for _, o := range page.Contents {
			k := aws.ToString(o.Key)
			if s.prefix != "" {
				k = strings.TrimPrefix(k, s.prefix+"/")
			}
			out = append(out, Object{Key: k, Modified: aws.ToTime(o.LastModified)})
		}
	}
	return out, nil
}

func (s *s3Store) Close() error { return s.up.Close() }

// preconditionFailed is S3's answer to If-None-Match: * on an existing
// key. S3 may also answer 409 ConditionalRequestConflict when two such
// writes race; the other one won, so it counts the same.
func preconditionFailed(err error) bool {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "PreconditionFailed", "ConditionalRequestConflict":
			return true
		}
	}
	var re *awshttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == http.StatusPreconditionFailed
}

// fileStore keeps the state in a directory shared by the replicas (a
// network file system, or one machine in tests). Create is a hard link of
// a fully written, fsync'd temporary file, which fails if the name exists:
// the same create-once rule as S3's If-None-Match.
type fileStore struct {
	root string
}

func (f *fileStore) path(key string) string { return filepath.Join(f.root, filepath.FromSlash(key)) }

func (f *fileStore) Create(_ context.Context, key string, body []byte) (bool, error) {
	p := f.path(key)
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("shared: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return false, fmt.Errorf("shared: %w", err)
	}
	defer os.Remove(tmp.Name()) //nolint:errcheck // best effort: the object is its hard link
	// err, not a new one in the if: a failed write or fsync must stop the link.
	if _, err = tmp.Write(body); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, fmt.Errorf("shared: write %s: %w", p, err)
	}
	if err := os.Link(tmp.Name(), p); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, fmt.Errorf("shared: create %s: %w", p, err)
	}
	if err := fsutil.SyncDir(dir); err != nil {
		return true, fmt.Errorf("shared: %w", err)
	}
	return true, nil
}

func (f *fileStore) Put(_ context.Context, key string, body []byte) error {
	p := f.path(key)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("shared: %w", err)
	}
	if err := fsutil.WriteFileAtomic(filepath.Dir(p), filepath.Base(p), body, 0o644, nil); err != nil {
		return fmt.Errorf("shared: %w", err)
	}
	return nil
}

func (f *fileStore) Get(_ context.Context, key string) ([]byte, error) {
	b, err := os.ReadFile(f.path(key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("shared: %w", err)
	}
	return b, nil
}

func (f *fileStore) List(_ context.Context, prefix, startAfter string) ([]Object, error) {
	// Walk from the deepest directory the prefix names.
	base := prefix
	if i := strings.LastIndex(base, "/"); i >= 0 {
		base = base[:i]
	} else {
		base = ""
	}
	var out []Object
	err := filepath.WalkDir(f.path(base), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), ".tmp-") {
			return nil
		}
		rel, err := filepath.Rel(f.root, p)
		if err != nil {
			return err
		}
		k := path.Clean(filepath.ToSlash(rel))
		if !strings.HasPrefix(k, prefix) || k <= startAfter {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil // removed meanwhile
		}
		out = append(out, Object{Key: k, Modified: info.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("shared: list %s: %w", prefix, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (f *fileStore) Close() error { return nil }
