package shared

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// registerMetrics exports the agent's Summary and state as
// metership_metering_shared_* series (nothing when reg is nil).
func (a *Agent) registerMetrics(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	const ns, sub = "metership", "metering_shared"
	read := func(f func(*Agent) float64) func() float64 {
		return func() float64 {
			a.mu.Lock()
			defer a.mu.Unlock()
			return f(a)
		}
	}
	cs := []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "partials_written_total",
			Help: "Hourly partials this replica wrote to the shared state."}, read(func(a *Agent) float64 { return float64(a.sum.PartialsWritten) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "partials_late_total",
			Help: "Partials of this replica that their hour's claim did not merge; their usage was carried into its next hour."},
			read(func(a *Agent) float64 { return float64(a.sum.PartialsLate) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "hours_claimed_total",
			Help: "Hours this replica claimed (merged and fixed the records of)."}, read(func(a *Agent) float64 { return float64(a.sum.HoursClaimed) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "records_sent_total",
			Help: "Claimed usage records this replica sent and AWS accepted."}, read(func(a *Agent) float64 { return float64(a.sum.RecordsSent) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "records_conflicted_total",
			Help: "Claimed records this replica sent that AWS answered DuplicateRecord for: it holds another quantity for that customer, dimension and hour. Never re-sent."},
			read(func(a *Agent) float64 { return float64(a.conflicts) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "step_errors_total",
			Help: "Steps of the shared protocol that failed (S3 or AWS errors); retried every minute."}, read(func(a *Agent) float64 { return float64(a.stepErrors) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "hours_unsettled",
			Help: "Hours this replica closed whose partial is not yet written, or not yet merged by an answered claim or carried."},
			read(func(a *Agent) float64 { return float64(a.unsettledLocked()) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "replicas_live",
			Help: "Replicas with a heartbeat under 3 ticks old, this one included (as of this replica's last look, every 5 ticks)."},
			read(func(a *Agent) float64 { return float64(a.liveReplicas) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "replicas_stalled",
			Help: "Other replicas whose heartbeat stopped (older than 3 ticks, within the window plus a day) without a clean stop: usage they had not written waits in their buffer.dir."},
			read(func(a *Agent) float64 { return float64(a.stalledReplicas) })),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}
