package ship

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
)

// S3 upload defaults and limits.
const (
	DefaultMultipartThreshold = 64 << 20
	DefaultPartSize           = 16 << 20
	MinPartSize               = 5 << 20
	maxParts                  = 10000
	maxTags                   = 10
	defaultRegion             = "us-east-1"
	abortTimeout              = 30 * time.Second
)

// ErrS3Options is wrapped by NewS3Uploader validation errors.
var ErrS3Options = errors.New("invalid S3 options")

// S3Options configure an S3Uploader.
type S3Options struct {
	// Bucket is required. Record objects go to Prefix + "/" + Key (just Key
	// when Prefix is empty); dead letters go to DeadLetterPrefix + "/" + Key,
	// by default Key at the bucket root.
	Bucket           string
	Prefix           string
	DeadLetterPrefix string
	// Region defaults to the SDK's resolution (AWS_REGION, shared config),
	// then us-east-1.
	Region string
	// Endpoint is the base URL of an S3-compatible server; ForcePathStyle
	// addresses buckets as endpoint/bucket instead of bucket.endpoint.
	Endpoint       string
	ForcePathStyle bool
	// RoleARN, when set, is assumed through STS with the base credentials;
	// ExternalID is passed to AssumeRole.
	RoleARN    string
	ExternalID string
	// ACL is a canned object ACL, e.g. bucket-owner-full-control.
	ACL string
	// StorageClass, e.g. STANDARD_IA.
	StorageClass string
	// ServerSideEncryption is AES256, aws:kms or aws:kms:dsse; SSEKMSKeyID
	// selects the KMS key for the kms kinds.
	ServerSideEncryption string
	SSEKMSKeyID          string
	// Tags are object tags (at most 10).
	Tags map[string]string
	// MultipartThreshold: larger bodies use multipart upload; default
	// DefaultMultipartThreshold.
	MultipartThreshold int64
	// PartSize of multipart uploads; default DefaultPartSize, at least
	// MinPartSize.
	PartSize int64
	// HTTPClient replaces the SDK's default HTTP client. The SDK refuses a
	// plain *http.Client when AWS_CA_BUNDLE is set; leave it nil then.
	HTTPClient *http.Client
	// Credentials replaces the default credential chain (environment,
	// shared config, web identity / IRSA, EKS Pod Identity, ECS, IMDS).
	Credentials aws.CredentialsProvider
}

// S3Uploader puts objects with PutObject If-None-Match: *, or multipart
// upload for large bodies, so a re-upload of an existing key is a no-op.
// Each object carries the SHA-256 of its body in its user metadata
// (MetaSHA256); on 412 a HEAD compares it (or the ETag, or at worst the
// decoded bodies) to tell a re-upload from a key collision. That needs
// s3:GetObject; without it the 412 is reported as ErrUnverified.
//
// The SDK's own retries are disabled: retrying is the Retry stage's job, and
// one policy makes outages and counters predictable.
type S3Uploader struct {
	client    *s3.Client
	bucket    string
	prefix    string
	dlPrefix  string
	threshold int64
	partSize  int64
	acl       types.ObjectCannedACL
	class     types.StorageClass
	sse       types.ServerSideEncryption
	kmsKeyID  *string
	tagging   *string
	idle      interface{ CloseIdleConnections() }
}

