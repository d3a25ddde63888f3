package pipeline

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the pipeline's Prometheus collectors (prefix metership_)
// that are updated as events happen. Totals the pipeline keeps anyway
// (Stats) are exported by reading them, not counted twice.
type Metrics struct {
	RecordsRejected *prometheus.CounterVec // by reason class
	BytesBuffered   prometheus.Counter
	BatchesFull     prometheus.Counter
	BackPressure    prometheus.Counter // seconds spent waiting for buffer space
	UploadsOK       prometheus.Counter
	UploadsFailed   prometheus.Counter
	UploadLatency   prometheus.Histogram
	// SegmentsDamaged counts sealed segments found damaged on disk while
	// shipping (Pipeline.salvage).
	SegmentsDamaged prometheus.Counter
	// KeyCollisions counts objects whose key held a different object
	// (Pipeline.noteCollision).
	KeyCollisions prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, p *Pipeline) *Metrics {
	m := &Metrics{
		RecordsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "metership_records_rejected_total", Help: "Input lines dead-lettered, by field at fault."}, []string{"field"}),
		BytesBuffered:   prometheus.NewCounter(prometheus.CounterOpts{Name: "metership_buffer_bytes_written_total", Help: "Bytes appended to the buffer."}),
		BatchesFull:     prometheus.NewCounter(prometheus.CounterOpts{Name: "metership_buffer_full_total", Help: "Appends refused because the buffer reached buffer.max_size."}),
		BackPressure:    prometheus.NewCounter(prometheus.CounterOpts{Name: "metership_backpressure_seconds_total", Help: "Time inputs spent paused waiting for buffer space."}),
		UploadsOK:       prometheus.NewCounter(prometheus.CounterOpts{Name: "metership_uploads_total", Help: "Objects uploaded (or found already uploaded)."}),
		UploadsFailed:   prometheus.NewCounter(prometheus.CounterOpts{Name: "metership_upload_failures_total", Help: "Failed upload attempts (retried)."}),
		SegmentsDamaged: prometheus.NewCounter(prometheus.CounterOpts{Name: "metership_buffer_segments_damaged_total", Help: "Sealed segments found damaged on disk while shipping: a copy is set aside as *.bad and the intact part shipped."}),
		KeyCollisions:   prometheus.NewCounter(prometheus.CounterOpts{Name: "metership_upload_key_collisions_total", Help: "Objects whose key already held a different object; each was written under a fresh key."}),
		UploadLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "metership_upload_duration_seconds",
			Help:    "Time to upload one object, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
	}
	if reg == nil {
		return m
	}
	total := func(name, help string, v func() int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v()) })
	}
	gauge := func(name, help string, v func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, v)
	}
	st := &p.stats
	reg.MustRegister(m.RecordsRejected, m.BytesBuffered, m.BatchesFull, m.BackPressure,
		m.UploadsOK, m.UploadsFailed, m.UploadLatency, m.SegmentsDamaged, m.KeyCollisions,
		total("metership_records_accepted_total", "Records made durable in the buffer.", st.RecordsAccepted.Load),
		total("metership_objects_written_total", "Record objects written to the output.", st.ObjectsWritten.Load),
		total("metership_object_bytes_total", "Encoded bytes written to the output.", st.ObjectBytes.Load),
		total("metership_records_shipped_total", "Records in objects written to the output.", st.RecordsShipped.Load),
		total("metership_dead_letters_shipped_total", "Dead letters written to the dead-letter destination.", st.DeadLetters.Load),
		total("metership_segments_shipped_total", "Buffer segments fully shipped and acknowledged.", st.SegmentsShipped.Load),
		gauge("metership_segments_pending", "Sealed segments not yet shipped.", func() float64 {
			return float64(p.buf.Stats().SegmentsSealed)
		}),
		gauge("metership_oldest_pending_seconds", "Age of the oldest sealed segment not yet shipped.", func() float64 {
			st := p.buf.Stats()
			if st.SegmentsSealed == 0 || st.OldestSealed.IsZero() {
				return 0
			}
			return p.now().Sub(st.OldestSealed).Seconds()
		}),
		gauge("metership_buffer_bytes", "Bytes of buffer segments on disk.", func() float64 {
			return float64(p.buf.Stats().BytesOnDisk)
		}),
		gauge("metership_buffer_max_bytes", "buffer.max_size: the bound on metership_buffer_bytes; inputs pause when it is reached.", func() float64 {
			return float64(p.cfg.Buffer.MaxSize)
		}),
		total("metership_buffer_disk_errors_total", "Buffer writes, seals and acks that failed with a disk error (a full disk, a failed fsync).", func() int64 {
			return int64(p.buf.Stats().DiskErrors)
		}),
		total("metership_buffer_recoveries_total", "In-place recoveries of the buffer after a failed fsync: the unsynced tail cut (never acknowledged), the durable part sealed.", func() int64 {
			return int64(p.buf.Stats().Recoveries)
		}),
		gauge("metership_buffer_failed", "1 once the buffer has failed after a disk error it could not recover from; the agent exits to be restarted.", func() float64 {
			if p.buf.Stats().Failed != nil {
				return 1
			}
			return 0
		}),
		gauge("metership_buffer_writes_failing", "1 while buffer writes fail with a disk error (cleared by the next one that succeeds).", func() float64 {
			if p.buf.Stats().DiskError != nil {
				return 1
			}
			return 0
		}),
	)
	return m
}
