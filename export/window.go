package export

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/metership/metership/ship"
)

// Location is a parsed s3Url: an S3 bucket and prefix, or a directory.
type Location struct {
	ship.Destination
	// Bare is true when the s3Url had no scheme: bucket/path on the S3
	// service output uses (or jobs.s3).
	Bare bool
}

// ParseLocation reads an s3Url: bucket/path, s3://bucket/path or
// file:///dir (file://./dir relative to the working directory).
func ParseLocation(s string) (Location, error) {
	bare := !strings.Contains(s, "://")
	raw := s
	if bare {
		raw = "s3://" + s
	}
	d, err := ship.ParseURL(raw)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), ship.ErrURL.Error()+" ")
		msg = strings.TrimPrefix(msg, ship.ErrURL.Error()+": ")
		return Location{}, errors.New(strings.ReplaceAll(msg, "output.", "jobs.s3 / output."))
	}
	return Location{Destination: d, Bare: bare}, nil
}

// Window is the half-open time range [Start, End) a run exports, in whole
// buckets.
type Window struct {
	Start, End time.Time
}

// Window returns the window a run at now exports: [now - range,
// now - endTimeOffset) widened to whole buckets; with minimizeFresh the end
// is cut back to the start of the bucket still open at now - endTimeOffset,
// so only complete buckets are exported.
func (j *Job) Window(now time.Time) (Window, error) {
	rng, err := ParseAgo(j.Range)
	if err != nil {
		return Window{}, err
	}
	var off time.Duration
	if j.EndTimeOffset != "" {
		if off, err = ParseAgo(j.EndTimeOffset); err != nil {
			return Window{}, err
		}
	}
	now = now.UTC()
	start := BucketStart(j.AggregationBucket, now.Add(-rng))
	endAt := now.Add(-off)
	end := BucketStart(j.AggregationBucket, endAt)
	if !j.MinimizeFresh && end.Before(endAt) {
		end = NextBucket(j.AggregationBucket, end)
	}
	if !end.After(start) {
		return Window{}, fmt.Errorf("the window [%s, %s) is empty: range must reach further back than endTimeOffset", start.Format(time.RFC3339), end.Format(time.RFC3339))
	}
	return Window{Start: start, End: end}, nil
}

// BucketStart is the start of the bucket holding t, in UTC: weeks start
// on Monday.
func BucketStart(bucket string, t time.Time) time.Time {
	t = t.UTC()
	switch bucket {
	case "hour":
		return t.Truncate(time.Hour)
	case "day":
		return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	case "week":
		d := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
		back := (int(d.Weekday()) + 6) % 7 // days since Monday
		return d.AddDate(0, 0, -back)
	case "month":
		return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	}
	panic("export: unknown bucket " + bucket)
}

// NextBucket is the start of the bucket after the one starting at b.
func NextBucket(bucket string, b time.Time) time.Time {
	switch bucket {
	case "hour":
		return b.Add(time.Hour)
	case "day":
		return b.AddDate(0, 0, 1)
	case "week":
		return b.AddDate(0, 0, 7)
	case "month":
		return b.AddDate(0, 1, 0)
	}
	panic("export: unknown bucket " + bucket)
}

// Buckets lists the bucket starts of w.
func (w Window) Buckets(bucket string) []time.Time {
	var out []time.Time
	for b := w.Start; b.Before(w.End); b = NextBucket(bucket, b) {
		out = append(out, b)
	}
	return out
}

// keyTime renders a window bound for an object key: compact ISO 8601
// basic format, sortable and free of ':'.
func keyTime(t time.Time) string { return t.UTC().Format("20060102T150405Z") }
