package ship

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/metership/metership/internal/testutil/faultproxy"
	"github.com/metership/metership/internal/testutil/s3server"
)

const testPrefix = "ingest/amberdata"

// newS3 returns an uploader for srv's bucket through endpoint (the server
// or a fault proxy in front of it).
func newS3(t *testing.T, srv *s3server.Server, endpoint string, mod func(*S3Options)) *S3Uploader {
	t.Helper()
	opts := S3Options{
		Bucket:         srv.Bucket(),
		Prefix:         testPrefix,
		Region:         s3server.Region,
		Endpoint:       endpoint,
		ForcePathStyle: true,
		Credentials:    srv.Credentials(),
	}
	if mod != nil {
		mod(&opts)
	}
	u, err := NewS3Uploader(context.Background(), opts)
	if err != nil {
		t.Fatalf("NewS3Uploader: %v", err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func head(t *testing.T, srv *s3server.Server, key string) *s3.HeadObjectOutput {
	t.Helper()
	out, err := srv.Client().HeadObject(testCtx(t), &s3.HeadObjectInput{Bucket: aws.String(srv.Bucket()), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("HeadObject %s: %v", key, err)
	}
	return out
}

func randomBody(n int, seed uint64) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed)}).Read(b)
	return b
}

func TestS3PutCreatesObjects(t *testing.T) {
	srv := s3server.Start(t)
	proxy := faultproxy.Start(t, srv.Endpoint())
	u := newS3(t, srv, proxy.URL(), nil)

	seg := segment{rec(ts, meter(1, ts)), rec(ts+1, meter(2, ts)), dead(ts, `{"source":"s","offset":1,"line":"x","reason":"bad"}`)}
	objs, err := mustEncoder(t, EncoderOptions{}).Encode("agent", 1, seg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range objs {
		if err := u.Put(testCtx(t), &objs[i]); err != nil {
			t.Fatalf("Put %s: %v", objs[i].Key, err)
		}
	}
	stored := srv.ListObjects(t)
	if len(stored) != 2 {
		t.Fatalf("bucket holds %d objects, want 2: %+v", len(stored), stored)
	}
	for _, o := range objs {
		key := testPrefix + "/" + o.Key
		if o.DeadLetter {
			key = o.Key
		}
		if key != u.ObjectKey(&o) {
			t.Errorf("ObjectKey = %q, want %q", u.ObjectKey(&o), key)
		}
		if got := srv.GetObject(t, key); !bytes.Equal(got, o.Body) {
			t.Fatalf("object %s: stored %d bytes differ from the %d uploaded", key, len(got), len(o.Body))
		}
		h := head(t, srv, key)
		if aws.ToString(h.ContentType) != ContentTypeNDJSON || aws.ToString(h.ContentEncoding) != "gzip" {
			t.Errorf("object %s: Content-Type %q, Content-Encoding %q", key, aws.ToString(h.ContentType), aws.ToString(h.ContentEncoding))
		}
	}
	if c := proxy.Counts(); c.Methods["PUT 200"] != 2 || c.Requests != 2 {
		t.Errorf("proxy saw %+v, want exactly two PUTs answered 200", c)
	}
}

// TestS3PutExistingKeyIsNoop proves the If-None-Match path: the second Put
// of a key is answered 412 by the server, reported as success, and leaves
// the stored object untouched.
func TestS3PutExistingKeyIsNoop(t *testing.T) {
	srv := s3server.Start(t)
	proxy := faultproxy.Start(t, srv.Endpoint())
	u := newS3(t, srv, proxy.URL(), nil)

	first := &Object{Key: "06-07-2022/k.gz", Body: []byte("first body"), ContentType: ContentTypeNDJSON}
	if err := u.Put(testCtx(t), first); err != nil {
		t.Fatal(err)
	}
	h := head(t, srv, testPrefix+"/"+first.Key)
	if got := h.Metadata[MetaSHA256]; got != bodySHA256(first.Body) {
		t.Fatalf("metadata %s = %q, want the body's sha256", MetaSHA256, got)
	}
	again := &Object{Key: first.Key, Body: []byte("first body")}
	if err := u.Put(testCtx(t), again); err != nil {
		t.Fatalf("second Put of the same object = %v, want nil", err)
	}
	c := proxy.Counts()
	if c.Methods["PUT 200"] != 1 || c.Methods["PUT 412"] != 1 || c.Methods["HEAD 200"] != 1 {
		t.Fatalf("proxy saw %v, want one PUT answered 200, one answered 412 by versitygw, then one HEAD", c.Methods)
	}
}

// TestS3KeyCollision: a 412 on a key that holds a different object is a
// collision, not success; the Collisions stage writes the object under a
// fresh, deterministic key, and a repeat (a crash before the ack) finds it
// there and writes nothing new.
func TestS3KeyCollision(t *testing.T) {
	srv := s3server.Start(t)
	u := newS3(t, srv, srv.Endpoint(), nil)
	enc := mustEncoder(t, EncoderOptions{})
	encode := func(i int) Object {
		objs, err := enc.Encode("same-agent", 1, segment{rec(ts, meter(i, ts))})
		if err != nil || len(objs) != 1 {
			t.Fatalf("Encode: %v, %d objects", err, len(objs))
		}
		return objs[0]
	}
	first, second := encode(1), encode(2)
	if first.Key != second.Key {
		t.Fatalf("keys %q and %q: the test needs one key", first.Key, second.Key)
	}
	if err := u.Put(testCtx(t), &first); err != nil {
		t.Fatal(err)
	}
	clash := second
	err := u.Put(testCtx(t), &clash)
	var ce *CollisionError
	if !errors.Is(err, ErrKeyCollision) || !errors.As(err, &ce) {
		t.Fatalf("Put of a different object under a taken key = %v, want a collision", err)
	}

	var seen []string
	stage := Collisions{Next: u, OnCollision: func(_ *Object, _ error, fresh string) { seen = append(seen, fresh) }}
	moved := second
	if err := stage.Put(testCtx(t), &moved); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || moved.Key != seen[0] || moved.Key == first.Key || !strings.HasPrefix(moved.Key, "06-07-2022/") || !strings.HasSuffix(moved.Key, ".gz") {
		t.Fatalf("moved to %q (reported %v), want a fresh key in the same partition", moved.Key, seen)
	}
	if got := gunzip(t, srv.GetObject(t, testPrefix+"/"+moved.Key)); string(got) != meter(2, ts)+"\n" {
		t.Fatalf("fresh object holds %q", got)
	}
	if got := gunzip(t, srv.GetObject(t, testPrefix+"/"+first.Key)); string(got) != meter(1, ts)+"\n" {
		t.Fatalf("first object changed to %q", got)
	}
	// The same segment encoded again after a crash: same fresh key, found
	// holding this object, done.
	retry := encode(2)
	seen = nil
	if err := stage.Put(testCtx(t), &retry); err != nil {
		t.Fatal(err)
	}
	if retry.Key != moved.Key {
		t.Fatalf("retry went to %q, want the same fresh key %q", retry.Key, moved.Key)
	}
	list, err := srv.Client().ListObjectsV2(testCtx(t), &s3.ListObjectsV2Input{Bucket: aws.String(srv.Bucket())})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Contents) != 2 {
		t.Fatalf("%d objects in the bucket, want 2", len(list.Contents))
	}
}

