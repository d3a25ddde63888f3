package export

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/klauspost/compress/gzip"
	"go.uber.org/zap"

	"github.com/metership/metership/internal/fsutil"
	"github.com/metership/metership/ship"
)

// Run results.
const (
	ResultSuccess = "success" // the object was written by this run
	ResultExists  = "exists"  // an earlier run of the window wrote it: nothing new
	ResultFailure = "failure"
)

// Run is the record of one run, shown as a job's lastRun.
type Run struct {
	ScheduledTime int64  `json:"scheduledTimeInSeconds"`
	StartTime     int64  `json:"startTimeInMillis"`
	EndTime       int64  `json:"endTimeInMillis"`
	WindowStart   int64  `json:"windowStartTimeInSeconds,omitempty"`
	WindowEnd     int64  `json:"windowEndTimeInSeconds,omitempty"`
	Result        string `json:"result"`
	Rows          int64  `json:"rows"`
	Bytes         int64  `json:"bytes"`
	Records       int64  `json:"records"`
	Objects       int    `json:"sourceObjects"`
	Key           string `json:"key,omitempty"`
	Error         string `json:"error,omitempty"`
}

// Manifest is written beside each export as <key>.manifest.json so a
// reader can check the export is whole: its size and SHA-256, the window
// and the shipped objects it was computed from.
type Manifest struct {
	JobID         string   `json:"jobId"`
	JobName       string   `json:"jobName"`
	Key           string   `json:"key"`
	Format        string   `json:"format"`
	WindowStart   string   `json:"windowStart"`
	WindowEnd     string   `json:"windowEnd"`
	Rows          int64    `json:"rows"`
	Bytes         int64    `json:"bytes"`
	SHA256        string   `json:"sha256"`
	Records       int64    `json:"records"`
	Source        string   `json:"source"`
	SourceObjects []string `json:"sourceObjects"`
	CreatedAt     string   `json:"createdAt"`
}

// Sink writes export objects. PutNew never replaces: written is false
// when the key already exists.
type Sink interface {
	PutNew(ctx context.Context, key string, body []byte, contentType string) (written bool, err error)
}

// S3Sink writes with PutObject If-None-Match: * and the
// bucket-owner-full-control ACL, and nothing else: a destination policy
// granting only s3:PutObject (and requiring that ACL) is enough.
type S3Sink struct {
	Client *s3.Client
	Bucket string
}

// PutNew puts body at key unless it exists.
func (s *S3Sink) PutNew(ctx context.Context, key string, body []byte, contentType string) (bool, error) {
	_, err := s.Client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: &s.Bucket, Key: &key, Body: bytes.NewReader(body),
		IfNoneMatch: aws.String("*"), ACL: types.ObjectCannedACLBucketOwnerFullControl,
		ContentType: aws.String(contentType),
	}, withRetries)
	if isPrecondition(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("put s3://%s/%s: %w", s.Bucket, key, err)
	}
	return true, nil
}

// DirSink writes files under a directory: temp file, fsync, then a hard
// link to the final name, which fails if it exists (never replaces).
type DirSink struct{ Dir string }

// PutNew writes key unless it exists.
func (s *DirSink) PutNew(ctx context.Context, key string, body []byte, contentType string) (bool, error) {
	final := filepath.Join(s.Dir, filepath.FromSlash(key))
	dir := filepath.Dir(final)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	f, err := os.CreateTemp(dir, ".export-*"+fsutil.TmpSuffix)
	if err != nil {
		return false, err
	}
	tmp := f.Name()
	defer os.Remove(tmp) //nolint:errcheck // best effort: gone after the rename
	_, err = f.Write(body)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, err
	}
	if err := os.Link(tmp, final); errors.Is(err, os.ErrExist) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	return true, fsutil.SyncDir(dir)
}

