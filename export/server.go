package export

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/metership/metership/ship"
)

// maxBody bounds a request body; a job is a few hundred bytes.
const maxBody = 1 << 20

// Server is the Jobs API over a Store.
type Server struct {
	Store     Store
	Scheduler *Scheduler // optional: kicked after a create or update
	// Source is output.url, for /jobs/check's table definition.
	Source ship.Destination
	Now    func() time.Time
	Log    *zap.Logger

	keys [][sha256.Size]byte
}

// SetAPIKeys sets the accepted X-API-Key values. They are kept hashed, so
// the comparison takes the same time whatever the key's length.
func (s *Server) SetAPIKeys(keys []string) {
	s.keys = s.keys[:0]
	for _, k := range keys {
		s.keys = append(s.keys, sha256.Sum256([]byte(k)))
	}
}

// Handler serves the Jobs API. Every route needs a valid X-API-Key; the
// key is never logged.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /jobs", s.list)
	mux.HandleFunc("GET /jobs/{id}", s.get)
	mux.HandleFunc("POST /jobs", s.create)
	mux.HandleFunc("PUT /jobs", s.update)
	mux.HandleFunc("DELETE /jobs/{id}", s.delete)
	mux.HandleFunc("POST /jobs/check", s.check)
	return s.auth(mux)
}

func (s *Server) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.authorized(r.Header.Get("X-API-Key")) {
			w.Header().Set("WWW-Authenticate", `APIKey header="X-API-Key"`)
			writeError(w, http.StatusUnauthorized, "X-API-Key", "missing or not accepted")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// authorized compares against every key in constant time (no early exit,
// equal-length hashes).
func (s *Server) authorized(key string) bool {
	if key == "" {
		return false
	}
	h := sha256.Sum256([]byte(key))
	ok := 0
	for i := range s.keys {
		ok |= subtle.ConstantTimeCompare(h[:], s.keys[i][:])
	}
	return ok == 1
}

// JobView is a job as the API shows it: its fields plus the last run.
type JobView struct {
	*Job
	LastRun *Run `json:"lastRun,omitempty"`
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	jobs, err := s.Store.List(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	out := make([]JobView, 0, len(jobs))
	for _, j := range jobs {
		run, err := s.Store.GetRun(r.Context(), j.ID)
		if err != nil {
			s.fail(w, err)
			return
		}
		out = append(out, JobView{Job: j, LastRun: run})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	j, _, err := s.Store.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	run, err := s.Store.GetRun(r.Context(), j.ID)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, JobView{Job: j, LastRun: run})
}

func (s *Server) decode(w http.ResponseWriter, r *http.Request) (*Job, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeError(w, http.StatusBadRequest, "body", fmt.Sprintf("cannot read: %v", err))
		return nil, false
	}
	j, err := DecodeJob(body)
	var verr *ValidationError
	if errors.As(err, &verr) {
		writeJSON(w, http.StatusBadRequest, verr)
		return nil, false
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "body", err.Error())
		return nil, false
	}
	return j, true
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	j, ok := s.decode(w, r)
	if !ok {
		return
	}
	if j.ID != "" {
		writeError(w, http.StatusBadRequest, "id", "assigned by the server; to change a job, PUT /jobs with its id")
		return
	}
	now := s.now().UnixMilli()
	j.ID = uuid.NewString()
	j.CreateTime, j.UpdateTime = now, now
	if err := s.Store.Create(r.Context(), j); err != nil {
		s.fail(w, err)
		return
	}
	s.kick()
	writeJSON(w, http.StatusCreated, JobView{Job: j})
}

// update replaces a job. A body carrying updateTime is applied only if
// the job is still at that version (409 otherwise): a client doing
// read-modify-write never overwrites a change it has not seen. The store
// write itself is conditional too, so two servers never lose an update.
func (s *Server) update(w http.ResponseWriter, r *http.Request) {
	j, ok := s.decode(w, r)
	if !ok {
		return
	}
	if j.ID == "" {
		writeError(w, http.StatusBadRequest, "id", "required: the id of the job to update")
		return
	}
	cur, ver, err := s.Store.Get(r.Context(), j.ID)
	if err != nil {
		s.fail(w, err)
		return
	}
	if j.UpdateTime != 0 && j.UpdateTime != cur.UpdateTime {
		writeError(w, http.StatusConflict, "updateTime", fmt.Sprintf("the job was updated at %d since this version (%d); GET it and apply the change again", cur.UpdateTime, j.UpdateTime))
		return
	}
	j.CreateTime = cur.CreateTime
	j.UpdateTime = max(s.now().UnixMilli(), cur.UpdateTime+1)
	if err := s.Store.Update(r.Context(), j, ver); err != nil {
		s.fail(w, err)
		return
	}
	s.kick()
	writeJSON(w, http.StatusOK, JobView{Job: j})
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	if err := s.Store.Delete(r.Context(), r.PathValue("id")); err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// CheckResult is /jobs/check's answer.
type CheckResult struct {
	Job   *Job   `json:"job"`
	Plan  *Plan  `json:"plan"`
	Key   string `json:"key"`
	Query Query  `json:"query"`
}

func (s *Server) check(w http.ResponseWriter, r *http.Request) {
	j, ok := s.decode(w, r)
	if !ok {
		return
	}
	res, err := Check(j, s.Source, s.now())
	if err != nil {
		writeError(w, http.StatusBadRequest, "range", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// Check is what /jobs/check shows for a valid job at now: the plan, the
// object key a run would write and the query as SQL.
func Check(j *Job, source ship.Destination, now time.Time) (*CheckResult, error) {
	at := now
	if j.ScheduledTimeInSeconds != 0 {
		at = time.Unix(j.ScheduledTimeInSeconds, 0)
	}
	plan, err := NewPlan(j, at)
	if err != nil {
		return nil, err
	}
	loc, _ := ParseLocation(j.S3URL)
	key := ObjectKey(loc, j, plan.Window())
	if loc.Scheme == ship.SchemeS3 {
		key = "s3://" + loc.Bucket + "/" + key
	} else {
		key = loc.String() + "/" + key
	}
	return &CheckResult{Job: j, Plan: plan, Key: key, Query: Query{Table: TableDDL(source), SQL: plan.SQL()}}, nil
}

func (s *Server) fail(w http.ResponseWriter, err error) {
	var taken *NameTakenError
	switch {
	case errors.As(err, &taken):
		writeError(w, http.StatusConflict, "jobName", taken.Error())
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, "id", "no such job")
	case errors.Is(err, ErrConflict):
		writeError(w, http.StatusConflict, "id", "the job was changed concurrently; GET it and apply the change again")
	case errors.Is(err, ErrExists):
		writeError(w, http.StatusConflict, "id", "exists")
	default:
		if s.Log != nil {
			s.Log.Error("jobs API: store", zap.Error(err))
		}
		writeError(w, http.StatusInternalServerError, "store", err.Error())
	}
}

func (s *Server) kick() {
	if s.Scheduler != nil {
		s.Scheduler.Kick()
	}
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // SQL has < and >: keep it readable
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, field, msg string) {
	writeJSON(w, status, ValidationError{Errors: []FieldError{{Field: field, Message: msg}}})
}