// TestS3UnverifiedWhenReadDenied: credentials that may write but not read
// (HEAD answered 403) cannot compare the object at a taken key; the
// Collisions stage reports that and counts the put as done, as before.
func TestS3UnverifiedWhenReadDenied(t *testing.T) {
	srv := s3server.Start(t)
	proxy := faultproxy.Start(t, srv.Endpoint())
	u := newS3(t, srv, proxy.URL(), nil)
	first := &Object{Key: "06-07-2022/k.gz", Body: []byte("first body")}
	if err := u.Put(testCtx(t), first); err != nil {
		t.Fatal(err)
	}
	proxy.FailAfter(1, 1, http.StatusForbidden) // the PUT's 412 passes; the HEAD is denied
	other := &Object{Key: first.Key, Body: []byte("other body")}
	var unverified int
	stage := Collisions{Next: u, OnUnverified: func(*Object, error) { unverified++ }}
	if err := stage.Put(testCtx(t), other); err != nil {
		t.Fatalf("Put = %v, want nil (unverified counts as done)", err)
	}
	if unverified != 1 || other.Key != first.Key {
		t.Fatalf("unverified reported %d times, key %q", unverified, other.Key)
	}
}

// TestS3SameRecordsOtherCompression: an existing object with the same
// records compressed differently (no metadata, another gzip level) is the
// same object, not a collision.
func TestS3SameRecordsOtherCompression(t *testing.T) {
	srv := s3server.Start(t)
	u := newS3(t, srv, srv.Endpoint(), nil)
	seg := segment{rec(ts, meter(1, ts)), rec(ts+1, meter(2, ts))}
	fast, err := mustEncoder(t, EncoderOptions{GzipLevel: 1}).Encode("a", 1, seg)
	if err != nil {
		t.Fatal(err)
	}
	small, err := mustEncoder(t, EncoderOptions{GzipLevel: 9}).Encode("a", 1, seg)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(fast[0].Body, small[0].Body) {
		t.Fatal("gzip levels 1 and 9 gave the same body: the test needs two different encodings of one segment")
	}
	// Written without metadata, as an earlier version did.
	if _, err := srv.Client().PutObject(testCtx(t), &s3.PutObjectInput{
		Bucket: aws.String(srv.Bucket()), Key: aws.String(testPrefix + "/" + fast[0].Key), Body: bytes.NewReader(fast[0].Body),
	}); err != nil {
		t.Fatal(err)
	}
	if err := u.Put(testCtx(t), &small[0]); err != nil {
		t.Fatalf("Put of the same records, compressed otherwise = %v, want nil", err)
	}
}

