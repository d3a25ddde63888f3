package export

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/metership/metership/internal/fsutil"
)

// Store errors.
var (
	// ErrNotFound: no job with that id.
	ErrNotFound = errors.New("job not found")
	// ErrExists: a create found the id taken.
	ErrExists = errors.New("job already exists")
	// ErrConflict: the job changed since it was read; read it again and
	// re-apply the change.
	ErrConflict = errors.New("job was changed concurrently")
)

// NameTakenError: another job has the name.
type NameTakenError struct{ Name, ID string }

func (e *NameTakenError) Error() string {
	return fmt.Sprintf("%q is taken by job %s", e.Name, e.ID)
}

// Store keeps jobs and each job's last run. Version strings make updates
// conditional: Update succeeds only when the stored job is still the
// version the caller read, so two servers updating one job never lose an
// update (the second gets ErrConflict and retries on fresh data). Names
// are unique: Create and a renaming Update return *NameTakenError.
type Store interface {
	List(ctx context.Context) ([]*Job, error)
	Get(ctx context.Context, id string) (job *Job, version string, err error)
	Create(ctx context.Context, j *Job) error
	Update(ctx context.Context, j *Job, version string) error
	Delete(ctx context.Context, id string) error
	GetRun(ctx context.Context, id string) (*Run, error)
	PutRun(ctx context.Context, id string, r *Run) error
}

// validID guards store paths: ids are generated (UUIDs), but they also
// arrive in URLs.
func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func encodeJob(j *Job) ([]byte, error) { return json.MarshalIndent(j, "", "  ") }

func decodeStored(b []byte) (*Job, error) {
	j := &Job{}
	if err := json.Unmarshal(b, j); err != nil {
		return nil, fmt.Errorf("stored job is corrupt: %w", err)
	}
	return j, nil
}

func version(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:16])
}

// FileStore keeps jobs as JSON files in a directory (jobs/<id>.json,
// runs/<id>.json), each written temp -> fsync -> rename -> fsync dir. It
// serves one process: mu guards every read-check-write below.
type FileStore struct {
	dir string
	mu  sync.Mutex
}

// NewFileStore opens (creating) a directory store.
func NewFileStore(dir string) (*FileStore, error) {
	for _, sub := range []string{"jobs", "runs"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("jobs store: %w", err)
		}
	}
	return &FileStore{dir: dir}, nil
}

func (s *FileStore) path(kind, id string) string { return filepath.Join(s.dir, kind, id+".json") }

// List returns every job, sorted by name.
func (s *FileStore) List(ctx context.Context) ([]*Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ents, err := os.ReadDir(filepath.Join(s.dir, "jobs"))
	if err != nil {
		return nil, err
	}
	var out []*Job
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !validID(id) {
			continue
		}
		b, err := os.ReadFile(s.path("jobs", id))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		j, err := decodeStored(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", id, err)
		}
		out = append(out, j)
	}
	sortJobs(out)
	return out, nil
}

func sortJobs(js []*Job) {
	sort.Slice(js, func(a, b int) bool { return js[a].JobName < js[b].JobName })
}

// Get returns one job and its version.
func (s *FileStore) Get(ctx context.Context, id string) (*Job, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.get(id)
}

func (s *FileStore) get(id string) (*Job, string, error) {
	if !validID(id) {
		return nil, "", ErrNotFound
	}
	b, err := os.ReadFile(s.path("jobs", id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, "", ErrNotFound
	}
	if err != nil {
		return nil, "", err
	}
	j, err := decodeStored(b)
	return j, version(b), err
}

// Create stores a new job; ErrExists when its id is taken.
func (s *FileStore) Create(ctx context.Context, j *Job) error {
	b, err := encodeJob(j)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := os.Stat(s.path("jobs", j.ID)); err == nil {
		return ErrExists
	}
	if err := s.nameFree(j); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(filepath.Join(s.dir, "jobs"), j.ID+".json", b, 0o644, nil)
}

// Update replaces a job if it is still at version.
func (s *FileStore) Update(ctx context.Context, j *Job, ver string) error {
	b, err := encodeJob(j)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, cur, err := s.get(j.ID)
	if err != nil {
		return err
	}
	if cur != ver {
		return ErrConflict
	}
	if err := s.nameFree(j); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(filepath.Join(s.dir, "jobs"), j.ID+".json", b, 0o644, nil)
}

// nameFree checks, under mu, that no other job has j's name.
func (s *FileStore) nameFree(j *Job) error {
	ents, err := os.ReadDir(filepath.Join(s.dir, "jobs"))
	if err != nil {
		return err
	}
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || id == j.ID || !validID(id) {
			continue
		}
		o, _, err := s.get(id)
		if err != nil {
			continue
		}
		if o.JobName == j.JobName {
			return &NameTakenError{Name: j.JobName, ID: id}
		}
	}
	return nil
}

