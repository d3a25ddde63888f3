package engine

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"time"

	mm "github.com/aws/aws-sdk-go-v2/service/marketplacemetering"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/metership/metership/conf"
	"github.com/metership/metership/metering/shared"
	"github.com/metership/metership/ship"
)

// sharedRuntime runs the replicas' protocol (metering.state_url): the
// ledger hands closed hours to agent, which writes partials, claims and
// sends. All its methods accept a nil receiver (state_url unset).
type sharedRuntime struct {
	log   *zap.Logger
	store shared.Store
	agent *shared.Agent
}

// SharedS3Options are the S3 settings of the state store: the output's
// (endpoint, path style, region, credentials, role), as ship builds them.
func SharedS3Options(cfg conf.Config) ship.S3Options {
	o := cfg.Output
	return ship.S3Options{Region: o.Region, Endpoint: o.Endpoint, ForcePathStyle: o.ForcePathStyle, RoleARN: o.RoleARN, ExternalID: o.ExternalID}
}

// sharedConfig is the shared.Config of an agent with this config.
func sharedConfig(cfg conf.Config, store shared.Store, agentID string, client *mm.Client, log *zap.Logger, reg prometheus.Registerer) shared.Config {
	m := cfg.Metering
	return shared.Config{
		Store: store, Dir: filepath.Join(cfg.Buffer.Dir, "metering"), Agent: agentID, Product: m.ProductCode,
		AccountIDs: m.CustomerIDType == "aws_account_id", Allocate: len(m.AllocationTags) > 0,
		Window: m.Window.D(), Lateness: m.Lateness.D(), MergeGrace: m.MergeGrace.D(), DryRun: m.DryRun,
		Client: client, Logger: log.Named("metering-shared"), Registerer: reg,
	}
}

// replicaID names this replica in the shared state: the agent id, which
// people recognise (a pod name) but replicas may share, made unique by
// the start of the buffer's instance id. Both are kept in the buffer
// directory, so the id is stable across restarts (the journal refuses a
// changed one).
func replicaID(agentID, instanceID string) string {
	if agentID == instanceID {
		return agentID
	}
	return agentID + "." + instanceID[:min(8, len(instanceID))]
}

func newSharedRuntime(cfg conf.Config, agentID string, client *mm.Client, log *zap.Logger, reg prometheus.Registerer) (*sharedRuntime, error) {
	store, err := shared.Open(context.Background(), cfg.Metering.StateURL, SharedS3Options(cfg))
	if err != nil {
		return nil, fmt.Errorf("metering: %w", err)
	}
	agent, err := shared.New(sharedConfig(cfg, store, agentID, client, log, reg))
	if err != nil {
		_ = store.Close()
		return nil, fmt.Errorf("metering: %w", err)
	}
	return &sharedRuntime{log: log, store: store, agent: agent}, nil
}

// start runs the protocol; with settle (`ship`) the replica only
// announces itself until Finish, when all its input is counted: an hour
// it closed before reading its input would be declared early.
func (s *sharedRuntime) start(ctx context.Context, wg *sync.WaitGroup, settle bool) {
	if s == nil {
		return
	}
	if settle {
		wg.Go(func() { _ = s.agent.CatchUp(ctx) })
		return
	}
	wg.Go(func() { _ = s.agent.Run(ctx) })
}

// finish writes what the last reporting pass handed over; with settle it
// waits until this replica's closed hours are settled. Then, if nothing
// is left unwritten, the heartbeat says the replica stopped cleanly.
func (s *sharedRuntime) finish(ctx context.Context, settle bool) error {
	if s == nil {
		return nil
	}
	var err error
	if settle {
		err = s.agent.Wait(ctx, time.Second)
	} else {
		err = s.agent.Step(ctx)
	}
	if err != nil {
		return err
	}
	return s.agent.Stop(ctx)
}

// summary is the ship summary's lines for the shared protocol.
func (s *sharedRuntime) summary() []string {
	if s == nil {
		return nil
	}
	sum := s.agent.Summary()
	lines := []string{fmt.Sprintf("metering shared:   partials written %d (late, carried %d), hours claimed %d, records sent %d",
		sum.PartialsWritten, sum.PartialsLate, sum.HoursClaimed, sum.RecordsSent)}
	for _, d := range slices.Sorted(maps.Keys(sum.Quantities)) {
		lines = append(lines, fmt.Sprintf("metering sent:     %s = %d", d, sum.Quantities[d]))
	}
	return lines
}

func (s *sharedRuntime) close() {
	if s != nil {
		_ = s.store.Close()
	}
}
