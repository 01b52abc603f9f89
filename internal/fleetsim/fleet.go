package fleetsim

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Fleet is N sim agents and K sim LBs connected to one NATS server.
type Fleet struct {
	cfg    AgentConfig
	Agents []*Agent
	LBs    []*LB
	Specs  *SpecCache

	Heartbeats     atomic.Int64 // AgentStatus messages published
	PublishErrors  atomic.Int64 // publishes that failed (disconnected)
	DesiredSets    atomic.Int64 // valid desired sets received
	InvalidDesired atomic.Int64 // desired sets dropped as invalid
	StaleDesired   atomic.Int64 // desired sets older than the applied one

	// readyMu guards ready.
	readyMu sync.Mutex
	// ready holds, per service and version, when each replica of it
	// became READY at its agent.
	ready map[svcVersion][]time.Time

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type svcVersion struct {
	service string
	version int
}

// StartFleet connects agents sim agents and lbs sim LBs (sync interval
// lbSync, default 5s) and starts them; Close stops them.
func StartFleet(ctx context.Context, cfg AgentConfig, agents, lbs int, lbSync time.Duration) (*Fleet, error) {
	cfg.defaults()
	if lbSync <= 0 {
		lbSync = 5 * time.Second
	}
	ctx, cancel := context.WithCancel(ctx)
	f := &Fleet{cfg: cfg, Specs: NewSpecCache(), ready: map[svcVersion][]time.Time{}, cancel: cancel}
	for i := 1; i <= agents; i++ {
		a := newAgent(f, i)
		if err := a.connect(ctx); err != nil {
			f.Close()
			return nil, err
		}
		f.Agents = append(f.Agents, a)
	}
	for i := 1; i <= lbs; i++ {
		l := newLB(i, lbSync)
		if err := l.connect(cfg.NATSURL, cfg.ReconnectWait); err != nil {
			f.Close()
			return nil, err
		}
		f.LBs = append(f.LBs, l)
	}
	for _, a := range f.Agents {
		f.wg.Go(func() { a.run(ctx) })
	}
	for _, l := range f.LBs {
		f.wg.Go(func() { l.run(ctx) })
	}
	return f, nil
}

// Close stops every agent and LB and closes their connections.
func (f *Fleet) Close() {
	f.cancel()
	f.wg.Wait()
	for _, a := range f.Agents {
		a.Kill()
	}
	for _, l := range f.LBs {
		l.close()
	}
}

func (f *Fleet) recordReady(service string, version int, at time.Time) {
	f.readyMu.Lock()
	k := svcVersion{service, version}
	f.ready[k] = append(f.ready[k], at)
	f.readyMu.Unlock()
}

// ReadyTimes returns, sorted, when each replica of version v of service
// became READY at its agent.
func (f *Fleet) ReadyTimes(service string, v int) []time.Time {
	f.readyMu.Lock()
	out := slices.Clone(f.ready[svcVersion{service, v}])
	f.readyMu.Unlock()
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

// Agent returns the agent with id, or nil.
func (f *Fleet) Agent(id string) *Agent {
	for _, a := range f.Agents {
		if a.id == id {
			return a
		}
	}
	return nil
}
