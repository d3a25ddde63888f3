package ship

import (
	"errors"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		url            string
		want           Destination
		deadLetterRoot string
		str            string
	}{
		{"s3://bucket/ingest/amberdata", Destination{Scheme: SchemeS3, Bucket: "bucket", Prefix: "ingest/amberdata"}, "", "s3://bucket/ingest/amberdata"},
		{"s3://my.bucket-1/ingest/amberdata/", Destination{Scheme: SchemeS3, Bucket: "my.bucket-1", Prefix: "ingest/amberdata"}, "", "s3://my.bucket-1/ingest/amberdata"},
		{"s3://bucket", Destination{Scheme: SchemeS3, Bucket: "bucket"}, "", "s3://bucket"},
		{"s3://bucket/", Destination{Scheme: SchemeS3, Bucket: "bucket"}, "", "s3://bucket"},
		{"file:///var/lib/metership/out/ingest/amberdata", Destination{Scheme: SchemeFile, Dir: "/var/lib/metership/out/ingest/amberdata"}, "/var/lib/metership/out", "file:///var/lib/metership/out/ingest/amberdata"},
		{"file:///data/out/", Destination{Scheme: SchemeFile, Dir: "/data/out"}, "/data/out", "file:///data/out"},
		{"file:///ingest/amberdata", Destination{Scheme: SchemeFile, Dir: "/ingest/amberdata"}, "/", "file:///ingest/amberdata"},
		{"file:///data/my-ingest/amberdata", Destination{Scheme: SchemeFile, Dir: "/data/my-ingest/amberdata"}, "/data/my-ingest/amberdata", "file:///data/my-ingest/amberdata"},
		{"file://localhost/data", Destination{Scheme: SchemeFile, Dir: "/data"}, "/data", "file:///data"},
		{"file://./out/ingest/amberdata", Destination{Scheme: SchemeFile, Dir: "out/ingest/amberdata"}, "out", "file://./out/ingest/amberdata"},
		{"file://./ingest/amberdata", Destination{Scheme: SchemeFile, Dir: "ingest/amberdata"}, ".", "file://./ingest/amberdata"},
		{"file://../shared/out", Destination{Scheme: SchemeFile, Dir: "../shared/out"}, "../shared/out", "file://../shared/out"},
		{"file:///data/with%20space", Destination{Scheme: SchemeFile, Dir: "/data/with space"}, "/data/with space", "file:///data/with space"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			d, err := ParseURL(tt.url)
			if err != nil {
				t.Fatalf("ParseURL: %v", err)
			}
			if d != tt.want {
				t.Fatalf("ParseURL = %+v, want %+v", d, tt.want)
			}
			if got := d.DeadLetterRoot(); got != tt.deadLetterRoot {
				t.Errorf("DeadLetterRoot = %q, want %q", got, tt.deadLetterRoot)
			}
			if got := d.String(); got != tt.str {
				t.Errorf("String = %q, want %q", got, tt.str)
			}
		})
	}
}

func TestParseURLErrors(t *testing.T) {
	tests := []struct {
		url  string
		want string
	}{
		{"", "empty; use s3://bucket/prefix or file:///dir"},
		{"ftp://host/x", `output.url: scheme "ftp" not supported; use s3:// or file://`},
		{"https://bucket.s3.amazonaws.com/x", `scheme "https" not supported`},
		{"bucket/prefix", "missing scheme"},
		{"s3:///prefix", "missing bucket"},
		{"s3://", "missing bucket"},
		{"s3:bucket/prefix", "write s3://bucket/prefix"},
		{"s3://Bucket/x", `character 'B' not allowed`},
		{"s3://my_bucket/x", `character '_' not allowed`},
		{"s3://ab/x", "must be 3 to 63 characters"},
		{"s3://-bucket/x", "must start and end with a letter or digit"},
		{"s3://bucket:9000/x", "set output.endpoint"},
		{"s3://key:secret@bucket/x", "credentials do not belong in the URL"},
		{"s3://bucket/x?region=eu-west-1", "query parameters not supported"},
		{"s3://bucket/x#frag", "fragment not supported"},
		{"s3://bucket/a//b", "empty path element"},
		{"file://", "missing directory"},
		{"file:///", "missing directory"},
		{"file://host/dir", `host "host" not supported`},
		{"file:relative", "write file:///absolute/dir"},
		{"file:///dir?x=1", "query and fragment not supported"},
		{"s3://bu%zzcket/x", "invalid URL escape"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			_, err := ParseURL(tt.url)
			if err == nil {
				t.Fatalf("ParseURL(%q) succeeded", tt.url)
			}
			if !errors.Is(err, ErrURL) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %q, want ErrURL mentioning %q", err, tt.want)
			}
		})
	}
}
