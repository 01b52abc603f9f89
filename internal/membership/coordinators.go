package membership

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// NATSURLs returns the NATS client URLs of the alive coordinators that
// gossip one, sorted by coordinator id.
func (p *Pool) NATSURLs() []string {
	var urls []string
	for _, m := range p.Alive(RoleCoordinator) {
		if m.Meta.NATS != "" {
			urls = append(urls, m.Meta.NATS)
		}
	}
	return urls
}

// waitLogEvery is how often WaitForNATS says it is still waiting.
const waitLogEvery = 5 * time.Second

// WaitForNATS waits until the pool has joined and knows an alive
// coordinator with a NATS URL, and returns every such URL, comma-separated (as bus.Config.URL and
// nats.Connect take them), logging every few seconds while it waits. It
// returns ctx's error if ctx ends first.
func (p *Pool) WaitForNATS(ctx context.Context, log *slog.Logger) (string, error) {
	changes, cancel := p.Subscribe()
	defer cancel()
	start := time.Now()
	tick := time.NewTicker(waitLogEvery)
	defer tick.Stop()
	for {
		// Once joined: the join's state exchange brings every member at
		// once, and the whole list is wanted, not the first one heard of.
		if urls := p.NATSURLs(); len(urls) > 0 && p.Joined() {
			return strings.Join(urls, ","), nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-changes:
		case <-tick.C:
			log.Info("waiting for a coordinator over gossip", "join", strings.Join(p.cfg.Join, ","),
				"joined", p.Joined(), "members", p.NumMembers(), "waited", time.Since(start).Round(time.Second))
		}
	}
}

// Health is a line for a daemon's /healthz: how many members this node
// sees and how many coordinators are alive.
func (p *Pool) Health() string {
	members, coords := 0, 0
	for _, m := range p.Members() {
		if !m.alive() {
			continue
		}
		members++
		if m.Meta.Role == RoleCoordinator {
			coords++
		}
	}
	s := fmt.Sprintf("gossip: %d members, %d alive coordinators", members, coords)
	if !p.Joined() {
		s += " (not joined yet: retrying " + strings.Join(p.cfg.Join, ",") + ")"
	}
	return s
}