// NewS3Uploader validates opts, loads the AWS configuration and returns an
// uploader. It makes no request.
func NewS3Uploader(ctx context.Context, opts S3Options) (*S3Uploader, error) {
	u := &S3Uploader{
		bucket:    opts.Bucket,
		prefix:    strings.Trim(opts.Prefix, "/"),
		dlPrefix:  strings.Trim(opts.DeadLetterPrefix, "/"),
		threshold: opts.MultipartThreshold,
		partSize:  opts.PartSize,
		acl:       types.ObjectCannedACL(opts.ACL),
		class:     types.StorageClass(opts.StorageClass),
		sse:       types.ServerSideEncryption(opts.ServerSideEncryption),
	}
	if err := u.validate(opts); err != nil {
		return nil, err
	}
	if u.threshold <= 0 {
		u.threshold = DefaultMultipartThreshold
	}
	if u.partSize <= 0 {
		u.partSize = DefaultPartSize
	}
	if opts.SSEKMSKeyID != "" {
		u.kmsKeyID = aws.String(opts.SSEKMSKeyID)
	}
	if len(opts.Tags) > 0 {
		v := url.Values{}
		for k, val := range opts.Tags {
			v.Set(k, val)
		}
		u.tagging = aws.String(v.Encode())
	}

	var loadOpts []func(*config.LoadOptions) error
	if opts.HTTPClient != nil {
		loadOpts = append(loadOpts, config.WithHTTPClient(opts.HTTPClient))
		u.idle = opts.HTTPClient
	}
	if opts.Region != "" {
		loadOpts = append(loadOpts, config.WithRegion(opts.Region))
	}
	if opts.Credentials != nil {
		loadOpts = append(loadOpts, config.WithCredentialsProvider(opts.Credentials))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("ship: load AWS config: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = defaultRegion
	}
	if bc, ok := cfg.HTTPClient.(*awshttp.BuildableClient); ok {
		// Own the SDK's default transport (with AWS_CA_BUNDLE applied by
		// the loader) so Close can release its connections.
		hc := &http.Client{
			Transport: bc.GetTransport(),
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
		cfg.HTTPClient = hc
		u.idle = hc
	}
	if opts.RoleARN != "" {
		provider := stscreds.NewAssumeRoleProvider(sts.NewFromConfig(cfg), opts.RoleARN, func(o *stscreds.AssumeRoleOptions) {
			o.RoleSessionName = "metership"
			if opts.ExternalID != "" {
				o.ExternalID = aws.String(opts.ExternalID)
			}
		})
		cfg.Credentials = aws.NewCredentialsCache(provider)
	}
	u.client = s3.NewFromConfig(cfg, func(o *s3.Options) {
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
		}
		o.UsePathStyle = opts.ForcePathStyle
		o.Retryer = aws.NopRetryer{}
	})
	return u, nil
}

func (u *S3Uploader) validate(opts S3Options) error {
	switch {
	case opts.Bucket == "":
		return fmt.Errorf("%w: Bucket is required", ErrS3Options)
	case opts.PartSize != 0 && opts.PartSize < MinPartSize:
		return fmt.Errorf("%w: PartSize %d below the S3 minimum of %d (5 MiB)", ErrS3Options, opts.PartSize, MinPartSize)
	case opts.ExternalID != "" && opts.RoleARN == "":
		return fmt.Errorf("%w: ExternalID needs RoleARN", ErrS3Options)
	case opts.SSEKMSKeyID != "" && !strings.HasPrefix(opts.ServerSideEncryption, "aws:kms"):
		return fmt.Errorf("%w: SSEKMSKeyID needs ServerSideEncryption aws:kms or aws:kms:dsse", ErrS3Options)
	case len(opts.Tags) > maxTags:
		return fmt.Errorf("%w: %d tags; S3 allows at most %d per object", ErrS3Options, len(opts.Tags), maxTags)
	}
	for k, v := range opts.Tags {
		if err := checkTag(k, v); err != nil {
			return err
		}
	}
	if err := checkEnum("ACL", opts.ACL, u.acl.Values()); err != nil {
		return err
	}
	if err := checkEnum("StorageClass", opts.StorageClass, u.class.Values()); err != nil {
		return err
	}
	return checkEnum("ServerSideEncryption", opts.ServerSideEncryption, u.sse.Values())
}

// checkTag applies the S3 object tag rules: keys of 1 to 128 and values of
// up to 256 characters, made of letters, digits, spaces and _ . : / = + - @.
func checkTag(k, v string) error {
	if k == "" {
		return fmt.Errorf("%w: empty tag key", ErrS3Options)
	}
	if utf8.RuneCountInString(k) > 128 || utf8.RuneCountInString(v) > 256 {
		return fmt.Errorf("%w: tag %q: keys are limited to 128 characters, values to 256", ErrS3Options, k)
	}
	for _, s := range []string{k, v} {
		for _, r := range s {
			if !unicode.IsLetter(r) && !unicode.IsDigit(r) && !unicode.IsSpace(r) && !strings.ContainsRune("_.:/=+-@", r) {
				return fmt.Errorf("%w: tag %q: character %q not allowed; use letters, digits, spaces and _ . : / = + - @", ErrS3Options, k, r)
			}
		}
	}
	return nil
}

func checkEnum[T ~string](name, v string, allowed []T) error {
	if v == "" || slices.Contains(allowed, T(v)) {
		return nil
	}
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = string(a)
	}
	return fmt.Errorf("%w: %s %q not supported; use one of %s", ErrS3Options, name, v, strings.Join(names, ", "))
}

