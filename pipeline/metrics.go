package pipeline

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the pipeline's Prometheus collectors (prefix metership_).
type Metrics struct {
	RecordsAccepted  prometheus.Counter
	RecordsRejected  *prometheus.CounterVec // by reason class
	BytesBuffered    prometheus.Counter
	BatchesFull      prometheus.Counter
	BackPressure     prometheus.Counter // seconds spent waiting for buffer space
	UploadsOK        prometheus.Counter
	UploadsFailed    prometheus.Counter
	UploadLatency    prometheus.Histogram
	ObjectsWritten   prometheus.Counter
	ObjectBytes      prometheus.Counter
	RecordsShipped   prometheus.Counter
	DeadLettersSent  prometheus.Counter
	SegmentsShipped  prometheus.Counter
	segmentsPending  prometheus.GaugeFunc
	oldestPendingAge prometheus.GaugeFunc
	bufferBytes      prometheus.GaugeFunc
}

func newMetrics(reg prometheus.Registerer, p *Pipeline) *Metrics {
	m := &Metrics{
		RecordsAccepted: prometheus.NewCounter(prometheus.CounterOpts{Name: "metership_records_accepted_total", Help: "Records made durable in the buffer."}),
		RecordsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "metership_records_rejected_total", Help: "Input lines dead-lettered, by field at fault."}, []string{"field"}),
		BytesBuffered:   prometheus.NewCounter(prometheus.CounterOpts{Name: "metership_buffer_bytes_written_total", Help: "Bytes appended to the buffer."}),
		BatchesFull:     prometheus.NewCounter(prometheus.CounterOpts{Name: "metership_buffer_full_total", Help: "Appends refused because the buffer reached buffer.max_size."}),
		BackPressure:    prometheus.NewCounter(prometheus.CounterOpts{Name: "metership_backpressure_seconds_total", Help: "Time inputs spent paused waiting for buffer space."}),
		UploadsOK:       prometheus.NewCounter(prometheus.CounterOpts{Name: "metership_uploads_total", Help: "Objects uploaded (or found already uploaded)."}),
		UploadsFailed:   prometheus.NewCounter(prometheus.CounterOpts{Name: "metership_upload_failures_total", Help: "Failed upload attempts (retried)."}),
		UploadLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "metership_upload_duration_seconds",
			Help:    "Time to upload one object, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		ObjectsWritten:  prometheus.NewCounter(prometheus.CounterOpts{Name: "metership_objects_written_total", Help: "Record objects written to the output."}),
		ObjectBytes:     prometheus.NewCounter(prometheus.CounterOpts{Name: "metership_object_bytes_total", Help: "Encoded bytes written to the output."}),
		RecordsShipped:  prometheus.NewCounter(prometheus.CounterOpts{Name: "metership_records_shipped_total", Help: "Records in objects written to the output."}),
		DeadLettersSent: prometheus.NewCounter(prometheus.CounterOpts{Name: "metership_dead_letters_shipped_total", Help: "Dead letters written to the dead-letter destination."}),
		SegmentsShipped: prometheus.NewCounter(prometheus.CounterOpts{Name: "metership_segments_shipped_total", Help: "Buffer segments fully shipped and acknowledged."}),
	}
	m.segmentsPending = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "metership_segments_pending", Help: "Sealed segments not yet shipped."}, func() float64 {
		return float64(p.buf.Stats().SegmentsSealed)
	})
	m.oldestPendingAge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "metership_oldest_pending_seconds", Help: "Age of the oldest sealed segment not yet shipped."}, func() float64 {
		st := p.buf.Stats()
		if st.SegmentsSealed == 0 || st.OldestSealed.IsZero() {
			return 0
		}
		return p.now().Sub(st.OldestSealed).Seconds()
	})
	m.bufferBytes = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "metership_buffer_bytes", Help: "Bytes of buffer segments on disk."}, func() float64 {
		return float64(p.buf.Stats().BytesOnDisk)
	})
	if reg != nil {
		reg.MustRegister(m.RecordsAccepted, m.RecordsRejected, m.BytesBuffered, m.BatchesFull, m.BackPressure,
			m.UploadsOK, m.UploadsFailed, m.UploadLatency, m.ObjectsWritten, m.ObjectBytes, m.RecordsShipped,
			m.DeadLettersSent, m.SegmentsShipped, m.segmentsPending, m.oldestPendingAge, m.bufferBytes)
	}
	return m
}