// Delete removes a job and its run record.
func (s *FileStore) Delete(ctx context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !validID(id) {
		return ErrNotFound
	}
	if err := os.Remove(s.path("jobs", id)); errors.Is(err, os.ErrNotExist) {
		return ErrNotFound
	} else if err != nil {
		return err
	}
	if err := os.Remove(s.path("runs", id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return fsutil.SyncDir(filepath.Join(s.dir, "jobs"))
}

// GetRun returns a job's last run, nil if it never ran.
func (s *FileStore) GetRun(ctx context.Context, id string) (*Run, error) {
	if !validID(id) {
		return nil, nil
	}
	b, err := os.ReadFile(s.path("runs", id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	r := &Run{}
	return r, json.Unmarshal(b, r)
}

// PutRun records a job's last run.
func (s *FileStore) PutRun(ctx context.Context, id string, r *Run) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := os.Stat(s.path("jobs", id)); err != nil {
		return nil // deleted while it ran: keep no orphan record
	}
	return fsutil.WriteFileAtomic(filepath.Join(s.dir, "runs"), id+".json", b, 0o644, nil)
}

// S3Store keeps jobs as objects (<prefix>/jobs/<id>.json,
// <prefix>/runs/<id>.json) for several servers: creates are PutObject
// If-None-Match: *, updates PutObject If-Match: <ETag read>, so of two
// concurrent updates exactly one wins and the other gets ErrConflict.
type S3Store struct {
	client *s3.Client
	bucket string
	prefix string
}

// NewS3Store returns a store on bucket/prefix through client.
func NewS3Store(client *s3.Client, bucket, prefix string) *S3Store {
	return &S3Store{client: client, bucket: bucket, prefix: strings.Trim(prefix, "/")}
}

func (s *S3Store) key(kind, id string) string {
	if s.prefix == "" {
		return kind + "/" + id + ".json"
	}
	return s.prefix + "/" + kind + "/" + id + ".json"
}

// List returns every job, sorted by name.
func (s *S3Store) List(ctx context.Context) ([]*Job, error) {
	pfx := strings.TrimSuffix(s.key("jobs", "x"), "x.json")
	var out []*Job
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: &pfx})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("jobs store: list: %w", err)
		}
		for _, o := range page.Contents {
			id, ok := strings.CutSuffix(strings.TrimPrefix(aws.ToString(o.Key), pfx), ".json")
			if !ok || !validID(id) {
				continue
			}
			j, _, err := s.Get(ctx, id)
			if errors.Is(err, ErrNotFound) {
				continue // deleted since the listing
			}
			if err != nil {
				return nil, err
			}
			out = append(out, j)
		}
	}
	sortJobs(out)
	return out, nil
}

// Get returns one job and its ETag.
func (s *S3Store) Get(ctx context.Context, id string) (*Job, string, error) {
	if !validID(id) {
		return nil, "", ErrNotFound
	}
	b, etag, err := s.getObject(ctx, s.key("jobs", id))
	if err != nil {
		return nil, "", err
	}
	j, err := decodeStored(b)
	return j, etag, err
}

func (s *S3Store) getObject(ctx context.Context, key string) ([]byte, string, error) {
	b, etag, _, err := s.getObjectAt(ctx, key)
	return b, etag, err
}

// getObjectAt is getObject with the object's Last-Modified time.
func (s *S3Store) getObjectAt(ctx context.Context, key string) ([]byte, string, time.Time, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: &key})
	if err != nil {
		var nsk *types.NoSuchKey
		if errors.As(err, &nsk) || httpStatus(err) == 404 {
			return nil, "", time.Time{}, ErrNotFound
		}
		return nil, "", time.Time{}, fmt.Errorf("jobs store: get %s: %w", key, err)
	}
	defer out.Body.Close() //nolint:errcheck // read in full and checked below
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, "", time.Time{}, fmt.Errorf("jobs store: get %s: %w", key, err)
	}
	return b, aws.ToString(out.ETag), aws.ToTime(out.LastModified), nil
}

// claimGrace is how long a name claim whose job does not exist yet is
// taken to be a create in progress on another server (claim written, job
// not yet): only an older one is stale. It also absorbs clock skew
// between this server and the store's.
const claimGrace = 5 * time.Minute

// nameKey is where a name's claim lives (names/<hash>.json, holding the
// id of the job with that name).
func (s *S3Store) nameKey(name string) string {
	h := sha256.Sum256([]byte(name))
	return s.key("names", hex.EncodeToString(h[:16]))
}

