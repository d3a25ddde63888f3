package ship

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
)

// ErrURL is wrapped by every ParseURL error.
var ErrURL = errors.New("invalid output.url")

// Destination schemes.
const (
	SchemeS3   = "s3"
	SchemeFile = "file"
)

// amberfloPrefix is the conventional record prefix of the Amberflo layout;
// see Destination.DeadLetterRoot.
const amberfloPrefix = "ingest/amberdata"

// Destination is a parsed output.url.
type Destination struct {
	// Scheme is SchemeS3 or SchemeFile.
	Scheme string
	// Bucket is the S3 bucket (s3 only).
	Bucket string
	// Prefix is the S3 key prefix, without leading or trailing slashes
	// (s3 only; may be empty).
	Prefix string
	// Dir is the directory records are written under (file only): absolute
	// for file:///abs/dir, relative to the working directory for
	// file://./dir.
	Dir string
}

// ParseURL parses an output.url: s3://bucket[/prefix] or file:///abs/dir
// (file://localhost/abs/dir is accepted too) or file://./relative/dir.
// Errors say what is wrong and what is accepted.
func ParseURL(s string) (Destination, error) {
	if s == "" {
		return Destination{}, fmt.Errorf("%w: empty; use s3://bucket/prefix or file:///dir", ErrURL)
	}
	u, err := url.Parse(s)
	if err != nil {
		return Destination{}, fmt.Errorf("%w %q: %w", ErrURL, s, err)
	}
	switch u.Scheme {
	case SchemeS3:
		return parseS3URL(s, u)
	case SchemeFile:
		return parseFileURL(s, u)
	case "":
		return Destination{}, fmt.Errorf("%w %q: missing scheme; use s3://bucket/prefix or file:///dir", ErrURL, s)
	default:
		return Destination{}, fmt.Errorf("%w: scheme %q not supported; use s3:// or file://", ErrURL, u.Scheme)
	}
}

func parseS3URL(s string, u *url.URL) (Destination, error) {
	switch {
	case u.Opaque != "":
		return Destination{}, fmt.Errorf("%w %q: write s3://bucket/prefix", ErrURL, s)
	case u.User != nil:
		return Destination{}, fmt.Errorf("%w %q: credentials do not belong in the URL; use the AWS credential chain or output.role_arn", ErrURL, s)
	case u.Host == "":
		return Destination{}, fmt.Errorf("%w %q: missing bucket; use s3://bucket/prefix", ErrURL, s)
	case u.Port() != "":
		return Destination{}, fmt.Errorf("%w %q: a port is not a bucket name; set output.endpoint for S3-compatible servers", ErrURL, s)
	case u.RawQuery != "" || u.ForceQuery:
		return Destination{}, fmt.Errorf("%w %q: query parameters not supported; use output.* settings", ErrURL, s)
	case u.Fragment != "":
		return Destination{}, fmt.Errorf("%w %q: fragment not supported", ErrURL, s)
	}
	if err := checkBucketName(u.Host); err != nil {
		return Destination{}, fmt.Errorf("%w %q: %w", ErrURL, s, err)
	}
	prefix := strings.Trim(u.Path, "/")
	if strings.Contains(prefix, "//") {
		return Destination{}, fmt.Errorf("%w %q: empty path element in prefix %q", ErrURL, s, prefix)
	}
	return Destination{Scheme: SchemeS3, Bucket: u.Host, Prefix: prefix}, nil
}

// checkBucketName applies the S3 general purpose bucket naming rules, which
// S3-compatible servers share.
func checkBucketName(b string) error {
	if len(b) < 3 || len(b) > 63 {
		return fmt.Errorf("bucket name %q must be 3 to 63 characters", b)
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return fmt.Errorf("bucket name %q: character %q not allowed; use lowercase letters, digits, '-' and '.'", b, c)
		}
	}
	if !isAlnum(b[0]) || !isAlnum(b[len(b)-1]) {
		return fmt.Errorf("bucket name %q must start and end with a letter or digit", b)
	}
	return nil
}

func isAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

