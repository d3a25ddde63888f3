package ship

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/klauspost/compress/gzip"
)

// MetaSHA256 is the user-metadata key (x-amz-meta-metership-sha256 on S3)
// that holds the hex SHA-256 of an object's body as uploaded, so that a
// 412 on its key can be told apart: the same object written earlier, or a
// different one (a key collision).
const MetaSHA256 = "metership-sha256"

// maxRekeys bounds how many fresh keys one object tries. A fresh key is
// derived from the content, so a second collision needs another writer
// with the same key and different content at that derived key too.
const maxRekeys = 4

// ErrKeyCollision is wrapped by the error an uploader returns when the
// object's key already exists with different content: another writer
// (typically a second buffer configured with the same agent.id and key
// format) took the key. The object is not stored; the Collisions stage
// writes it under a fresh key.
var ErrKeyCollision = errors.New("object key holds another object")

// ErrUnverified is wrapped by the error an uploader returns when the key
// exists (412) but the object there cannot be read to compare it: the
// credentials may write but not read (s3:GetObject denied), as in some
// cross-account buckets. The Collisions stage then counts the object as
// done, as before collision checks existed, and reports it: keys are
// unique per buffer directory, so this is a re-upload unless a directory
// was copied.
var ErrUnverified = errors.New("existing object could not be compared")

// UnverifiedError names the key and why its object could not be read.
type UnverifiedError struct {
	Key string
	Err error
}

func (e *UnverifiedError) Error() string {
	return fmt.Sprintf("%s %s: %v", ErrUnverified, e.Key, e.Err)
}

// Unwrap returns ErrUnverified and the cause.
func (e *UnverifiedError) Unwrap() []error { return []error{ErrUnverified, e.Err} }

// CollisionError names the key that collided and why its content differs.
type CollisionError struct {
	Key    string
	Reason string
}

func (e *CollisionError) Error() string {
	return fmt.Sprintf("%s %s: %s", ErrKeyCollision, e.Key, e.Reason)
}

// Unwrap returns ErrKeyCollision.
func (e *CollisionError) Unwrap() error { return ErrKeyCollision }

// Collisions writes an object whose key turned out to hold different
// content (Next returned an error wrapping ErrKeyCollision) under a fresh
// key (Object.CollisionKey) and puts it again, so the object is never
// counted as done while another object holds its key. Place it inside the
// Timeout stage: Retry then retries a failed put under the fresh key,
// since obj.Key is updated in place.
type Collisions struct {
	Next Uploader
	// OnCollision, when set, is called for each collision with the error
	// and the key the object moves to.
	OnCollision func(obj *Object, err error, freshKey string)
	// OnUnverified, when set, is called when the object at the key could
	// not be read to compare it (ErrUnverified); the put counts as done.
	OnUnverified func(obj *Object, err error)
}

// Put calls Next, moving obj to a fresh key after each collision.
func (c Collisions) Put(ctx context.Context, obj *Object) error {
	for {
		err := c.Next.Put(ctx, obj)
		if errors.Is(err, ErrUnverified) {
			if c.OnUnverified != nil {
				c.OnUnverified(obj, err)
			}
			return nil
		}
		if err == nil || !errors.Is(err, ErrKeyCollision) {
			return err
		}
		if obj.rekeys >= maxRekeys {
			return Permanent(fmt.Errorf("%w (after %d fresh keys)", err, obj.rekeys))
		}
		fresh, kerr := obj.CollisionKey()
		if kerr != nil {
			return fmt.Errorf("%w; no fresh key: %w", err, kerr)
		}
		if c.OnCollision != nil {
			c.OnCollision(obj, err, fresh)
		}
		obj.Key = fresh
		obj.rekeys++
	}
}

// CollisionKey returns the key obj moves to after its current key was
// found holding different content. It is deterministic: derived from the
// object's original id, the SHA-256 of its decoded content and how many
// times it moved, so a retry after a crash (the segment encoded again,
// the original key colliding again) reaches the same fresh key, finds
// the object there and counts it as done instead of writing it twice.
// With $UUID in the key format the fresh id replaces the UUID; without,
// it is appended to the file name before its extension.
func (o *Object) CollisionKey() (string, error) {
	sum, err := decodedSHA256(o.Body)
	if err != nil {
		return "", err
	}
	name := make([]byte, 0, 128)
	name = append(name, "collision/"...)
	name = append(name, o.id...)
	name = append(name, '/')
	name = append(name, o.Key...)
	name = append(name, '/')
	name = hex.AppendEncode(name, sum[:])
	name = append(name, '/')
	name = strconv.AppendInt(name, int64(o.rekeys+1), 10)
	fresh := uuid.NewSHA1(objectNamespace, name).String()
	if o.kf != nil && strings.Contains(o.partition, uuidMarker) {
		return o.kf.Key(o.partition, fresh, o.seq), nil
	}
	dir, file := "", o.Key
	if i := strings.LastIndexByte(file, '/'); i >= 0 {
		dir, file = file[:i+1], file[i+1:]
	}
	ext := ""
	if i := strings.IndexByte(file, '.'); i > 0 {
		file, ext = file[:i], file[i:]
	}
	return dir + file + "-" + fresh + ext, nil
}

// bodySHA256 is the hex SHA-256 stored in an uploaded object's metadata.
func bodySHA256(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// decodedSHA256 hashes a body's content as its reader sees it: gunzipped
// when it starts with the gzip magic (NDJSON and JSON never do; a declared
// Content-Encoding may be overridden by configuration, so it is not
// trusted), so that the same records compressed differently compare equal.
func decodedSHA256(body []byte) ([32]byte, error) {
	if !bytes.HasPrefix(body, []byte{0x1f, 0x8b}) {
		return sha256.Sum256(body), nil
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		return [32]byte{}, fmt.Errorf("gunzip: %w", err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, zr); err != nil {
		return [32]byte{}, fmt.Errorf("gunzip: %w", err)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum, nil
}

// sameObject decides whether an existing object at obj's key holds what
// obj would write. metaSum is the existing object's MetaSHA256 (empty if
// none), etag its ETag; fetch reads its body, and is
// called only when the cheaper checks do not settle it (an object without
// our metadata, or the same records compressed differently). It returns
// "" when the contents match, else the reason they differ.
func sameObject(obj *Object, metaSum, etag string, fetch func() ([]byte, error)) (reason string, err error) {
	if metaSum != "" && metaSum == bodySHA256(obj.Body) {
		return "", nil
	}
	// A single-part upload's ETag is the MD5 of its body; a multipart
	// ETag has a "-N" suffix and says nothing about the content.
	if etag = strings.Trim(etag, `"`); etag != "" && !strings.Contains(etag, "-") {
		sum := md5.Sum(obj.Body)
		if strings.EqualFold(etag, hex.EncodeToString(sum[:])) {
			return "", nil
		}
	}
	body, err := fetch()
	if err != nil {
		return "", err
	}
	theirs, err := decodedSHA256(body)
	if err != nil {
		return "existing object does not decode: " + err.Error(), nil
	}
	ours, err := decodedSHA256(obj.Body)
	if err != nil {
		return "", err
	}
	if theirs == ours {
		return "", nil
	}
	return fmt.Sprintf("existing content differs (sha256 %x..., ours %x...)", theirs[:6], ours[:6]), nil
}
