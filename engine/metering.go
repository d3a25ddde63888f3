package engine

import (
	"context"
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/metership/metership/conf"
	"github.com/metership/metership/pipeline"
)

// meterRuntime connects the metering ledger to the pipeline.
type meterRuntime struct{}

func newMeterRuntime(ctx context.Context, cfg conf.Config, log *zap.Logger, reg prometheus.Registerer) (*meterRuntime, error) {
	if cfg.Metering.Mode == "off" {
		return nil, nil
	}
	return nil, errors.New("metering: not wired yet")
}

func (m *meterRuntime) counter() pipeline.Counter { return nil }
func (m *meterRuntime) start(ctx context.Context, p *pipeline.Pipeline, wg *sync.WaitGroup) error {
	return nil
}
func (m *meterRuntime) reportClosed(ctx context.Context) error { return nil }
func (m *meterRuntime) close()                                 {}
func (m *meterRuntime) summary() []string                      { return nil }
