package ship

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/metership/metership/internal/testutil/faultproxy"
	"github.com/metership/metership/internal/testutil/s3server"
)

// attempt is one OnError report.
type attempt struct {
	err       error
	n         int
	permanent bool
	wait      time.Duration
}

// recorder collects OnError reports and signals each on a channel.
type recorder struct {
	mu       sync.Mutex
	attempts []attempt
	ch       chan attempt
}

func newRecorder() *recorder { return &recorder{ch: make(chan attempt, 1000)} }

func (r *recorder) onError(err error, n int, permanent bool, wait time.Duration) {
	a := attempt{err, n, permanent, wait}
	r.mu.Lock()
	r.attempts = append(r.attempts, a)
	r.mu.Unlock()
	r.ch <- a
}

func (r *recorder) all() []attempt {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]attempt(nil), r.attempts...)
}

// putAndCheckOnce checks that the bucket holds exactly obj, once.
func checkStoredOnce(t *testing.T, srv *s3server.Server, obj *Object) {
	t.Helper()
	objs := srv.ListObjects(t)
	if len(objs) != 1 || objs[0].Key != testPrefix+"/"+obj.Key {
		t.Fatalf("bucket holds %+v, want only %s", objs, obj.Key)
	}
	if got := srv.GetObject(t, objs[0].Key); !bytes.Equal(got, obj.Body) {
		t.Fatalf("stored %q, want %q", got, obj.Body)
	}
}

func TestRetryTransientErrors(t *testing.T) {
	tests := []struct {
		status int
		code   string
	}{
		{http.StatusInternalServerError, "InternalError"},
		{http.StatusServiceUnavailable, "SlowDown"},
		{http.StatusTooManyRequests, "TooManyRequests"},
		{http.StatusConflict, "ConditionalRequestConflict"},
	}
	srv := s3server.Start(t)
	proxy := faultproxy.Start(t, srv.Endpoint())
	u := newS3(t, srv, proxy.URL(), nil)
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			proxy.ResetCounts()
			rec := newRecorder()
			r := Retry{Next: u, Initial: time.Millisecond, Max: 4 * time.Millisecond, OnError: rec.onError}
			obj := &Object{Key: tt.code + ".gz", Body: []byte("body of " + tt.code)}
			proxy.FailCode(3, tt.status, tt.code)
			if err := r.Put(testCtx(t), obj); err != nil {
				t.Fatalf("Put: %v", err)
			}
			got := rec.all()
			if len(got) != 3 {
				t.Fatalf("OnError called %d times, want 3", len(got))
			}
			for i, a := range got {
				if a.n != i+1 || a.permanent || a.wait < 0 || a.wait > 4*time.Millisecond {
					t.Errorf("report %d: attempt %d permanent %v wait %v", i, a.n, a.permanent, a.wait)
				}
			}
			if c := proxy.Counts(); c.Injected != 3 || c.Methods["PUT 200"] != 1 {
				t.Errorf("proxy saw %+v, want 3 injected errors and one stored PUT", c)
			}
			if stored := srv.GetObject(t, testPrefix+"/"+obj.Key); !bytes.Equal(stored, obj.Body) {
				t.Fatalf("stored %q", stored)
			}
		})
	}
}

// TestRetryServerRestart stops the S3 server, lets Put fail against the
// closed port, restarts the server and checks that the object arrives once.
func TestRetryServerRestart(t *testing.T) {
	srv := s3server.Start(t)
	u := newS3(t, srv, srv.Endpoint(), nil)
	obj := &Object{Key: "outage.gz", Body: []byte("survives an outage")}
	rec := newRecorder()
	r := Retry{Next: Timeout{Next: u, Duration: 5 * time.Second}, Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond, OnError: rec.onError}

	srv.Stop()
	done := make(chan error, 1)
	go func() { done <- r.Put(testCtx(t), obj) }()
	for i := 0; i < 3; i++ {
		a := <-rec.ch
		if a.permanent {
			t.Errorf("outage reported as permanent: %v", a.err)
		}
	}
	srv.Restart()
	if err := <-done; err != nil {
		t.Fatalf("Put across the outage: %v", err)
	}
	checkStoredOnce(t, srv, obj)
}

// TestRetryProxyDown drops connections in the proxy, with the server up.
func TestRetryProxyDown(t *testing.T) {
	srv := s3server.Start(t)
	proxy := faultproxy.Start(t, srv.Endpoint())
	u := newS3(t, srv, proxy.URL(), nil)
	obj := &Object{Key: "down.gz", Body: []byte("through a flaky network")}
	rec := newRecorder()
	r := Retry{Next: u, Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond, OnError: rec.onError}

	proxy.Down()
	done := make(chan error, 1)
	go func() { done <- r.Put(testCtx(t), obj) }()
	<-rec.ch
	<-rec.ch
	if err := proxy.Up(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Put: %v", err)
	}
	checkStoredOnce(t, srv, obj)
}

