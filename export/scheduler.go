package export

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/robfig/cron/v3"
	"go.uber.org/zap"
)

// DefaultRetryAfter is how long a failed one-off run waits before the
// next attempt.
const DefaultRetryAfter = time.Minute

// Scheduler decides which jobs are due and runs them. It keeps no state
// of its own: what ran last is the job's run record in the store, so a
// restarted server (or another server on the same s3:// store) carries on
// where the last run left off.
//
//   - cron: due at each firing after the last run's firing (or after the
//     job's last update); missed firings are caught up one per tick, each
//     exporting its own window. A failed firing is retried at the next
//     firing, before the firings after it.
//   - scheduledTimeInSeconds: due once at that time; a failure is retried
//     after RetryAfter until a run succeeds.
//   - neither: due once, as of the job's last update (an update re-runs it).
//
// A disabled job is never due; a deleted job is no longer listed.
type Scheduler struct {
	Store      Store
	Runner     *Runner
	Now        func() time.Time
	Log        *zap.Logger
	Metrics    *Metrics
	Mailer     Mailer
	RetryAfter time.Duration

	kick chan struct{}
}

var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

// Due reports whether j should run at now and the scheduled time the run
// is for (which fixes its window and key).
func (s *Scheduler) Due(j *Job, last *Run, now time.Time) (time.Time, bool) {
	if !j.IsEnabled() {
		return time.Time{}, false
	}
	updated := time.UnixMilli(j.UpdateTime).UTC().Truncate(time.Second)
	switch {
	case j.Cron != "":
		sched, err := cronParser.Parse(j.Cron)
		if err != nil {
			return time.Time{}, false
		}
		base := updated
		if last != nil && !time.Unix(last.ScheduledTime, 0).Before(updated) {
			base = time.Unix(last.ScheduledTime, 0).UTC()
			if last.Result == ResultFailure {
				// Retry the failed firing's window at the next firing;
				// the firings after it follow, one a tick, so no
				// window is skipped.
				return base, !sched.Next(base).After(now)
			}
		}
		at := sched.Next(base)
		return at, !at.After(now)
	default:
		at := updated
		if j.ScheduledTimeInSeconds != 0 {
			at = time.Unix(j.ScheduledTimeInSeconds, 0).UTC()
		}
		if at.After(now) {
			return at, false
		}
		if last == nil || last.ScheduledTime != at.Unix() {
			return at, true
		}
		if last.Result != ResultFailure {
			return at, false
		}
		retry := s.RetryAfter
		if retry <= 0 {
			retry = DefaultRetryAfter
		}
		return at, !now.Before(time.UnixMilli(last.EndTime).Add(retry))
	}
}

// Tick runs every job due at the scheduler's now, one after another, and
// returns how many ran. Errors reading the store are returned; a failed
// run is recorded, logged and counted.
func (s *Scheduler) Tick(ctx context.Context) (int, error) {
	now := s.now()
	jobs, err := s.Store.List(ctx)
	if err != nil {
		return 0, err
	}
	ran := 0
	for _, j := range jobs {
		if ctx.Err() != nil {
			return ran, ctx.Err()
		}
		if !j.IsEnabled() {
			continue
		}
		last, err := s.Store.GetRun(ctx, j.ID)
		if err != nil {
			s.log().Error("export: cannot read the last run", zap.String("job", j.JobName), zap.Error(err))
			continue
		}
		at, due := s.Due(j, last, now)
		if !due {
			continue
		}
		s.runJob(ctx, j, at)
		ran++
	}
	return ran, nil
}

func (s *Scheduler) runJob(ctx context.Context, j *Job, at time.Time) {
	run := s.Runner.Run(ctx, j, at)
	if s.Metrics != nil {
		s.Metrics.observe(run)
	}
	log := s.log().With(zap.String("job", j.JobName), zap.String("id", j.ID), zap.Time("scheduled", at))
	if run.Result == ResultFailure {
		log.Error("export run failed", zap.String("error", run.Error))
	} else {
		log.Info("export run", zap.String("result", run.Result), zap.String("key", run.Key),
			zap.Int64("rows", run.Rows), zap.Int64("bytes", run.Bytes), zap.Int64("records", run.Records))
	}
	if err := s.Store.PutRun(ctx, j.ID, run); err != nil {
		log.Error("export: cannot record the run", zap.Error(err))
	}
	if s.Mailer != nil && j.Email != "" && run.Result != ResultExists {
		if err := s.Mailer.Send(ctx, j.Email, "metership export "+j.JobName+": "+run.Result, run.Describe(j)+"\n"); err != nil {
			log.Warn("export: cannot mail the result", zap.String("to", j.Email), zap.Error(err))
		}
	}
}

// Kick makes Loop tick now (a new job runs without waiting for the tick).
func (s *Scheduler) Kick() {
	if s.kick == nil {
		return
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Loop ticks every interval (and on Kick) until ctx ends.
func (s *Scheduler) Loop(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := s.Tick(ctx); err != nil && !errors.Is(err, context.Canceled) {
			s.log().Error("export: scheduler tick", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
	}
}

// EnableKick prepares Kick for Loop; call before Loop starts.
func (s *Scheduler) EnableKick() { s.kick = make(chan struct{}, 1) }

func (s *Scheduler) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

func (s *Scheduler) log() *zap.Logger {
	if s.Log == nil {
		return zap.NewNop()
	}
	return s.Log
}

// Metrics are the export's Prometheus metrics.
type Metrics struct {
	runs     *prometheus.CounterVec
	duration prometheus.Histogram
	records  prometheus.Counter
}

// NewMetrics registers the export metrics with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "metership_export_runs_total",
			Help: "Export job runs by result: success (object written), exists (already written by an earlier run of the window), failure.",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "metership_export_run_duration_seconds",
			Help:    "Duration of export job runs.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
		}),
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "metership_export_records_total",
			Help: "Shipped records aggregated by export runs.",
		}),
	}
	for _, r := range []string{ResultSuccess, ResultExists, ResultFailure} {
		m.runs.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.runs, m.duration, m.records)
	}
	return m
}

func (m *Metrics) observe(r *Run) {
	m.runs.WithLabelValues(r.Result).Inc()
	m.duration.Observe(float64(r.EndTime-r.StartTime) / 1000)
	m.records.Add(float64(r.Records))
}
