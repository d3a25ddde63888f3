package retry

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/metership/metership/internal/ctxtime"
)

// Backoff is exponential backoff with equal jitter (see the package
// documentation). The zero value is not usable: set Initial and Max.
// A Backoff is not safe for concurrent use; give each retrying loop its
// own.
type Backoff struct {
	// Initial is the first wait's upper bound.
	Initial time.Duration
	// Max caps every wait; it is also the slow interval of permanent
	// errors. Below Initial it counts as Initial.
	Max time.Duration
	// Rand returns a uniform value in [0, n); nil means math/rand/v2.
	// Tests inject it to make the waits exact.
	Rand func(n int64) int64

	cur time.Duration // bound of the last wait; 0 before the first
}

// Next returns the next wait and doubles the bound, up to Max.
func (b *Backoff) Next() time.Duration {
	maxWait := max(b.Max, b.Initial)
	if b.cur == 0 {
		b.cur = min(b.Initial, maxWait)
	} else {
		b.cur = min(2*b.cur, maxWait)
	}
	return b.jitter(b.cur)
}

// Slow returns the wait after a permanent error, in [Max/2, Max]; it
// leaves the exponential sequence as it is.
func (b *Backoff) Slow() time.Duration { return b.jitter(max(b.Max, b.Initial)) }

// Reset starts the sequence again, after a success.
func (b *Backoff) Reset() { b.cur = 0 }

// jitter draws from [d/2, d].
func (b *Backoff) jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	n := int64(d/2) + 1
	var r int64
	if b.Rand != nil {
		r = b.Rand(n)
	} else {
		r = rand.Int64N(n)
	}
	return d/2 + time.Duration(r)
}

// Wait sleeps d unless that would end past deadline (zero: no deadline),
// measured from now. It returns false, at once, when the wait would pass
// the deadline, and false when ctx ends first.
func Wait(ctx context.Context, d time.Duration, now time.Time, deadline time.Time) bool {
	if !deadline.IsZero() && now.Add(d).After(deadline) {
		return false
	}
	return ctxtime.Sleep(ctx, d)
}
