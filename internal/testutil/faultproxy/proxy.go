// Package faultproxy is an HTTP reverse proxy on 127.0.0.1 with switchable
// faults, put between a client and a real server (versitygw) to test
// retries: injected S3 error responses, added latency, and outages where
// connections are refused. It counts what it saw.
//
// The proxy keeps the client's Host header, so SigV4 signatures made for
// the proxy's address verify at the server.
package faultproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Counts is a snapshot of the proxy's counters.
type Counts struct {
	// Requests is every request that reached the proxy.
	Requests int
	// Injected were answered with an injected error.
	Injected int
	// Forwarded reached the target and got an answer.
	Forwarded int
	// ForwardErrors failed to reach the target (answered 502).
	ForwardErrors int
	// Status counts forwarded answers by HTTP status.
	Status map[int]int
	// Methods counts requests by "METHOD" and by "METHOD status" for
	// forwarded answers, e.g. "PUT 412".
	Methods map[string]int
}

// Proxy is a running fault proxy.
type Proxy struct {
	target    *url.URL
	addr      string
	transport *http.Transport
	rp        *httputil.ReverseProxy
	handlers  sync.WaitGroup // requests being handled; Close waits for them

	mu         sync.Mutex // guards everything below
	skipLeft   int
	failLeft   int
	failStatus int
	failCode   string
	latency    time.Duration
	srv        *http.Server
	served     chan struct{} // closed when srv's Serve returns
	down       chan struct{} // closed by Down; ends latency waits
	counts     Counts
	closed     bool
}

// Start starts a proxy to target (a base URL such as s3server's Endpoint)
// on a free loopback port and closes it at t.Cleanup.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	p, err := New(target)
	if err != nil {
		t.Fatalf("faultproxy: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// New starts a proxy to target on a free loopback port; Close stops it.
func New(target string) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("target %q: %w", target, err)
	}
	p := &Proxy{
		target:    u,
		transport: &http.Transport{DisableCompression: true},
		counts:    Counts{Status: map[int]int{}, Methods: map[string]int{}},
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(p.target)
			pr.Out.Host = pr.In.Host
		},
		Transport:      p.transport,
		ModifyResponse: p.countResponse,
		ErrorHandler:   p.forwardError,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p.addr = ln.Addr().String()
	p.mu.Lock()
	p.serveLocked(ln)
	p.mu.Unlock()
	return p, nil
}

func (p *Proxy) serveLocked(ln net.Listener) {
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	p.srv, p.served, p.down = srv, served, make(chan struct{})
}

// URL is the proxy's base URL, http://127.0.0.1:PORT.
func (p *Proxy) URL() string { return "http://" + p.addr }

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.addr }

// Fail answers the next n requests with status and an S3 XML error body
// whose code suits the status (500 InternalError, 503 SlowDown, 403
// AccessDenied, ...). The request body is read first, as a server would.
func (p *Proxy) Fail(n, status int) { p.FailCode(n, status, codeFor(status)) }

// FailCode is Fail with an explicit S3 error code.
func (p *Proxy) FailCode(n, status int, code string) { p.FailAfterCode(0, n, status, code) }

// FailAfter forwards the next skip requests, then fails n as Fail does: for
// hitting one step of a multi-request operation such as a multipart upload.
func (p *Proxy) FailAfter(skip, n, status int) { p.FailAfterCode(skip, n, status, codeFor(status)) }

// FailAfterCode is FailAfter with an explicit S3 error code.
func (p *Proxy) FailAfterCode(skip, n, status int, code string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.skipLeft, p.failLeft, p.failStatus, p.failCode = skip, n, status, code
}

// SetLatency delays every request by d before it is answered or forwarded.
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latency = d
}

// Down closes the listener and every open connection: new connections are
// refused and requests in flight fail, until Up.
func (p *Proxy) Down() {
	p.mu.Lock()
	srv, served, down := p.srv, p.served, p.down
	p.srv, p.served, p.down = nil, nil, nil
	p.mu.Unlock()
	if srv == nil {
		return
	}
	close(down)
	srv.Close()
	<-served
	p.transport.CloseIdleConnections()
}

// Up listens again on the same address after Down.
func (p *Proxy) Up() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.srv != nil || p.closed {
		return nil
	}
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return fmt.Errorf("faultproxy: listen again on %s: %w", p.addr, err)
	}
	p.serveLocked(ln)
	return nil
}

// Close stops the proxy for good and waits for its handlers to return.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.Down()
	p.handlers.Wait()
	p.transport.CloseIdleConnections()
}

// Counts returns a snapshot of the counters.
func (p *Proxy) Counts() Counts {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.counts
	c.Status = make(map[int]int, len(p.counts.Status))
	for k, v := range p.counts.Status {
		c.Status[k] = v
	}
	c.Methods = make(map[string]int, len(p.counts.Methods))
	for k, v := range p.counts.Methods {
		c.Methods[k] = v
	}
	return c
}

// Requests is the number of requests that reached the proxy.
func (p *Proxy) Requests() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts.Requests
}

// Status is the number of forwarded answers with the given HTTP status.
func (p *Proxy) Status(code int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts.Status[code]
}

// ResetCounts zeroes the counters.
func (p *Proxy) ResetCounts() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts = Counts{Status: map[int]int{}, Methods: map[string]int{}}
}

// ServeHTTP applies the configured faults, then forwards.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.handlers.Add(1)
	defer p.handlers.Done()
	p.mu.Lock()
	down := p.down
	p.counts.Requests++
	p.counts.Methods[r.Method]++
	inject := p.failLeft > 0 && p.skipLeft == 0
	status, code := p.failStatus, p.failCode
	if p.skipLeft > 0 {
		p.skipLeft--
	} else if inject {
		p.failLeft--
		p.counts.Injected++
	}
	latency := p.latency
	p.mu.Unlock()

	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		case <-down:
			t.Stop()
			return
		}
	}
	if inject {
		io.Copy(io.Discard, r.Body)
		writeError(w, r, status, code)
		return
	}
	p.rp.ServeHTTP(w, r)
}

func (p *Proxy) countResponse(resp *http.Response) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts.Forwarded++
	p.counts.Status[resp.StatusCode]++
	p.counts.Methods[resp.Request.Method+" "+strconv.Itoa(resp.StatusCode)]++
	return nil
}

func (p *Proxy) forwardError(w http.ResponseWriter, r *http.Request, err error) {
	p.mu.Lock()
	p.counts.ForwardErrors++
	p.mu.Unlock()
	if errors.Is(err, context.Canceled) {
		return
	}
	writeError(w, r, http.StatusBadGateway, "BadGateway")
}

func writeError(w http.ResponseWriter, r *http.Request, status int, code string) {
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("X-Amz-Request-Id", "faultproxy")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
		`<Error><Code>%s</Code><Message>injected by faultproxy</Message><RequestId>faultproxy</RequestId></Error>`, code)
}

// codeFor maps a status to the S3 error code S3 typically sends with it.
func codeFor(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "InvalidArgument"
	case http.StatusForbidden:
		return "AccessDenied"
	case http.StatusNotFound:
		return "NoSuchBucket"
	case http.StatusConflict:
		return "ConditionalRequestConflict"
	case http.StatusPreconditionFailed:
		return "PreconditionFailed"
	case http.StatusTooManyRequests:
		return "TooManyRequests"
	case http.StatusInternalServerError:
		return "InternalError"
	case http.StatusServiceUnavailable:
		return "SlowDown"
	}
	return strings.ReplaceAll(http.StatusText(status), " ", "")
}