// Runner executes jobs: it reads the shipped objects back, aggregates and
// writes the result. Safe for concurrent use.
type Runner struct {
	Source    Source
	KeyFormat string // output.key_format
	// Sink returns where a job's s3Url points.
	Sink func(loc Location) (Sink, error)
	Log  *zap.Logger
	// Workers read objects in parallel; default GOMAXPROCS.
	Workers int
	Now     func() time.Time
}

// ObjectKey is the deterministic key of a job's export for a window,
// relative to the sink: <s3Url path>/<jobName>/<start>_<end>.<format>.
func ObjectKey(loc Location, j *Job, w Window) string {
	name := j.JobName + "/" + keyTime(w.Start) + "_" + keyTime(w.End) + "." + j.Format
	if loc.Scheme == ship.SchemeS3 && loc.Prefix != "" {
		return loc.Prefix + "/" + name
	}
	return name
}

// Run exports job as of at (its scheduled time, so a retry of the same
// firing exports the same window to the same key).
func (r *Runner) Run(ctx context.Context, j *Job, at time.Time) *Run {
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	run := &Run{ScheduledTime: at.Unix(), StartTime: now().UnixMilli()}
	err := r.run(ctx, j, at, run)
	run.EndTime = now().UnixMilli()
	if err != nil {
		run.Result = ResultFailure
		run.Error = err.Error()
	}
	return run
}

func (r *Runner) run(ctx context.Context, j *Job, at time.Time, run *Run) error {
	plan, err := NewPlan(j, at)
	if err != nil {
		return err
	}
	w := plan.Window()
	run.WindowStart, run.WindowEnd = plan.StartTimeSeconds, plan.EndTimeSeconds
	loc, err := ParseLocation(j.S3URL)
	if err != nil {
		return fmt.Errorf("s3Url: %w", err)
	}
	sink, err := r.Sink(loc)
	if err != nil {
		return err
	}
	agg, objects, err := r.Aggregate(ctx, plan)
	if err != nil {
		return err
	}
	rows := agg.rows()
	body, err := Render(j.Format, j.GroupBy, rows)
	if err != nil {
		return err
	}
	key := ObjectKey(loc, j, w)
	run.Key, run.Rows, run.Bytes, run.Records, run.Objects = key, int64(len(rows)), int64(len(body)), agg.Records, len(objects)
	written, err := sink.PutNew(ctx, key, body, contentTypes[j.Format])
	if err != nil {
		return err
	}
	sum := sha256.Sum256(body)
	m := Manifest{
		JobID: j.ID, JobName: j.JobName, Key: key, Format: j.Format,
		WindowStart: plan.Start, WindowEnd: plan.End,
		Rows: int64(len(rows)), Bytes: int64(len(body)), SHA256: hex.EncodeToString(sum[:]),
		Records: agg.Records, Source: r.Source.String(), SourceObjects: objects,
		CreatedAt: at.UTC().Format(time.RFC3339),
	}
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	// The manifest follows the object: a crash between the two leaves an
	// object without a manifest, and the retry (same key, 412 on the
	// object) writes the manifest. Like the object it is never replaced.
	if _, err := sink.PutNew(ctx, key+".manifest.json", mb, "application/json"); err != nil {
		return err
	}
	if written {
		run.Result = ResultSuccess
	} else {
		run.Result = ResultExists
	}
	return nil
}

var contentTypes = map[string]string{"csv": "text/csv", "json": "application/json", "ndjson": "application/x-ndjson"}