func parseFileURL(s string, u *url.URL) (Destination, error) {
	switch {
	case u.Opaque != "":
		return Destination{}, fmt.Errorf("%w %q: write file:///absolute/dir or file://./relative/dir", ErrURL, s)
	case u.User != nil || u.Port() != "":
		return Destination{}, fmt.Errorf("%w %q: write file:///absolute/dir or file://./relative/dir", ErrURL, s)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return Destination{}, fmt.Errorf("%w %q: query and fragment not supported", ErrURL, s)
	}
	var dir string
	switch u.Host {
	case "", "localhost":
		dir = u.Path
		if dir == "" || dir == "/" {
			return Destination{}, fmt.Errorf("%w %q: missing directory; use file:///absolute/dir", ErrURL, s)
		}
	case ".", "..":
		dir = u.Host + u.Path
	default:
		return Destination{}, fmt.Errorf("%w %q: host %q not supported; use file:///absolute/dir or file://./relative/dir", ErrURL, s, u.Host)
	}
	return Destination{Scheme: SchemeFile, Dir: filepath.Clean(dir)}, nil
}

// String renders d as a URL.
func (d Destination) String() string {
	switch d.Scheme {
	case SchemeS3:
		if d.Prefix == "" {
			return "s3://" + d.Bucket
		}
		return "s3://" + d.Bucket + "/" + d.Prefix
	case SchemeFile:
		dir := filepath.ToSlash(d.Dir)
		if filepath.IsAbs(d.Dir) || dir == ".." || strings.HasPrefix(dir, "../") {
			return "file://" + dir
		}
		return "file://./" + dir
	}
	return ""
}

// DeadLetterRoot is where dead-letter keys are rendered from.
//
// For s3 it is "" (the bucket root): dead letters land in
// s3://bucket/failed-requests/..., beside the ingest/amberdata prefix.
//
// For file it is Dir with a trailing ingest/amberdata removed, so
// file:///data/ingest/amberdata puts records under
// /data/ingest/amberdata/... and dead letters under
// /data/failed-requests/..., the same layout as in a bucket. Any other Dir
// is its own dead-letter root: file:///data/out puts dead letters under
// /data/out/failed-requests/....
func (d Destination) DeadLetterRoot() string {
	if d.Scheme != SchemeFile {
		return ""
	}
	return fileDeadLetterRoot(d.Dir)
}

func fileDeadLetterRoot(dir string) string {
	dir = filepath.Clean(dir)
	suffix := filepath.FromSlash(amberfloPrefix)
	if dir == suffix {
		return "."
	}
	if strings.HasSuffix(dir, string(filepath.Separator)+suffix) {
		return filepath.Clean(strings.TrimSuffix(dir, suffix))
	}
	return dir
}

// NewUploader returns the uploader for d: records under d's prefix or
// directory, dead letters under d.DeadLetterRoot(). For s3 it is an
// S3Uploader with opts (Bucket, Prefix and DeadLetterPrefix taken from d);
// for file a FileUploader (opts unused).
func (d Destination) NewUploader(ctx context.Context, opts S3Options) (Uploader, error) {
	switch d.Scheme {
	case SchemeS3:
		opts.Bucket, opts.Prefix, opts.DeadLetterPrefix = d.Bucket, d.Prefix, ""
		return NewS3Uploader(ctx, opts)
	case SchemeFile:
		return NewFileUploader(d.Dir), nil
	}
	return nil, fmt.Errorf("%w: scheme %q not supported; use s3:// or file://", ErrURL, d.Scheme)
}

// NewDeadLetterUploader returns an uploader for a destination dedicated to
// dead letters (a separate dead-letter URL): dead letters go under d's
// prefix or directory itself, not under its DeadLetterRoot.
func (d Destination) NewDeadLetterUploader(ctx context.Context, opts S3Options) (Uploader, error) {
	switch d.Scheme {
	case SchemeS3:
		opts.Bucket, opts.Prefix, opts.DeadLetterPrefix = d.Bucket, d.Prefix, d.Prefix
		return NewS3Uploader(ctx, opts)
	case SchemeFile:
		return &FileUploader{Dir: d.Dir, DeadLetterDir: d.Dir}, nil
	}
	return nil, fmt.Errorf("%w: scheme %q not supported; use s3:// or file://", ErrURL, d.Scheme)
}
