package ship

import (
	"context"
	"fmt"
	"time"
)

// Uploader stores objects. Put returns nil once an object with obj.Key
// and obj's content exists at the destination, including when it already
// existed before the call: keys are deterministic, so an existing key
// usually holds this very data from an earlier attempt. When it holds
// something else, Put returns an error wrapping ErrKeyCollision (see
// Collisions).
//
// Stages compose: Retry{Next: Timeout{Next: Collisions{Next: s3Uploader}}}
// retries attempts that are each bounded by a timeout. On shutdown, cancel the context passed
// to Put: the stages return promptly with the context's error and the
// segment stays in the buffer for the next run.
type Uploader interface {
	Put(ctx context.Context, obj *Object) error
}

// Timeout bounds each call to Next, so a hung connection becomes a
// retryable error instead of a stuck pipeline.
type Timeout struct {
	Next Uploader
	// Duration is the per-attempt limit; 0 disables it.
	Duration time.Duration
}

// Put calls Next with a deadline of Duration.
func (t Timeout) Put(ctx context.Context, obj *Object) error {
	if t.Duration <= 0 {
		return t.Next.Put(ctx, obj)
	}
	actx, cancel := context.WithTimeoutCause(ctx, t.Duration, ErrAttemptTimeout)
	defer cancel()
	err := t.Next.Put(actx, obj)
	if err != nil && ctx.Err() == nil && actx.Err() != nil {
		return fmt.Errorf("put %s: %w after %s: %w", obj.Key, ErrAttemptTimeout, t.Duration, err)
	}
	return err
}
