package metering

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"go.uber.org/zap"

	"github.com/metership/metership/internal/fsutil"
	"github.com/metership/metership/internal/retry"
)

// outcome classifies the answer to a call.
type outcome int

const (
	outOK outcome = iota
	outDryRun
	outConflict
	outOutOfBounds
	outRetry
	outPermanent
	outCanceled
)

// classify maps an SDK error to what the reporter does about it.
func classify(ctx context.Context, err error) (outcome, string) {
	if err == nil {
		return outOK, ""
	}
	if ctx.Err() != nil {
		return outCanceled, "Canceled"
	}
	code := "Network"
	var apiErr smithy.APIError
	var re *smithyhttp.ResponseError
	switch {
	case errors.As(err, &apiErr):
		switch code = apiErr.ErrorCode(); code {
		case "DryRunOperation":
			return outDryRun, code
		case "DuplicateRequestException", "IdempotencyConflictException":
			return outConflict, code
		case "TimestampOutOfBoundsException":
			return outOutOfBounds, code
		case "":
			code = "Unknown"
		}
	case errors.As(err, &re):
		code = fmt.Sprintf("HTTP%d", re.HTTPStatusCode())
	}
	// What is worth retrying is the same for every AWS API: the output's
	// rules (throttling and timeout codes, 408, 429, 5xx, network errors).
	if retry.IsPermanent(err) {
		return outPermanent, code
	}
	return outRetry, code
}

// resolve records the answer to an intent in memory; answers are written
// in groups (every Options.answerSaveEvery, and when the pass ends), not
// one fsync'd ledger rewrite per call. Losing unwritten answers is safe:
// their intents are still pending on disk and are re-sent unchanged, which
// AWS answers idempotently (same ClientToken, same parameters).
func (m *Meter) resolve(in *intent, status, recordID, msg string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.resolveLocked(in, status, recordID, msg)
	m.answeredLocked()
}

// answeredLocked follows answers (and expiries) recorded in memory: the
// ledger is written at most every answerSaveEvery while a pass runs, and
// when it ends (saveResolved).
func (m *Meter) answeredLocked() {
	m.dirty = true
	if time.Since(m.savedAt) >= m.opts.answerSaveEvery {
		m.saveResolvedLocked()
	}
	m.updatePendingLocked()
}

// saveResolved writes answers resolve left in memory.
func (m *Meter) saveResolved() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.saveResolvedLocked()
}

func (m *Meter) saveResolvedLocked() {
	if err := m.flushLocked(); err != nil {
		m.log.Error("metering: ledger write failed; retried on the next change", zap.Error(err))
	}
}

// resolveLocked records the answer to an intent in memory.
func (m *Meter) resolveLocked(in *intent, status, recordID, msg string) {
	now := m.now()
	in.Status = status
	in.Resolved = now.UTC()
	in.RecordID = recordID
	in.Error = msg
	fields := []zap.Field{zap.String("dimension", in.Dimension), zap.Time("hour", in.Hour), zap.Int64("quantity", in.Quantity)}
	if in.Customer != "" {
		fields = append(fields, zap.String("customer", in.Customer))
	}
	switch status {
	case statusAccepted:
		m.metrics.lastSuccess.Set(float64(now.Unix()))
		m.sum.HoursReported++
		m.sum.Quantities[in.Dimension] += in.Quantity
		m.log.Debug("usage reported", append(fields, zap.String("metering_record_id", recordID))...)
	case statusDryRun:
		m.metrics.lastSuccess.Set(float64(now.Unix()))
		m.sum.DryRun++
		m.log.Info("dry run: usage validated, not recorded", fields...)
	case statusConflict:
		m.sum.Conflicts++
		m.log.Error("AWS Marketplace already holds a different quantity for this hour; not re-sent", append(fields, zap.String("error", msg))...)
	case statusNotSubscribed:
		m.sum.NotSubscribed++
		c := m.led.notSubscribed[in.Customer]
		if c == nil {
			c = &customerState{Customer: in.Customer, First: now.UTC()}
			m.led.notSubscribed[in.Customer] = c
		}
		c.Last = now.UTC()
		c.Records++
		c.LastIntent = in.ID
		m.metrics.notSubscribed.Set(float64(len(m.led.notSubscribed)))
		m.log.Error("customer not subscribed; usage dead-lettered, not retried", fields...)
	}
}

// expire marks an intent that can no longer be reported and moves its
// quantity to the oldest reportable hour of its key.
func (m *Meter) expire(in *intent, reason string) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.led.seriesFor(seriesKey{customer: in.Customer, license: in.License, dimension: in.Dimension})
	to := s.firstFree(oldestReportable(now, m.set.window, m.set.lateness, m.lastCut))
	in.Status = statusExpired
	in.Resolved = now.UTC()
	in.Error = reason
	records := in.Records
	if len(in.Allocations) > 0 {
		for _, a := range in.Allocations {
			s.addUsage(to, a.Tags, a.Quantity*nanosPerUnit, records)
			records = 0
		}
	} else if in.Quantity > 0 || records > 0 {
		s.addUsage(to, nil, in.Quantity*nanosPerUnit, records)
	}
	m.metrics.hoursCarried.WithLabelValues("out_of_bounds").Inc()
	m.sum.Carried++
	m.log.Warn("usage hour fell out of the API window before it was accepted; quantity moved to the oldest reportable hour",
		zap.String("dimension", in.Dimension), zap.String("customer", in.Customer), zap.Time("hour", in.Hour),
		zap.Time("to", hourTime(to)), zap.Int64("quantity", in.Quantity), zap.String("reason", reason))
	// Unwritten, the intent is still pending on disk and expires again.
	m.answeredLocked()
}

// deadLetterEntry is one line of a metering dead-letter file.
type deadLetterEntry struct {
	Reason               string       `json:"reason"`
	Product              string       `json:"product"`
	Hour                 time.Time    `json:"hour"`
	CustomerAWSAccountID string       `json:"customer_aws_account_id,omitempty"`
	CustomerIdentifier   string       `json:"customer_identifier,omitempty"`
	License              string       `json:"license_arn,omitempty"`
	Dimension            string       `json:"dimension"`
	Quantity             int64        `json:"quantity"`
	Allocations          []allocation `json:"allocations,omitempty"`
	Records              int64        `json:"records"`
	Intent               string       `json:"intent"`
}

// deadLetter writes the intent's hour totals to
// Dir/dead-letters/<hour>-<intent id>.ndjson (the same name every time, so
// a repeat after a crash rewrites the same file).
func (m *Meter) deadLetter(in *intent, reason string) error {
	dir := filepath.Join(m.opts.Dir, deadLetterDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("metering: %w", err)
	}
	line, err := json.Marshal(deadLetterEntry{
		Reason: reason, Product: in.Product, Hour: in.Hour,
		CustomerAWSAccountID: in.CustomerAWSAccountID, CustomerIdentifier: in.CustomerIdentifier,
		License: in.License, Dimension: in.Dimension, Quantity: in.Quantity,
		Allocations: in.Allocations, Records: in.Records, Intent: in.ID,
	})
	if err != nil {
		return err
	}
	name := in.Hour.UTC().Format("20060102T15Z") + "-" + in.ID + ".ndjson"
	if err := fsutil.WriteFileAtomic(dir, name, append(line, '\n'), 0o644, nil); err != nil {
		return fmt.Errorf("metering: dead letter %s: %w", name, err)
	}
	m.metrics.deadLetters.Inc()
	return nil
}
