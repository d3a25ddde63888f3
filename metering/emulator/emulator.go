package emulator

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/metership/metership/internal/ctxtime"
)

// InstanceHeader overrides the caller identity taken from the SigV4 access
// key id, so one credential can act as several pods.
const InstanceHeader = "X-Emulator-Instance"

const (
	targetPrefix   = "AWSMPMeteringService."
	contentType    = "application/x-amz-json-1.1"
	signingName    = "aws-marketplace"
	sigV4Algorithm = "AWS4-HMAC-SHA256"
)

// Emulator is an http.Handler speaking the AWS Marketplace Metering Service
// protocol (AWS JSON 1.1) plus a few side endpoints under "/_". It is safe
// for concurrent use: one mutex guards all state, and injected latency is
// served outside it.
type Emulator struct {
	cfg Config
	now func() time.Time
	log *zap.Logger

	// mu guards everything below.
	mu sync.Mutex
	st State
	// hourly indexes MeterUsage records by their once-per-hour key.
	hourly map[hourKey]int
	// batch indexes BatchMeterUsage records by their duplicate key.
	batch map[batchKey]int
	// tokens remembers MeterUsage ClientTokens per caller.
	tokens map[tokenKey]tokenEntry
}

// hourKey is what MeterUsage allows once: product, dimension, hour, caller.
type hourKey struct {
	product, dimension, instance string
	hour                         int64
}

// batchKey is what BatchMeterUsage allows once per customer and hour.
type batchKey struct {
	product, customer, license, dimension string
	hour                                  int64
}

type tokenKey struct{ instance, token string }

// tokenEntry is the request a ClientToken was first used with.
type tokenEntry struct {
	fingerprint string
	record      int
}

// New returns an emulator for cfg, with zero fields set to the defaults.
// A zero Config has no products, so every product code is refused; start
// from DefaultConfig for the demo product.
func New(cfg Config) *Emulator {
	cfg = cfg.withDefaults().clone()
	e := &Emulator{cfg: cfg, now: cfg.Now, log: cfg.Logger}
	if e.now == nil {
		e.now = time.Now
	}
	if e.log == nil {
		e.log = zap.NewNop()
	}
	e.resetLocked()
	return e
}

// State returns a deep copy of the emulator's state.
func (e *Emulator) State() State {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.st.clone()
}

// InjectFaults replaces the pending faults with f; Faults{} clears them.
func (e *Emulator) InjectFaults(f Faults) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.st.Faults = f
}

// Reset forgets every record, conflict, counter, ClientToken and fault.
func (e *Emulator) Reset() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.resetLocked()
}

func (e *Emulator) resetLocked() {
	e.st = State{
		Records:        []Record{},
		Conflicts:      []Conflict{},
		Requests:       map[string]int{},
		Errors:         map[string]int{},
		RecordStatuses: map[string]int{},
	}
	e.hourly = map[hourKey]int{}
	e.batch = map[batchKey]int{}
	e.tokens = map[tokenKey]tokenEntry{}
}

// ServeHTTP serves the side endpoints GET /_state, POST /_faults,
// POST /_reset and GET /_healthz, and the Metering Service on POST /.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/_state":
		e.serveState(w, r)
	case "/_faults":
		e.serveFaults(w, r)
	case "/_reset":
		e.serveReset(w, r)
	case "/_healthz":
		if !allowMethod(w, r, http.MethodGet) {
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	default:
		e.serveAWS(w, r)
	}
}

func allowMethod(w http.ResponseWriter, r *http.Request, method string) bool {
	if r.Method == method || (method == http.MethodGet && r.Method == http.MethodHead) {
		return true
	}
	w.Header().Set("Allow", method)
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

func (e *Emulator) serveState(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodGet) {
		return
	}
	writeJSON(w, http.StatusOK, "application/json", e.State())
}

func (e *Emulator) serveFaults(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodPost) {
		return
	}
	var f Faults
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	if err := dec.Decode(&f); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	e.InjectFaults(f)
	writeJSON(w, http.StatusOK, "application/json", f)
}

func (e *Emulator) serveReset(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodPost) {
		return
	}
	e.Reset()
	w.WriteHeader(http.StatusNoContent)
}

// requestContext is what an operation handler knows about its caller.
type requestContext struct {
	instance string
	now      time.Time
}

// serveAWS answers one Metering Service request: protocol and
// authentication checks, injected latency and faults, then the operation.
func (e *Emulator) serveAWS(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Amzn-RequestId", uuid.NewString())
	target := r.Header.Get("X-Amz-Target")
	op := strings.TrimPrefix(target, targetPrefix)
	known := strings.HasPrefix(target, targetPrefix) &&
		slices.Contains([]string{OpMeterUsage, OpBatchMeterUsage, OpRegisterUsage, OpResolveCustomer}, op)
	if known {
		e.count(func(s *State) { s.Requests[op]++ })
	}
	rc, body, apiErr := e.admit(r, known)
	if apiErr != nil {
		e.writeError(w, op, apiErr)
		return
	}
	if !e.delay(r) {
		// The caller gave up during injected latency: nothing is processed
		// and nobody reads an answer.
		return
	}
	if apiErr := e.takeFault(); apiErr != nil {
		e.writeError(w, op, apiErr)
		return
	}
	rc.now = e.now().UTC()
	var out any
	switch op {
	case OpMeterUsage:
		out, apiErr = e.meterUsage(rc, body)
	case OpBatchMeterUsage:
		out, apiErr = e.batchMeterUsage(rc, body)
	case OpRegisterUsage:
		out, apiErr = e.registerUsage(rc, body)
	default:
		out, apiErr = e.resolveCustomer(rc, body)
	}
	if apiErr != nil {
		e.writeError(w, op, apiErr)
		return
	}
	e.log.Debug("metering emulator request served", zap.String("operation", op), zap.String("instance", rc.instance))
	writeJSON(w, http.StatusOK, contentType, out)
}