// TestS3Multipart uploads above the threshold in parts and checks that
// versitygw honours If-None-Match on CompleteMultipartUpload: the second
// upload of the key is refused with 412, aborted, and reported as success.
func TestS3Multipart(t *testing.T) {
	srv := s3server.Start(t)
	proxy := faultproxy.Start(t, srv.Endpoint())
	u := newS3(t, srv, proxy.URL(), func(o *S3Options) {
		o.MultipartThreshold = 1 << 20
		o.PartSize = MinPartSize
	})
	obj := &Object{Key: "big.gz", Body: randomBody(2*MinPartSize+1234, 1), ContentType: ContentTypeNDJSON, ContentEncoding: "gzip"}
	if err := u.Put(testCtx(t), obj); err != nil {
		t.Fatalf("multipart Put: %v", err)
	}
	key := testPrefix + "/big.gz"
	if got := srv.GetObject(t, key); !bytes.Equal(got, obj.Body) {
		t.Fatalf("stored %d bytes differ from the %d uploaded", len(got), len(obj.Body))
	}
	h := head(t, srv, key)
	if aws.ToString(h.ContentType) != ContentTypeNDJSON || aws.ToString(h.ContentEncoding) != "gzip" {
		t.Errorf("Content-Type %q, Content-Encoding %q", aws.ToString(h.ContentType), aws.ToString(h.ContentEncoding))
	}
	c := proxy.Counts()
	if c.Methods["PUT 200"] != 3 || c.Methods["POST 200"] != 2 {
		t.Fatalf("proxy saw %v, want 3 parts and create + complete", c.Methods)
	}

	proxy.ResetCounts()
	again := &Object{Key: obj.Key, Body: obj.Body}
	if err := u.Put(testCtx(t), again); err != nil {
		t.Fatalf("multipart Put of an existing object = %v, want nil", err)
	}
	if got := srv.GetObject(t, key); !bytes.Equal(got, obj.Body) {
		t.Fatal("existing object replaced by the second multipart upload")
	}
	c = proxy.Counts()
	if c.Methods["POST 412"] != 1 || c.Methods["DELETE 204"] != 1 {
		t.Fatalf("proxy saw %v, want CompleteMultipartUpload answered 412 and the upload aborted", c.Methods)
	}
	other := &Object{Key: obj.Key, Body: randomBody(2*MinPartSize, 2)}
	if err := u.Put(testCtx(t), other); !errors.Is(err, ErrKeyCollision) {
		t.Fatalf("multipart Put of another object under the key = %v, want a collision", err)
	}
	if got := srv.GetObject(t, key); !bytes.Equal(got, obj.Body) {
		t.Fatal("existing object replaced by another multipart upload")
	}
	uploads, err := srv.Client().ListMultipartUploads(testCtx(t), &s3.ListMultipartUploadsInput{Bucket: aws.String(srv.Bucket())})
	if err != nil {
		t.Fatal(err)
	}
	if len(uploads.Uploads) != 0 {
		t.Fatalf("%d multipart uploads left behind", len(uploads.Uploads))
	}
}

