package metering

import (
	"maps"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the metership_metering_* series. Totals the Summary keeps
// anyway are exported by reading it, not counted twice.
type metrics struct {
	hoursPending     prometheus.Collector
	hoursReported    prometheus.Collector
	hoursCarried     *prometheus.CounterVec
	hoursConflicted  prometheus.Collector
	recordsCounted   prometheus.Collector
	recordsUnmapped  prometheus.Collector
	recordsRescanned prometheus.Collector
	recordsUnbilled  *prometheus.CounterVec
	usageUnbilled    *prometheus.CounterVec
	segmentsCounted  prometheus.Counter
	reportLatency    prometheus.Histogram
	lastSuccess      prometheus.Gauge
	notSubscribed    prometheus.Gauge
	deadLetters      prometheus.Counter
	reportErrors     *prometheus.CounterVec
	ledgerWriteFails prometheus.Counter
	oldestPending    prometheus.Collector
	window           prometheus.Collector
	quantities       prometheus.Collector
}

func newMetrics(reg prometheus.Registerer, mt *Meter) (*metrics, error) {
	const ns, sub = "metership", "metering"
	// sum reads one of the Meter's Summary totals.
	sum := func(f func(*Summary) int64) func() float64 {
		return func() float64 {
			mt.mu.Lock()
			defer mt.mu.Unlock()
			return float64(f(&mt.sum))
		}
	}
	m := &metrics{
		hoursPending: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "hours_pending",
			Help: "Hours (per dimension, and customer in batch mode) with usage not yet accepted by AWS Marketplace: open in the ledger or intended and unanswered."},
			sum(func(s *Summary) int64 { return int64(s.Pending) })),
		hoursReported: prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "hours_reported_total",
			Help: "Hourly usage records accepted by AWS Marketplace."}, sum(func(s *Summary) int64 { return int64(s.HoursReported) })),
		hoursCarried: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "hours_carried_total",
			Help: "Hours whose usage was added to another hour: reason=window (older than the API window), late (the hour was already reported), out_of_bounds (AWS refused the timestamp)."}, []string{"reason"}),
		hoursConflicted: prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "hours_conflicted_total",
			Help: "Hours AWS already held with a different quantity (DuplicateRequestException, IdempotencyConflictException, DuplicateRecord); never re-sent."},
			sum(func(s *Summary) int64 { return int64(s.Conflicts) })),
		recordsCounted: prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "records_counted_total",
			Help: "Meter records counted into the ledger."}, sum(func(s *Summary) int64 { return s.RecordsCounted })),
		recordsUnmapped: prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "records_unmapped_total",
			Help: "Meter records whose meterApiName has no metering.dimensions entry; shipped but not billed."}, sum(func(s *Summary) int64 { return s.RecordsUnmapped })),
		recordsRescanned: prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "records_rescanned_total",
			Help: "Meter records counted by parsing them again when their segment was counted, because their batch carried no aggregate of the current key shape (written with metering off, by a version before aggregates, or with other allocation_tags, license_arn or mode). Records counted as they were ingested are not included."},
			sum(func(s *Summary) int64 { return s.RecordsRescanned })),
		recordsUnbilled: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "records_unbillable_total",
			Help: "Meter records that cannot be billed: reason=value (meterValue not a non-negative number), customer (missing or invalid customer id in batch mode)."}, []string{"reason"}),
		usageUnbilled: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "usage_unbilled_total",
			Help: "Meter records counted but deliberately not billed, recorded as unbilled in the ledger: reason=max_carry (their hour was older than metering.max_carry when counted). Still shipped to S3."}, []string{"reason"}),
		segmentsCounted: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "segments_counted_total",
			Help: "Buffer segments counted into the ledger."}),
		reportLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "report_latency_seconds",
			Help: "Latency of MeterUsage and BatchMeterUsage calls, SDK retries included.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "last_success_timestamp_seconds",
			Help: "Unix time of the last call AWS Marketplace answered with success."}),
		notSubscribed: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "customers_not_subscribed",
			Help: "Customers BatchMeterUsage answered CustomerNotSubscribed for (their usage is dead-lettered)."}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "dead_letters_total",
			Help: "Usage records written to the metering dead-letter directory."}),
		reportErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "report_errors_total",
			Help: "Failed MeterUsage / BatchMeterUsage calls by error code."}, []string{"code"}),
		ledgerWriteFails: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "ledger_write_errors_total",
			Help: "Failed ledger writes (the change stays in memory and is written by the next attempt)."}),
		oldestPending: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "oldest_pending_hour_seconds",
			Help: "Age of the oldest hour with usage not yet accepted by AWS Marketplace, from the hour's start (the time sent to AWS, which refuses it once metering.window has passed); 0 when none."},
			func() float64 {
				mt.mu.Lock()
				h := mt.oldestPending
				mt.mu.Unlock()
				if h == 0 {
					return 0
				}
				return max(mt.now().Sub(hourTime(h)).Seconds(), 0)
			}),
		window: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "window_seconds",
			Help: "metering.window: how long after an hour's start AWS Marketplace still accepts its usage."},
			func() float64 { return mt.set.window.Seconds() }),
		quantities: &quantityCollector{mt: mt, desc: prometheus.NewDesc(ns+"_"+sub+"_quantity_reported_total",
			"Quantity accepted by AWS Marketplace, by Marketplace dimension (units of the dimension, after factors).", []string{"dimension"}, nil)},
	}
	// Known reasons start at 0, so the first occurrence is an increase
	// an alert sees, not a series appearing at 1.
	for _, r := range []string{"window", "late", "out_of_bounds"} {
		m.hoursCarried.WithLabelValues(r)
	}
	for _, r := range []string{"value", "customer"} {
		m.recordsUnbilled.WithLabelValues(r)
	}
	m.usageUnbilled.WithLabelValues(unbilledMaxCarry)
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.oldestPending, m.window, m.quantities, m.hoursPending, m.hoursReported, m.hoursCarried, m.hoursConflicted,
		m.recordsCounted, m.recordsUnmapped, m.recordsRescanned, m.recordsUnbilled, m.usageUnbilled, m.segmentsCounted, m.reportLatency, m.lastSuccess,
		m.notSubscribed, m.deadLetters, m.reportErrors, m.ledgerWriteFails} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// quantityCollector exports the Summary's accepted quantities per
// dimension at scrape time.
type quantityCollector struct {
	mt   *Meter
	desc *prometheus.Desc
}

func (c *quantityCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *quantityCollector) Collect(ch chan<- prometheus.Metric) {
	c.mt.mu.Lock()
	q := maps.Clone(c.mt.sum.Quantities)
	c.mt.mu.Unlock()
	for dim, n := range q {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(n), dim)
	}
}
