package export

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/metership/metership/internal/fsutil"
	"github.com/metership/metership/ship"
)

// Source is where the shipped objects are: output.url read back.
type Source interface {
	// List returns the keys (relative to the source root) that start with
	// prefix.
	List(ctx context.Context, prefix string) ([]string, error)
	// Open reads one object.
	Open(ctx context.Context, key string) (io.ReadCloser, error)
	// String names the source in manifests.
	String() string
}

// withRetries turns the SDK's standard retries back on for one call: the
// shared client has them off (ship retries uploads itself), and a read
// that hits a throttle should not fail a whole export.
func withRetries(o *s3.Options) { o.Retryer = retry.NewStandard() }

// S3Source reads objects under bucket/prefix.
type S3Source struct {
	Client *s3.Client
	Bucket string
	Prefix string
}

func (s *S3Source) full(key string) string {
	if s.Prefix == "" {
		return key
	}
	return s.Prefix + "/" + key
}

// List pages through ListObjectsV2.
func (s *S3Source) List(ctx context.Context, prefix string) ([]string, error) {
	full := s.full(prefix)
	strip := s.full("")
	var out []string
	p := s3.NewListObjectsV2Paginator(s.Client, &s3.ListObjectsV2Input{Bucket: &s.Bucket, Prefix: &full})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx, withRetries)
		if err != nil {
			return nil, fmt.Errorf("list s3://%s/%s: %w", s.Bucket, full, err)
		}
		for _, o := range page.Contents {
			out = append(out, strings.TrimPrefix(aws.ToString(o.Key), strip))
		}
	}
	return out, nil
}

// Open gets one object.
func (s *S3Source) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	full := s.full(key)
	out, err := s.Client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.Bucket, Key: &full}, withRetries)
	if err != nil {
		return nil, fmt.Errorf("get s3://%s/%s: %w", s.Bucket, full, err)
	}
	return out.Body, nil
}

func (s *S3Source) String() string {
	return ship.Destination{Scheme: ship.SchemeS3, Bucket: s.Bucket, Prefix: s.Prefix}.String()
}

// DirSource reads the file:// output's directory.
type DirSource struct{ Dir string }

// List walks the directory holding prefix.
func (s *DirSource) List(ctx context.Context, prefix string) ([]string, error) {
	base := prefix
	if i := strings.LastIndexByte(base, '/'); i >= 0 {
		base = base[:i]
	} else {
		base = ""
	}
	root := filepath.Join(s.Dir, filepath.FromSlash(base))
	var out []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() || strings.HasSuffix(path, fsutil.TmpSuffix) {
			return nil
		}
		rel, err := filepath.Rel(s.Dir, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if strings.HasPrefix(rel, prefix) {
			out = append(out, rel)
		}
		return nil
	})
	return out, err
}

// Open opens one file.
func (s *DirSource) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	return os.Open(filepath.Join(s.Dir, filepath.FromSlash(key)))
}

func (s *DirSource) String() string {
	return ship.Destination{Scheme: ship.SchemeFile, Dir: s.Dir}.String()
}

// sourcePrefixes are the listing prefixes that hold every object a window
// can need. Objects are partitioned by the rendered key_format of their
// records' own times, so rendering the format for each hour of the window
// (up to the first part that is not time: $UUID, $INDEX, $TAG,
// $HOSTNAME) names every partition the window touches. Formats that
// change within the hour (%M, %S, ...) fall back to the part that does
// not depend on time at all. Records are still checked against the window
// one by one, so a wider listing only costs reading.
func sourcePrefixes(keyFormat string, w Window) ([]string, error) {
	render, err := partitionPrefixer(keyFormat)
	if err != nil {
		return nil, err
	}
	var out []string
	if subHour(keyFormat) {
		// Times that differ in the first character of every conversion.
		p := render(time.Date(1999, 2, 3, 4, 5, 6, 0, time.UTC))
		p = commonPrefix(p, render(time.Date(2012, 11, 22, 13, 44, 55, 0, time.UTC)))
		p = commonPrefix(p, render(time.Date(2024, 7, 15, 22, 31, 17, 0, time.UTC)))
		out = []string{p}
	} else {
		seen := map[string]bool{}
		for t := w.Start.Truncate(time.Hour); t.Before(w.End); t = t.Add(time.Hour) {
			p := render(t)
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	// Drop prefixes another prefix covers, so no object is listed twice.
	sort.Strings(out)
	kept := out[:0]
	for _, p := range out {
		if len(kept) > 0 && strings.HasPrefix(p, kept[len(kept)-1]) {
			continue
		}
		kept = append(kept, p)
	}
	return kept, nil
}

// partitionPrefixer returns the key prefix records of time t go under:
// the format rendered with two hostnames and two tags, cut where the
// renders differ or at the $UUID/$INDEX marker.
func partitionPrefixer(keyFormat string) (func(time.Time) string, error) {
	// The stand-ins differ in their first character, so the common
	// prefix ends where the real host name or tag would begin.
	k1, err := ship.CompileKeyFormat("", keyFormat, "A")
	if err != nil {
		return nil, err
	}
	k2, err := ship.CompileKeyFormat("", keyFormat, "B")
	if err != nil {
		return nil, err
	}
	return func(t time.Time) string {
		ms := t.UnixMilli()
		p := commonPrefix(k1.Partition(ms, "A"), k2.Partition(ms, "B"))
		if i := strings.IndexByte(p, 0); i >= 0 {
			p = p[:i]
		}
		return p
	}, nil
}

func commonPrefix(a, b string) string {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return a[:i]
		}
	}
	return a[:n]
}

// subHour reports whether a key format has a conversion that changes
// within an hour.
func subHour(format string) bool {
	for i := 0; i+1 < len(format); i++ {
		if format[i] == '%' {
			switch format[i+1] {
			case 'M', 'S', 's', 'T', 'R', 'c', 'r', 'X':
				return true
			}
			i++
		}
	}
	return false
}
