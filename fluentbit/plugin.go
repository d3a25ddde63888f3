package fluentbit

import (
	"errors"
	"os"
	"sync"

	"go.uber.org/zap"

	"github.com/metership/metership/conf"
	"github.com/metership/metership/engine"
)

// ErrUnknownInstance is returned for an instance id that Init did not
// return or that has exited: a Fluent Bit context the plugin never made.
var ErrUnknownInstance = errors.New("fluentbit: unknown plugin instance")

// Plugin is the registry of a loaded plugin's instances, one per
// `[OUTPUT] Name metership`. The c-shared adapter keeps one Plugin and
// stores an instance's id in the Fluent Bit context.
type Plugin struct {
	// log reports problems that belong to no instance; instances get it
	// too when it was given (nil: each builds its own from log_level).
	log     *zap.Logger
	instLog *zap.Logger
	mu      sync.Mutex // guards everything below
	nextID  uint64
	byID    map[uint64]*Instance
}

// NewPlugin returns an empty registry. log nil means each instance logs to
// stderr per its log_level and log_format.
func NewPlugin(log *zap.Logger) *Plugin {
	p := &Plugin{log: log, instLog: log, byID: map[uint64]*Instance{}}
	if p.log == nil {
		p.log = engine.NewLogger(conf.Log{Level: "info", Format: "json"}, os.Stderr).Named("metership")
	}
	return p
}

// Init starts an instance from its properties and returns its id (never
// 0). On error nothing was started and the problems were logged.
func (p *Plugin) Init(get func(name string) string) (uint64, error) {
	inst, err := NewInstance(get, p.instLog)
	if err != nil {
		return 0, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nextID++
	p.byID[p.nextID] = inst
	return p.nextID, nil
}

// Instance returns the instance with id, or ErrUnknownInstance.
func (p *Plugin) Instance(id uint64) (*Instance, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	inst, ok := p.byID[id]
	if !ok {
		return nil, ErrUnknownInstance
	}
	return inst, nil
}

// Flush flushes a chunk to instance id. A flush for an instance that has
// exited (Fluent Bit still flushing while it shuts down) is FLBRetry:
// Fluent Bit keeps the chunk, and with filesystem storage sends it to the
// next start. FLBError only for an id Init never returned.
func (p *Plugin) Flush(id uint64, data []byte, tag string) int {
	inst, err := p.Instance(id)
	if err != nil {
		if p.issued(id) {
			p.log.Warn("flush after the metership output exited; Fluent Bit keeps the chunk and retries it", zap.Uint64("instance", id), zap.String("tag", tag))
			return FLBRetry
		}
		p.log.Error("flush for an instance that does not exist; the chunk is dropped by Fluent Bit", zap.Uint64("instance", id), zap.String("tag", tag))
		return FLBError
	}
	return inst.Flush(data, tag)
}

// issued reports whether Init ever returned id.
func (p *Plugin) issued(id uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return id != 0 && id <= p.nextID
}

// FlushSole serves Fluent Bit's context-less FLBPluginFlush, which a
// Fluent Bit calls only when the plugin has no FLBPluginFlushCtx (a very
// old one: this plugin exports both). The call does not say which output
// the chunk is for. With exactly one instance (running or draining) it
// goes to that one. With none (every output has exited) or several (the
// chunk's output cannot be told) it is FLBRetry: Fluent Bit keeps the
// chunk rather than dropping it or sending it to the wrong destination.
func (p *Plugin) FlushSole(data []byte, tag string) int {
	p.mu.Lock()
	var inst *Instance
	n := len(p.byID)
	for _, i := range p.byID {
		inst = i
	}
	p.mu.Unlock()
	switch {
	case n == 0:
		p.log.Warn("context-less flush after every metership output exited; Fluent Bit keeps the chunk and retries it", zap.String("tag", tag))
		return FLBRetry
	case n > 1:
		p.log.Error("context-less flush with several metership outputs: the chunk's output cannot be told, Fluent Bit keeps it and retries it; use a Fluent Bit that calls FLBPluginFlushCtx, or one metership output",
			zap.Int("instances", n), zap.String("tag", tag))
		return FLBRetry
	}
	return inst.Flush(data, tag)
}

// Exit drains instance id (see Instance.Exit) and only then forgets it:
// flushes arriving meanwhile reach the instance, which answers FLBRetry
// once it is closed, and later ones are FLBRetry from Flush. FLBError for
// an unknown id.
func (p *Plugin) Exit(id uint64) int {
	inst, err := p.Instance(id)
	if err != nil {
		p.log.Error("exit for an instance that does not exist", zap.Uint64("instance", id))
		return FLBError
	}
	rc := inst.Exit()
	p.forget(inst)
	return rc
}

// forget removes inst from the registry.
func (p *Plugin) forget(inst *Instance) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, i := range p.byID {
		if i == inst {
			delete(p.byID, id)
		}
	}
}

// ExitAll drains every instance, concurrently, then forgets them, for
// Fluent Bit's context-less FLBPluginExit.
func (p *Plugin) ExitAll() int {
	p.mu.Lock()
	insts := make([]*Instance, 0, len(p.byID))
	for _, inst := range p.byID {
		insts = append(insts, inst)
	}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, inst := range insts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inst.Exit()
			p.forget(inst)
		}()
	}
	wg.Wait()
	return FLBOK
}

// Len is the number of running instances.
func (p *Plugin) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.byID)
}
