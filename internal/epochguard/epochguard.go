// Package epochguard tells an epoch that jumps implausibly far ahead of
// the cluster's Raft index, so that an LB or agent rejects a route table
// or desired set that would otherwise shadow every real one (each ignores
// messages older than the newest it applied).
//
// A Guard accepts an epoch within Max of the highest index the cluster
// confirmed; beyond that it asks the cluster (the leader answers
// protocol.SubjectClusterIndex) and accepts the epoch only if it is within
// Max of the answer. The confirmed index rises only from answers, never
// from accepted epochs, so forged epochs cannot ratchet it up.
package epochguard

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Guard checks epochs. Its methods are safe for concurrent use.
type Guard struct {
	// Max is how far ahead of the confirmed index an epoch may be.
	Max uint64
	// Ask returns the cluster's current index.
	Ask func(ctx context.Context) (uint64, error)
	// Timeout bounds one question. Default 2s.
	Timeout time.Duration
	// MinInterval is the least time between two questions: a flood of
	// far-ahead messages costs the cluster one question per interval.
	// Default 1s.
	MinInterval time.Duration

	mu        sync.Mutex // guards confirmed
	confirmed uint64
	// askMu serialises questions and guards lastAsk.
	askMu   sync.Mutex
	lastAsk time.Time
}

// Confirmed is the highest index the cluster confirmed (0 before any
// answer).
func (g *Guard) Confirmed() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.confirmed
}

func (g *Guard) within(epoch uint64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return epoch <= g.confirmed+g.Max
}

// Check returns nil when epoch may be applied, else an error saying how
// far ahead of the cluster it is. It may block for one question.
func (g *Guard) Check(ctx context.Context, epoch uint64) error {
	if g.within(epoch) {
		return nil
	}
	g.askMu.Lock()
	defer g.askMu.Unlock()
	// A question answered while this one waited may settle it.
	if g.within(epoch) {
		return nil
	}
	minInterval := g.MinInterval
	if minInterval <= 0 {
		minInterval = time.Second
	}
	if !g.lastAsk.IsZero() && time.Since(g.lastAsk) < minInterval {
		return fmt.Errorf("epoch %d is more than %d ahead of the cluster's index %d (asked %s ago)", epoch, g.Max, g.Confirmed(), time.Since(g.lastAsk).Round(time.Millisecond))
	}
	g.lastAsk = time.Now()
	timeout := g.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	index, err := g.Ask(actx)
	if err != nil {
		return fmt.Errorf("epoch %d is more than %d ahead of the last index the cluster confirmed (%d), and asking the cluster failed: %w", epoch, g.Max, g.Confirmed(), err)
	}
	g.mu.Lock()
	if index > g.confirmed {
		g.confirmed = index
	}
	confirmed := g.confirmed
	g.mu.Unlock()
	if epoch > confirmed+g.Max {
		return fmt.Errorf("epoch %d is %d ahead of the cluster's index %d (at most %d is plausible)", epoch, epoch-confirmed, confirmed, g.Max)
	}
	return nil
}