// TestS3MultipartFailureAborts fails a part upload and checks that the
// upload is aborted rather than left behind.
func TestS3MultipartFailureAborts(t *testing.T) {
	srv := s3server.Start(t)
	proxy := faultproxy.Start(t, srv.Endpoint())
	u := newS3(t, srv, proxy.URL(), func(o *S3Options) { o.MultipartThreshold = 1 })
	obj := &Object{Key: "x.gz", Body: randomBody(MinPartSize+10, 3)}

	// Let CreateMultipartUpload through, then fail the first part.
	proxy.FailAfter(1, 1, http.StatusInternalServerError)
	err := u.Put(testCtx(t), obj)
	if err == nil || IsPermanent(err) {
		t.Fatalf("Put with a failing part = %v, want a transient error", err)
	}
	uploads, lerr := srv.Client().ListMultipartUploads(testCtx(t), &s3.ListMultipartUploadsInput{Bucket: aws.String(srv.Bucket())})
	if lerr != nil {
		t.Fatal(lerr)
	}
	if len(uploads.Uploads) != 0 {
		t.Fatalf("%d multipart uploads left behind after a failure", len(uploads.Uploads))
	}
	if err := u.Put(testCtx(t), obj); err != nil {
		t.Fatalf("Put after the fault cleared: %v", err)
	}
	if got := srv.GetObject(t, testPrefix+"/x.gz"); !bytes.Equal(got, obj.Body) {
		t.Fatal("stored object differs")
	}
}

func TestS3ObjectSettings(t *testing.T) {
	srv := s3server.Start(t)
	for _, tt := range []struct {
		name      string
		threshold int64
	}{{"put", 0}, {"multipart", 1}} {
		t.Run(tt.name, func(t *testing.T) {
			u := newS3(t, srv, srv.Endpoint(), func(o *S3Options) {
				o.MultipartThreshold = tt.threshold
				o.ACL = "private"
				o.StorageClass = "STANDARD"
				o.Tags = map[string]string{"team": "billing", "note": "a b=c/d:e+f@g"}
			})
			obj := &Object{Key: tt.name + ".json", Body: []byte(`[{"a":1}]`), ContentType: ContentTypeJSON}
			if err := u.Put(testCtx(t), obj); err != nil {
				t.Fatalf("Put: %v", err)
			}
			key := testPrefix + "/" + obj.Key
			if got := srv.GetObject(t, key); !bytes.Equal(got, obj.Body) {
				t.Fatalf("stored %q, want %q", got, obj.Body)
			}
			if h := head(t, srv, key); aws.ToString(h.ContentType) != ContentTypeJSON || h.ContentEncoding != nil {
				t.Errorf("Content-Type %q, Content-Encoding %q", aws.ToString(h.ContentType), aws.ToString(h.ContentEncoding))
			}
			tags, err := srv.Client().GetObjectTagging(testCtx(t), &s3.GetObjectTaggingInput{Bucket: aws.String(srv.Bucket()), Key: aws.String(key)})
			if err != nil {
				t.Fatalf("GetObjectTagging: %v", err)
			}
			got := map[string]string{}
			for _, tag := range tags.TagSet {
				got[aws.ToString(tag.Key)] = aws.ToString(tag.Value)
			}
			if len(got) != 2 || got["team"] != "billing" || got["note"] != "a b=c/d:e+f@g" {
				t.Errorf("tags = %v", got)
			}
		})
	}
}