// Aggregate reads every shipped object the plan's window can touch and
// sums its records; objects are the keys read, sorted.
func (r *Runner) Aggregate(ctx context.Context, plan *Plan) (*aggregator, []string, error) {
	prefixes, err := sourcePrefixes(r.KeyFormat, plan.Window())
	if err != nil {
		return nil, nil, err
	}
	seen := map[string]bool{}
	var keys []string
	for _, p := range prefixes {
		ks, err := r.Source.List(ctx, p)
		if err != nil {
			return nil, nil, err
		}
		for _, k := range ks {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	sort.Strings(keys)
	workers := r.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = min(workers, max(1, len(keys)))
	jobs := make(chan string)
	aggs := make([]*aggregator, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i := range workers {
		aggs[i] = newAggregator(plan)
		wg.Add(1)
		go func() {
			defer wg.Done()
			zr := new(gzip.Reader)
			br := bufio.NewReaderSize(nil, 256<<10)
			for k := range jobs {
				if errs[i] != nil {
					continue
				}
				if err := r.readOne(ctx, aggs[i], k, zr, br); err != nil {
					errs[i] = err
					cancel()
				}
			}
		}()
	}
	for _, k := range keys {
		if ctx.Err() != nil {
			break
		}
		jobs <- k
	}
	close(jobs)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	for _, a := range aggs[1:] {
		aggs[0].merge(a)
	}
	if aggs[0].Invalid > 0 && r.Log != nil {
		r.Log.Warn("export: lines that are not meter records were skipped", zap.Int64("lines", aggs[0].Invalid))
	}
	return aggs[0], keys, nil
}

func (r *Runner) readOne(ctx context.Context, a *aggregator, key string, zr *gzip.Reader, br *bufio.Reader) error {
	rc, err := r.Source.Open(ctx, key)
	if err != nil {
		return err
	}
	defer rc.Close() //nolint:errcheck // read-only
	if err := a.readObject(rc, zr, br); err != nil {
		return fmt.Errorf("read %s: %w", key, err)
	}
	return nil
}

// Render writes rows as csv, json or ndjson. Columns: time (RFC 3339
// UTC bucket start), meterApiName, the groupBy names, value.
func Render(format string, groupBy []string, rows []Row) ([]byte, error) {
	var buf bytes.Buffer
	switch format {
	case "csv":
		w := csv.NewWriter(&buf)
		_ = w.Write(append(append([]string{"time", "meterApiName"}, groupBy...), "value"))
		rec := make([]string, 0, len(groupBy)+3)
		for _, r := range rows {
			rec = append(rec[:0], r.Time.Format(time.RFC3339), r.Meter)
			rec = append(rec, r.Groups...)
			rec = append(rec, r.Value)
			_ = w.Write(rec)
		}
		w.Flush()
		return buf.Bytes(), w.Error()
	case "json", "ndjson":
		if format == "json" {
			buf.WriteByte('[')
		}
		for i, r := range rows {
			if format == "json" && i > 0 {
				buf.WriteByte(',')
			}
			buf.WriteString(`{"time":`)
			writeJSONString(&buf, r.Time.Format(time.RFC3339))
			buf.WriteString(`,"meterApiName":`)
			writeJSONString(&buf, r.Meter)
			for g, name := range groupBy {
				buf.WriteByte(',')
				writeJSONString(&buf, name)
				buf.WriteByte(':')
				writeJSONString(&buf, r.Groups[g])
			}
			buf.WriteString(`,"value":`)
			buf.WriteString(r.Value)
			buf.WriteByte('}')
			if format == "ndjson" {
				buf.WriteByte('\n')
			}
		}
		if format == "json" {
			buf.WriteString("]\n")
		}
		return buf.Bytes(), nil
	}
	return nil, fmt.Errorf("format %q not supported", format)
}

func writeJSONString(buf *bytes.Buffer, s string) {
	b, _ := json.Marshal(s)
	buf.Write(b)
}

// Describe is a run's one-line summary (logs and mail).
func (run *Run) Describe(j *Job) string {
	var b strings.Builder
	fmt.Fprintf(&b, "export job %q: %s", j.JobName, run.Result)
	if run.Key != "" {
		fmt.Fprintf(&b, ", key %s, %d rows, %d bytes from %d records in %d objects", run.Key, run.Rows, run.Bytes, run.Records, run.Objects)
	}
	if run.Error != "" {
		fmt.Fprintf(&b, ": %s", run.Error)
	}
	return b.String()
}