// claim makes job id the owner of name: the claim object is created with
// If-None-Match: *, so of two servers creating one name only one gets
// it. A claim released by Delete, or whose job was renamed, is stale and
// taken over with If-Match on its ETag; so is one whose job does not
// exist once claimGrace has passed (a create that died between its claim
// and its job). A younger claim without its job is a create in progress
// elsewhere: the name is taken. Claims are never deleted: a stale one
// costs a few bytes, and deleting could race with a server taking it over.
func (s *S3Store) claim(ctx context.Context, name, id string) error {
	key := s.nameKey(name)
	body := []byte(`{"id":"` + id + `"}`)
	put := func(cond func(*s3.PutObjectInput)) error {
		in := &s3.PutObjectInput{Bucket: &s.bucket, Key: &key, Body: bytes.NewReader(body), ContentType: aws.String("application/json")}
		cond(in)
		_, err := s.client.PutObject(ctx, in)
		return err
	}
	for range 5 {
		err := put(func(in *s3.PutObjectInput) { in.IfNoneMatch = aws.String("*") })
		if err == nil {
			return nil
		}
		if !isPrecondition(err) {
			return fmt.Errorf("jobs store: claim name: %w", err)
		}
		b, etag, modified, err := s.getObjectAt(ctx, key)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		var c struct{ ID string }
		_ = json.Unmarshal(b, &c)
		if c.ID == id {
			return nil
		}
		if c.ID != "" {
			owner, _, err := s.Get(ctx, c.ID)
			switch {
			case err == nil && owner.JobName == name:
				return &NameTakenError{Name: name, ID: c.ID}
			case errors.Is(err, ErrNotFound) && time.Since(modified) < claimGrace:
				return &NameTakenError{Name: name, ID: c.ID}
			case err != nil && !errors.Is(err, ErrNotFound):
				return err
			}
		}
		err = put(func(in *s3.PutObjectInput) { in.IfMatch = aws.String(etag) })
		if err == nil {
			return nil
		}
		if !isPrecondition(err) {
			return fmt.Errorf("jobs store: claim name: %w", err)
		}
	}
	return ErrConflict
}

// Create claims the job's name, then stores it with If-None-Match: *.
func (s *S3Store) Create(ctx context.Context, j *Job) error {
	b, err := encodeJob(j)
	if err != nil {
		return err
	}
	if err := s.claim(ctx, j.JobName, j.ID); err != nil {
		return err
	}
	key := s.key("jobs", j.ID)
	_, err = s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: &s.bucket, Key: &key, Body: bytes.NewReader(b),
		IfNoneMatch: aws.String("*"), ContentType: aws.String("application/json"),
	})
	if isPrecondition(err) {
		return ErrExists
	}
	if err != nil {
		return fmt.Errorf("jobs store: create %s: %w", key, err)
	}
	return nil
}

// Update claims the job's name (a no-op when unchanged) and replaces
// the job with If-Match: version.
func (s *S3Store) Update(ctx context.Context, j *Job, ver string) error {
	b, err := encodeJob(j)
	if err != nil {
		return err
	}
	if err := s.claim(ctx, j.JobName, j.ID); err != nil {
		return err
	}
	key := s.key("jobs", j.ID)
	_, err = s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: &s.bucket, Key: &key, Body: bytes.NewReader(b),
		IfMatch: aws.String(ver), ContentType: aws.String("application/json"),
	})
	switch {
	case isPrecondition(err):
		return ErrConflict
	case httpStatus(err) == 404:
		return ErrNotFound
	case err != nil:
		return fmt.Errorf("jobs store: update %s: %w", key, err)
	}
	return nil
}

// Delete removes a job and its run record.
func (s *S3Store) Delete(ctx context.Context, id string) error {
	j, _, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	for _, kind := range []string{"jobs", "runs"} {
		key := s.key(kind, id)
		if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &key}); err != nil && httpStatus(err) != 404 {
			return fmt.Errorf("jobs store: delete %s: %w", key, err)
		}
	}
	return s.release(ctx, j.JobName, id)
}

// release frees name if job id still holds its claim, so it can be used
// again at once (a claim without its job would hold it for claimGrace).
// A failed release only delays reuse of the name.
func (s *S3Store) release(ctx context.Context, name, id string) error {
	key := s.nameKey(name)
	b, etag, err := s.getObject(ctx, key)
	if err != nil {
		return nil
	}
	var c struct{ ID string }
	if json.Unmarshal(b, &c) != nil || c.ID != id {
		return nil
	}
	_, _ = s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: &s.bucket, Key: &key, Body: bytes.NewReader([]byte(`{"id":""}`)),
		IfMatch: aws.String(etag), ContentType: aws.String("application/json"),
	})
	return nil
}

// GetRun returns a job's last run, nil if it never ran.
func (s *S3Store) GetRun(ctx context.Context, id string) (*Run, error) {
	if !validID(id) {
		return nil, nil
	}
	b, _, err := s.getObject(ctx, s.key("runs", id))
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	r := &Run{}
	return r, json.Unmarshal(b, r)
}

// PutRun records a job's last run (last writer wins: runs of one window
// are idempotent, and any of them describes the object).
func (s *S3Store) PutRun(ctx context.Context, id string, r *Run) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, _, err := s.Get(ctx, id); errors.Is(err, ErrNotFound) {
		return nil // deleted while it ran: keep no orphan record
	}
	key := s.key("runs", id)
	_, err = s.client.PutObject(ctx, &s3.PutObjectInput{Bucket: &s.bucket, Key: &key, Body: bytes.NewReader(b), ContentType: aws.String("application/json")})
	if err != nil {
		return fmt.Errorf("jobs store: run record %s: %w", key, err)
	}
	return nil
}

func isPrecondition(err error) bool {
	if err == nil {
		return false
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "PreconditionFailed", "ConditionalRequestConflict":
			return true
		}
	}
	s := httpStatus(err)
	return s == 412 || s == 409
}

func httpStatus(err error) int {
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}