func TestNewS3UploaderValidation(t *testing.T) {
	tests := []struct {
		opts S3Options
		want string
	}{
		{S3Options{}, "Bucket is required"},
		{S3Options{Bucket: "b", PartSize: 1 << 20}, "PartSize 1048576 below the S3 minimum"},
		{S3Options{Bucket: "b", ExternalID: "x"}, "ExternalID needs RoleARN"},
		{S3Options{Bucket: "b", SSEKMSKeyID: "k"}, "SSEKMSKeyID needs ServerSideEncryption"},
		{S3Options{Bucket: "b", ACL: "public"}, `ACL "public" not supported; use one of private,`},
		{S3Options{Bucket: "b", StorageClass: "COLD"}, `StorageClass "COLD" not supported`},
		{S3Options{Bucket: "b", ServerSideEncryption: "rot13"}, `ServerSideEncryption "rot13" not supported`},
		{S3Options{Bucket: "b", Tags: map[string]string{"k": "a&b"}}, `tag "k": character '&' not allowed`},
		{S3Options{Bucket: "b", Tags: map[string]string{"": "v"}}, "empty tag key"},
		{S3Options{Bucket: "b", Tags: map[string]string{"1": "", "2": "", "3": "", "4": "", "5": "", "6": "", "7": "", "8": "", "9": "", "10": "", "11": ""}}, "11 tags"},
	}
	for _, tt := range tests {
		_, err := NewS3Uploader(context.Background(), tt.opts)
		if !errors.Is(err, ErrS3Options) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewS3Uploader(%+v) = %v, want ErrS3Options mentioning %q", tt.opts, err, tt.want)
		}
	}
}

func TestS3PermanentErrors(t *testing.T) {
	srv := s3server.Start(t)
	obj := &Object{Key: "k.gz", Body: []byte("x")}

	missing := newS3(t, srv, srv.Endpoint(), func(o *S3Options) { o.Bucket = "no-such-bucket" })
	err := missing.Put(testCtx(t), obj)
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "NoSuchBucket" || !IsPermanent(err) {
		t.Errorf("Put to a missing bucket = %v, want a permanent NoSuchBucket", err)
	}

	badKey := newS3(t, srv, srv.Endpoint(), func(o *S3Options) {
		o.Credentials = credentials.NewStaticCredentialsProvider(srv.AccessKey(), "wrong-secret", "")
	})
	err = badKey.Put(testCtx(t), obj)
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "SignatureDoesNotMatch" || !IsPermanent(err) {
		t.Errorf("Put with a wrong secret = %v, want a permanent SignatureDoesNotMatch", err)
	}

	// AWS answers 403 InvalidAccessKeyId; versitygw 404 XAdminUserNotFound.
	unknown := newS3(t, srv, srv.Endpoint(), func(o *S3Options) {
		o.Credentials = credentials.NewStaticCredentialsProvider("nobody", "secret", "")
	})
	err = unknown.Put(testCtx(t), obj)
	if !errors.As(err, &apiErr) || !IsPermanent(err) {
		t.Errorf("Put with an unknown access key = %v, want a permanent API error", err)
	}
	if objs := srv.ListObjects(t); len(objs) != 0 {
		t.Errorf("failed puts stored %+v", objs)
	}
}