// admit checks method, path, target, content type and SigV4 scope, and
// reads the body; it identifies the caller.
func (e *Emulator) admit(r *http.Request, known bool) (*requestContext, []byte, *apiError) {
	if r.Method != http.MethodPost || r.URL.Path != "/" {
		return nil, nil, newError(http.StatusNotFound, CodeUnknownOperation, "the Metering Service answers POST / only, not %s %s", r.Method, r.URL.Path)
	}
	if !known {
		return nil, nil, badRequest(CodeUnknownOperation, "unknown X-Amz-Target %q", r.Header.Get("X-Amz-Target"))
	}
	if ct, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";"); strings.TrimSpace(ct) != contentType {
		return nil, nil, badRequest(CodeSerialization, "Content-Type must be %s, got %q", contentType, r.Header.Get("Content-Type"))
	}
	accessKey, apiErr := e.authenticate(r.Header.Get("Authorization"))
	if apiErr != nil {
		return nil, nil, apiErr
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBytes))
	if err != nil {
		return nil, nil, badRequest(CodeSerialization, "read request body: %v", err)
	}
	if len(body) >= maxRequestBytes {
		return nil, nil, badRequest(CodeValidation, "the request body must be less than 1 MB")
	}
	rc := &requestContext{instance: accessKey}
	if inst := r.Header.Get(InstanceHeader); inst != "" {
		rc.instance = inst
	}
	return rc, body, nil
}

// writeError counts and writes an AWS error answer.
func (e *Emulator) writeError(w http.ResponseWriter, op string, apiErr *apiError) {
	e.count(func(s *State) { s.Errors[apiErr.code]++ })
	e.log.Debug("metering emulator request refused", zap.String("operation", op), zap.String("error", apiErr.code), zap.String("message", apiErr.message))
	w.Header().Set("X-Amzn-ErrorType", apiErr.code)
	writeJSON(w, apiErr.status, contentType, map[string]string{"__type": apiErr.code, "message": apiErr.message})
}

// authenticate checks that the request carries SigV4 scoped to this
// service and Region, and returns the access key id. The signature itself
// is not verified.
func (e *Emulator) authenticate(header string) (string, *apiError) {
	if header == "" {
		return "", newError(http.StatusForbidden, CodeMissingAuthenticationToken, "Missing Authentication Token")
	}
	alg, params, _ := strings.Cut(header, " ")
	if alg != sigV4Algorithm {
		return "", newError(http.StatusForbidden, CodeIncompleteSignature, "Authorization must use %s, got %q", sigV4Algorithm, alg)
	}
	var credential string
	var signed bool
	for _, p := range strings.Split(params, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		switch k {
		case "Credential":
			credential = v
		case "Signature":
			signed = v != ""
		}
	}
	// Credential=AKID/yyyymmdd/region/service/aws4_request
	scope := strings.Split(credential, "/")
	if len(scope) != 5 || scope[0] == "" || scope[4] != "aws4_request" || !signed {
		return "", newError(http.StatusForbidden, CodeIncompleteSignature, "Authorization header requires Credential=<key>/<date>/<region>/<service>/aws4_request and Signature")
	}
	if scope[3] != signingName {
		return "", newError(http.StatusForbidden, CodeInvalidSignature, "Credential should be scoped to correct service: '%s'", signingName)
	}
	if scope[2] != e.cfg.Region {
		return "", badRequest(CodeInvalidEndpointRegion, "the request is signed for Region %s but this endpoint serves %s", scope[2], e.cfg.Region)
	}
	return scope[0], nil
}

// delay serves injected latency; false means the caller gave up meanwhile.
func (e *Emulator) delay(r *http.Request) bool {
	e.mu.Lock()
	d := e.st.Faults.Latency
	e.mu.Unlock()
	if d <= 0 {
		return true
	}
	return ctxtime.Sleep(r.Context(), d)
}

// takeFault consumes the next request fault, if any.
func (e *Emulator) takeFault() *apiError {
	e.mu.Lock()
	defer e.mu.Unlock()
	f := &e.st.Faults
	switch {
	case f.DisabledAPI:
		return badRequest(CodeDisabledAPI, "the API is disabled (injected fault)")
	case f.Throttle > 0:
		f.Throttle--
		return badRequest(CodeThrottling, "Rate exceeded (injected fault)")
	case f.Internal > 0:
		f.Internal--
		return newError(http.StatusInternalServerError, CodeInternalServiceError, "internal service error (injected fault)")
	}
	return nil
}

// count applies fn to the state under the lock.
func (e *Emulator) count(fn func(*State)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	fn(&e.st)
}

func writeJSON(w http.ResponseWriter, status int, ct string, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
