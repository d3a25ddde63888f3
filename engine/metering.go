package engine

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	mm "github.com/aws/aws-sdk-go-v2/service/marketplacemetering"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/metership/metership/buffer"
	"github.com/metership/metership/conf"
	"github.com/metership/metership/metering"
	"github.com/metership/metership/pipeline"
)

// meterCounter is the meter as the pipeline's Counter: the meter's
// methods return its own types, the pipeline's interface returns its
// interfaces.
type meterCounter struct{ m *metering.Meter }

// BeginCount lets the pipeline count a segment during its encoding pass.
func (c meterCounter) BeginCount(seq uint64) pipeline.SegmentCount { return c.m.BeginCount(seq) }

// Sync makes the counts merged so far durable, before their segments'
// Acks.
func (c meterCounter) Sync() error { return c.m.Sync() }

// NewBatchCount lets ingesters count records as they parse them.
func (c meterCounter) NewBatchCount() pipeline.BatchCount { return c.m.NewBatchSums() }

// meterRuntime connects the metering ledger to the pipeline: the pipeline
// counts every sealed segment while it encodes it, and the meter reports
// hours as they close.
type meterRuntime struct {
	log   *zap.Logger
	meter *metering.Meter
	// shared is the replicas' protocol when metering.state_url is set.
	shared *sharedRuntime
	// cancel stops Run's loop; done is closed when it has returned.
	cancel context.CancelFunc
	done   chan struct{}
}

// newMeterRuntime opens the ledger on the buffer, which owns the agent id
// used in ClientTokens; the pipeline is built after it, counting into it.
func newMeterRuntime(cfg conf.Config, buf *buffer.Buffer, client *mm.Client, log *zap.Logger, reg prometheus.Registerer, catchUpSources int) (*meterRuntime, error) {
	m := &meterRuntime{log: log}
	var err error
	var sharedState metering.SharedState
	if cfg.Metering.StateURL != "" {
		if m.shared, err = newSharedRuntime(cfg, replicaID(buf.AgentID(), buf.InstanceID()), client, log, reg); err != nil {
			return nil, err
		}
		sharedState = m.shared.agent
	}
	m.meter, err = metering.New(cfg.Metering, metering.Options{
		Shared:     sharedState,
		Dir:        filepath.Join(cfg.Buffer.Dir, "metering"),
		InstanceID: buf.InstanceID(),
		Client:     client,
		Logger:     log.Named("metering"),
		Registerer: reg,
		Live:       buf.Live,
		Pending: func() (int64, bool) {
			return buf.PendingMinTime(m.meter.Counted)
		},
		CatchUpSources: catchUpSources,
	})
	if err != nil {
		m.shared.close()
		return nil, fmt.Errorf("metering: %w", err)
	}
	return m, nil
}

// start reports hours as they close, until stop, and runs the
// replicas' protocol (on ctx: it goes on until the engine stops).
func (m *meterRuntime) start(ctx context.Context, wg *sync.WaitGroup, settle bool) {
	mctx, cancel := context.WithCancel(ctx)
	m.cancel = cancel
	m.done = make(chan struct{})
	go func() {
		defer close(m.done)
		if err := m.meter.Run(mctx); err != nil && mctx.Err() == nil {
			m.log.Error("metering stopped", zap.Error(err))
		}
	}()
	m.shared.start(ctx, wg, settle)
}

// stop ends Run's loop and waits for it: its pass in progress gives up
// (its intents stay pending) as soon as its context is canceled.
func (m *meterRuntime) stop() {
	if m.cancel != nil {
		m.cancel()
		<-m.done
	}
}

// report is the last reporting pass of a Finish.
func (m *meterRuntime) report(ctx context.Context, final FinalReport) error {
	switch final {
	case FinalAll:
		return m.meter.ReportFinal(ctx)
	case FinalClosed:
		return m.meter.ReportClosed(ctx)
	}
	return m.meter.ReportOnStop(ctx)
}

func (m *meterRuntime) summary() []string {
	s := m.meter.Summary()
	lines := []string{
		fmt.Sprintf("metering hours reported: %d (conflicts %d, carried %d, pending %d, not subscribed %d)",
			s.HoursReported, s.Conflicts, s.Carried, s.Pending, s.NotSubscribed),
	}
	dims := make([]string, 0, len(s.Quantities))
	for d := range s.Quantities {
		dims = append(dims, d)
	}
	sort.Strings(dims)
	for _, d := range dims {
		lines = append(lines, fmt.Sprintf("metering quantity:  %s = %d", d, s.Quantities[d]))
	}
	lines = append(lines, m.shared.summary()...)
	if s.UnbilledRecords > 0 {
		var parts []string
		for _, d := range slices.Sorted(maps.Keys(s.Unbilled)) {
			parts = append(parts, d+" = "+metering.FormatQuantity(s.Unbilled[d]))
		}
		lines = append(lines, fmt.Sprintf("metering unbilled:  %d records older than metering.max_carry, recorded in the ledger, not billed (%s)",
			s.UnbilledRecords, strings.Join(parts, ", ")))
	}
	if s.RecordsUnmapped > 0 {
		lines = append(lines, fmt.Sprintf("metering unmapped:  %d records (meterApiName not in metering.dimensions)", s.RecordsUnmapped))
	}
	return lines
}