// TestS3ErrorClassification sends each kind of error over the wire and
// checks how IsPermanent sees the SDK's error.
func TestS3ErrorClassification(t *testing.T) {
	srv := s3server.Start(t)
	proxy := faultproxy.Start(t, srv.Endpoint())
	u := newS3(t, srv, proxy.URL(), nil)
	tests := []struct {
		status    int
		code      string
		permanent bool
	}{
		{400, "InvalidArgument", true},
		{403, "AccessDenied", true},
		{403, "InvalidAccessKeyId", true},
		{404, "NoSuchBucket", true},
		{405, "MethodNotAllowed", true},
		{408, "RequestTimeout", false},
		{409, "ConditionalRequestConflict", false},
		{429, "TooManyRequests", false},
		{400, "RequestTimeout", false},
		{400, "ExpiredToken", false},
		{500, "InternalError", false},
		{502, "BadGateway", false},
		{503, "SlowDown", false},
		{503, "ServiceUnavailable", false},
	}
	for _, tt := range tests {
		proxy.FailCode(1, tt.status, tt.code)
		err := u.Put(testCtx(t), &Object{Key: "c.gz", Body: []byte("x")})
		if err == nil {
			t.Fatalf("%d %s: Put succeeded", tt.status, tt.code)
		}
		if got := IsPermanent(err); got != tt.permanent {
			t.Errorf("%d %s: IsPermanent = %v, want %v (%v)", tt.status, tt.code, got, tt.permanent, err)
		}
	}
	proxy.Down()
	err := u.Put(testCtx(t), &Object{Key: "c.gz", Body: []byte("x")})
	if err == nil || IsPermanent(err) {
		t.Errorf("connection refused: Put = %v, want a transient error", err)
	}
}

// TestS3DestinationUploaders checks where Destination's uploaders put
// records and dead letters.
func TestS3DestinationUploaders(t *testing.T) {
	srv := s3server.Start(t)
	opts := S3Options{Region: s3server.Region, Endpoint: srv.Endpoint(), ForcePathStyle: true, Credentials: srv.Credentials()}
	rec := &Object{Key: "06-07-2022/r.gz", Body: []byte("records")}
	dl := &Object{Key: "failed-requests/06-07-2022/d.gz", Body: []byte("dead letters"), DeadLetter: true}

	main, err := ParseURL("s3://" + srv.Bucket() + "/ingest/amberdata")
	if err != nil {
		t.Fatal(err)
	}
	errs, err := ParseURL("s3://" + srv.Bucket() + "/errors")
	if err != nil {
		t.Fatal(err)
	}
	up, err := main.NewUploader(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer up.(*S3Uploader).Close()
	dlq, err := errs.NewDeadLetterUploader(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer dlq.(*S3Uploader).Close()
	for _, step := range []struct {
		u   Uploader
		obj *Object
	}{{up, rec}, {up, dl}, {dlq, dl}} {
		if err := step.u.Put(testCtx(t), step.obj); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]string{
		"ingest/amberdata/06-07-2022/r.gz":       "records",
		"failed-requests/06-07-2022/d.gz":        "dead letters",
		"errors/failed-requests/06-07-2022/d.gz": "dead letters",
	}
	stored := srv.ListObjects(t)
	if len(stored) != len(want) {
		t.Fatalf("bucket holds %+v, want %v", stored, want)
	}
	for _, o := range stored {
		if got := string(srv.GetObject(t, o.Key)); got != want[o.Key] {
			t.Errorf("%s holds %q, want %q", o.Key, got, want[o.Key])
		}
	}
}