// Client returns the underlying S3 client.
func (u *S3Uploader) Client() *s3.Client { return u.client }

// ObjectKey returns the S3 key obj is stored under.
func (u *S3Uploader) ObjectKey(obj *Object) string {
	prefix := u.prefix
	if obj.DeadLetter {
		prefix = u.dlPrefix
	}
	if prefix == "" {
		return obj.Key
	}
	return prefix + "/" + obj.Key
}

// Close releases idle HTTP connections.
func (u *S3Uploader) Close() error {
	if u.idle != nil {
		u.idle.CloseIdleConnections()
	}
	return nil
}

// Put uploads obj unless its key exists. It makes one attempt; wrap it in
// Retry for more.
func (u *S3Uploader) Put(ctx context.Context, obj *Object) error {
	key := u.ObjectKey(obj)
	if int64(len(obj.Body)) > u.threshold {
		return u.putMultipart(ctx, key, obj)
	}
	_, err := u.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:               aws.String(u.bucket),
		Key:                  aws.String(key),
		Body:                 bytes.NewReader(obj.Body),
		ContentLength:        aws.Int64(int64(len(obj.Body))),
		ContentType:          optString(obj.ContentType),
		ContentEncoding:      optString(obj.ContentEncoding),
		IfNoneMatch:          aws.String("*"),
		ACL:                  u.acl,
		StorageClass:         u.class,
		ServerSideEncryption: u.sse,
		SSEKMSKeyId:          u.kmsKeyID,
		Tagging:              u.tagging,
		Metadata:             map[string]string{MetaSHA256: bodySHA256(obj.Body)},
	})
	if err == nil {
		return nil
	}
	if isPreconditionFailed(err) {
		return u.checkExisting(ctx, key, obj)
	}
	return fmt.Errorf("s3 PutObject s3://%s/%s: %w", u.bucket, key, err)
}

// checkExisting is called when If-None-Match: * found key taken: nil when
// the object there is obj's (an earlier attempt wrote it), a
// *CollisionError when it is another.
func (u *S3Uploader) checkExisting(ctx context.Context, key string, obj *Object) error {
	head, err := u.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(u.bucket), Key: aws.String(key)})
	if isForbidden(err) {
		return &UnverifiedError{Key: "s3://" + u.bucket + "/" + key, Err: err}
	}
	if err != nil {
		// Gone since the 412 (deleted): the next attempt writes it.
		return fmt.Errorf("s3 HeadObject s3://%s/%s after 412: %w", u.bucket, key, err)
	}
	fetch := func() ([]byte, error) {
		out, err := u.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(u.bucket), Key: aws.String(key)})
		if isForbidden(err) {
			return nil, &UnverifiedError{Key: "s3://" + u.bucket + "/" + key, Err: err}
		}
		if err != nil {
			return nil, fmt.Errorf("s3 GetObject s3://%s/%s after 412: %w", u.bucket, key, err)
		}
		defer out.Body.Close() //nolint:errcheck // read in full and checked below
		body, err := io.ReadAll(out.Body)
		if err != nil {
			return nil, fmt.Errorf("s3 GetObject s3://%s/%s after 412: %w", u.bucket, key, err)
		}
		return body, nil
	}
	reason, err := sameObject(obj, head.Metadata[MetaSHA256], aws.ToString(head.ETag), fetch)
	if err != nil {
		return err
	}
	if reason != "" {
		return &CollisionError{Key: "s3://" + u.bucket + "/" + key, Reason: reason}
	}
	return nil
}

