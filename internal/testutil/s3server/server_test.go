package s3server_test

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"go.uber.org/goleak"

	"github.com/metership/metership/internal/testutil/s3server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBinaryRuns(t *testing.T) {
	out, err := exec.Command(s3server.Binary(t), "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("versitygw --version: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "Version") {
		t.Fatalf("versitygw --version printed %q", out)
	}
}

func TestServerStoresAndSurvivesRestart(t *testing.T) {
	srv := s3server.Start(t, s3server.WithBucket("bucket-one"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	body := []byte("hello\nworld\n")
	put := func(key string) error {
		_, err := srv.Client().PutObject(ctx, &s3.PutObjectInput{
			Bucket: aws.String(srv.Bucket()), Key: aws.String(key), Body: bytes.NewReader(body),
		})
		return err
	}
	if err := put("a/b.txt"); err != nil {
		t.Fatalf("put: %v", err)
	}

	srv.Stop()
	if err := put("a/c.txt"); err == nil {
		t.Fatalf("put to a stopped server succeeded")
	}
	srv.Restart()

	if got := srv.GetObject(t, "a/b.txt"); !bytes.Equal(got, body) {
		t.Fatalf("get after restart = %q, want %q", got, body)
	}
	objs := srv.ListObjects(t)
	if len(objs) != 1 || objs[0].Key != "a/b.txt" || objs[0].Size != int64(len(body)) {
		t.Fatalf("list = %+v, want one object a/b.txt of %d bytes", objs, len(body))
	}
}

func TestWithoutBucket(t *testing.T) {
	srv := s3server.Start(t, s3server.WithoutBucket())
	out, err := srv.Client().ListBuckets(context.Background(), &s3.ListBucketsInput{})
	if err != nil {
		t.Fatalf("list buckets: %v", err)
	}
	if len(out.Buckets) != 0 {
		t.Fatalf("buckets = %d, want none", len(out.Buckets))
	}
}