// TestRetryPermanentSlowlyNeverDropped checks that permanent errors are
// reported as such, wait about Max, and are still retried until they clear.
func TestRetryPermanentSlowlyNeverDropped(t *testing.T) {
	srv := s3server.Start(t)
	proxy := faultproxy.Start(t, srv.Endpoint())
	u := newS3(t, srv, proxy.URL(), nil)
	rec := newRecorder()
	const maxWait = 20 * time.Millisecond
	r := Retry{Next: u, Initial: time.Millisecond, Max: maxWait, OnError: rec.onError}
	obj := &Object{Key: "denied.gz", Body: []byte("eventually allowed")}
	proxy.Fail(2, http.StatusForbidden)
	if err := r.Put(testCtx(t), obj); err != nil {
		t.Fatalf("Put: %v", err)
	}
	got := rec.all()
	if len(got) != 2 {
		t.Fatalf("OnError called %d times, want 2", len(got))
	}
	for _, a := range got {
		var pe *PermanentError
		if !a.permanent || !errors.As(a.err, &pe) || !IsPermanent(a.err) {
			t.Errorf("403 reported as permanent=%v (%v)", a.permanent, a.err)
		}
		if a.wait < maxWait/2 || a.wait > maxWait {
			t.Errorf("permanent error waits %v, want within [%v, %v]", a.wait, maxWait/2, maxWait)
		}
	}
	checkStoredOnce(t, srv, obj)
}

func TestRetryGivesUpAfterMaxElapsed(t *testing.T) {
	srv := s3server.Start(t)
	u := newS3(t, srv, srv.Endpoint(), func(o *S3Options) { o.Bucket = "no-such-bucket" })
	rec := newRecorder()
	// MaxElapsed leaves room for a first attempt slowed by a loaded
	// machine: a failure that would wait past it gives up without OnError.
	r := Retry{Next: u, Initial: time.Millisecond, Max: 10 * time.Millisecond, MaxElapsed: 500 * time.Millisecond, OnError: rec.onError}
	err := r.Put(testCtx(t), &Object{Key: "k.gz", Body: []byte("x")})
	if !errors.Is(err, ErrGaveUp) || !IsPermanent(err) {
		t.Fatalf("Put = %v, want ErrGaveUp wrapping a permanent error", err)
	}
	if n := len(rec.all()); n == 0 {
		t.Fatal("OnError never called")
	}
	for _, a := range rec.all() {
		if !a.permanent {
			t.Errorf("NoSuchBucket reported as transient: %v", a.err)
		}
	}
}

func TestRetryHonoursContext(t *testing.T) {
	srv := s3server.Start(t)
	proxy := faultproxy.Start(t, srv.Endpoint())
	u := newS3(t, srv, proxy.URL(), nil)
	proxy.Fail(1<<30, http.StatusServiceUnavailable)
	ctx, cancel := context.WithCancel(testCtx(t))
	rec := newRecorder()
	r := Retry{Next: u, Initial: time.Millisecond, Max: 5 * time.Millisecond, OnError: rec.onError}
	done := make(chan error, 1)
	go func() { done <- r.Put(ctx, &Object{Key: "k.gz", Body: []byte("x")}) }()
	<-rec.ch
	<-rec.ch
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) || IsPermanent(err) {
		t.Fatalf("Put after cancel = %v, want a non-permanent error wrapping context.Canceled", err)
	}
	if objs := srv.ListObjects(t); len(objs) != 0 {
		t.Fatalf("bucket holds %+v", objs)
	}

	// A long wait is cut short by the context too.
	ctx, cancel = context.WithTimeout(testCtx(t), 50*time.Millisecond)
	defer cancel()
	slow := Retry{Next: u, Initial: time.Hour, Max: time.Hour}
	if err := slow.Put(ctx, &Object{Key: "k.gz", Body: []byte("x")}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Put with an hour of backoff = %v, want context.DeadlineExceeded", err)
	}
}

func TestTimeoutStage(t *testing.T) {
	srv := s3server.Start(t)
	proxy := faultproxy.Start(t, srv.Endpoint())
	u := newS3(t, srv, proxy.URL(), nil)
	obj := &Object{Key: "slow.gz", Body: []byte("slow network")}

	proxy.SetLatency(10 * time.Second)
	err := Timeout{Next: u, Duration: 50 * time.Millisecond}.Put(testCtx(t), obj)
	if !errors.Is(err, ErrAttemptTimeout) || IsPermanent(err) {
		t.Fatalf("Put through a slow proxy = %v, want a transient ErrAttemptTimeout", err)
	}

	r := Retry{
		Next:    Timeout{Next: u, Duration: 50 * time.Millisecond},
		Initial: time.Millisecond, Max: 5 * time.Millisecond,
		OnError: func(err error, n int, permanent bool, wait time.Duration) {
			if !errors.Is(err, ErrAttemptTimeout) || permanent {
				t.Errorf("attempt %d: %v (permanent %v), want a transient timeout", n, err, permanent)
			}
			proxy.SetLatency(0)
		},
	}
	if err := r.Put(testCtx(t), obj); err != nil {
		t.Fatalf("Put: %v", err)
	}
	checkStoredOnce(t, srv, obj)
}

func TestIsPermanentBasics(t *testing.T) {
	base := errors.New("x")
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{base, false},
		{Permanent(base), true},
		{Permanent(Permanent(base)), true},
		{context.Canceled, false},
		{context.DeadlineExceeded, false},
		{ErrAttemptTimeout, false},
	}
	for _, tt := range tests {
		if got := IsPermanent(tt.err); got != tt.want {
			t.Errorf("IsPermanent(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
	if Permanent(nil) != nil {
		t.Error("Permanent(nil) != nil")
	}
	if p := Permanent(base); !errors.Is(p, base) {
		t.Error("Permanent does not unwrap")
	}
}