// putMultipart uploads obj in parts. CompleteMultipartUpload carries
// If-None-Match: * (honoured by S3 and by versitygw v1.8.0, see
// TestS3Multipart), so when the key already exists the completion fails with
// 412, the parts are aborted and the object counts as shipped; there is no
// window between a check and the write. A re-upload does send the parts
// again before it learns that; objects this large are rare. Any failure
// aborts the upload; an abort that fails too leaves parts for the bucket's
// AbortIncompleteMultipartUpload lifecycle rule.
func (u *S3Uploader) putMultipart(ctx context.Context, key string, obj *Object) (err error) {
	created, err := u.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket:               aws.String(u.bucket),
		Key:                  aws.String(key),
		ContentType:          optString(obj.ContentType),
		ContentEncoding:      optString(obj.ContentEncoding),
		ACL:                  u.acl,
		StorageClass:         u.class,
		ServerSideEncryption: u.sse,
		SSEKMSKeyId:          u.kmsKeyID,
		Tagging:              u.tagging,
		ChecksumAlgorithm:    types.ChecksumAlgorithmCrc32,
		Metadata:             map[string]string{MetaSHA256: bodySHA256(obj.Body)},
	})
	if err != nil {
		return fmt.Errorf("s3 CreateMultipartUpload s3://%s/%s: %w", u.bucket, key, err)
	}
	uploadID := created.UploadId
	aborted := false
	defer func() {
		if err == nil || aborted {
			return
		}
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
		defer cancel()
		_, aerr := u.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{
			Bucket: aws.String(u.bucket), Key: aws.String(key), UploadId: uploadID,
		})
		if aerr != nil {
			err = fmt.Errorf("%w (abort of upload %s failed too: %v)", err, aws.ToString(uploadID), aerr) //nolint:errorlint // callers classify the put's error, not the abort's
		}
	}()

	body := obj.Body
	partSize := max(u.partSize, (int64(len(body))+maxParts-1)/maxParts)
	var parts []types.CompletedPart
	for n := int32(1); len(body) > 0; n++ {
		chunk := body[:min(int64(len(body)), partSize)]
		body = body[len(chunk):]
		out, err := u.client.UploadPart(ctx, &s3.UploadPartInput{
			Bucket:            aws.String(u.bucket),
			Key:               aws.String(key),
			UploadId:          uploadID,
			PartNumber:        aws.Int32(n),
			Body:              bytes.NewReader(chunk),
			ContentLength:     aws.Int64(int64(len(chunk))),
			ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
		})
		if err != nil {
			return fmt.Errorf("s3 UploadPart %d s3://%s/%s: %w", n, u.bucket, key, err)
		}
		parts = append(parts, types.CompletedPart{
			ETag: out.ETag, PartNumber: aws.Int32(n), ChecksumCRC32: out.ChecksumCRC32,
		})
	}
	_, err = u.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket:          aws.String(u.bucket),
		Key:             aws.String(key),
		UploadId:        uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
		IfNoneMatch:     aws.String("*"),
	})
	if err == nil {
		return nil
	}
	if isPreconditionFailed(err) {
		u.abort(ctx, key, uploadID)
		aborted = true
		return u.checkExisting(ctx, key, obj)
	}
	return fmt.Errorf("s3 CompleteMultipartUpload s3://%s/%s: %w", u.bucket, key, err)
}

// abort drops the parts of an upload that was refused because the object
// already exists; a failure only leaves parts for the lifecycle rule.
func (u *S3Uploader) abort(ctx context.Context, key string, uploadID *string) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
	defer cancel()
	_, _ = u.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{
		Bucket: aws.String(u.bucket), Key: aws.String(key), UploadId: uploadID,
	})
}

// isPreconditionFailed reports the answer to If-None-Match: * when the key
// exists: HTTP 412 PreconditionFailed.
func isPreconditionFailed(err error) bool {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode() == "PreconditionFailed" {
		return true
	}
	var re *awshttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == http.StatusPreconditionFailed
}

// isForbidden reports a 403: the credentials may not read the object.
func isForbidden(err error) bool {
	var re *awshttp.ResponseError
	return err != nil && errors.As(err, &re) && re.HTTPStatusCode() == http.StatusForbidden
}

func optString(s string) *string {
	if s == "" {
		return nil
	}
	return aws.String(s)
}
