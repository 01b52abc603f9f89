package membership

import (
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate gives memberlist this node's meta and carries leave intents
// (see leave.go). It sends no extra state.
type delegate Pool

var _ memberlist.Delegate = (*delegate)(nil)

func (d *delegate) NodeMeta(limit int) []byte {
	raw := (*Pool)(d).local.Load().raw
	if len(raw) > limit {
		// encodeMeta keeps it under MetaMaxSize; memberlist panics on
		// more, so never hand it that.
		return nil
	}
	return raw
}

func (d *delegate) NotifyMsg(buf []byte) {
	if len(buf) > 0 && buf[0] == msgLeaveIntent {
		(*Pool)(d).onIntent(buf[1:])
	}
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return (*Pool)(d).broadcasts.GetBroadcasts(overhead, limit)
}

func (d *delegate) LocalState(bool) []byte        { return nil }
func (d *delegate) MergeRemoteState([]byte, bool) {}

// events keeps Pool.members up to date. memberlist calls it with its node
// lock held: it takes only Pool.mu and never calls into memberlist.
type events Pool

var _ memberlist.EventDelegate = (*events)(nil)

func (e *events) NotifyJoin(n *memberlist.Node)   { (*Pool)(e).record(n, StatusAlive, true) }
func (e *events) NotifyUpdate(n *memberlist.Node) { (*Pool)(e).record(n, StatusAlive, false) }

// NotifyLeave: memberlist's Node.State is not set in events, so whether
// the member left or failed comes from its leave intent (leave.go).
func (e *events) NotifyLeave(n *memberlist.Node) { (*Pool)(e).record(n, StatusFailed, false) }

// record stores what memberlist says of node n, replacing any entry of
// the same name (a member that comes back replaces its old entry), and
// tells the subscribers. st is StatusAlive or StatusFailed; the latter
// becomes StatusLeft when the member announced its leave. joined is true
// for a join (a new member or one that came back).
func (p *Pool) record(n *memberlist.Node, st Status, joined bool) {
	meta, ok := decodeMeta(n.Meta)
	if ok && n.Name != string(meta.Role)+"/"+meta.ID {
		// A member named for one node claiming to be another: believe
		// neither (it could make a coordinator re-address a Raft voter).
		meta, ok = Meta{}, false
	}
	if !ok && n.Name != p.name {
		if allow, _ := p.badMeta.Allow(n.Name); allow {
			p.log.Warn("gossip member with unreadable meta; listing it without a role", "member", n.Name, "addr", n.Address(), "meta_bytes", len(n.Meta))
		}
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if joined {
		delete(p.intents, n.Name)
	}
	if st == StatusFailed && p.leftIntended(n.Name) {
		st = StatusLeft
	}
	m := p.members[n.Name]
	if m == nil {
		m = &Member{Name: n.Name, Since: now}
		p.members[n.Name] = m
	} else if m.Status != st {
		m.Since = now
	}
	prev := m.Status
	m.Addr = n.Address()
	m.Meta = meta
	m.Status = st
	p.numAlive.Store(int32(p.countAliveLocked()))
	if n.Name != p.name && prev != st {
		switch st {
		case StatusFailed:
			p.log.Info("gossip member failed", "member", n.Name, "addr", m.Addr)
		case StatusLeft:
			p.log.Info("gossip member left", "member", n.Name, "addr", m.Addr)
		case StatusAlive:
			p.log.Info("gossip member joined", "member", n.Name, "addr", m.Addr)
		}
	}
	p.notifyLocked()
}

// conflicts hears of another node using this node's name: this node was
// restarted at another address before the others declared the old one
// failed. The join loop then re-joins for a while, so that the others
// take the new address once they may (memberlist's dead-node reclaim
// time after the old one is declared failed).
type conflicts Pool

var _ memberlist.ConflictDelegate = (*conflicts)(nil)

func (c *conflicts) NotifyConflict(existing, other *memberlist.Node) {
	p := (*Pool)(c)
	if existing.Name != p.name {
		return
	}
	select {
	case p.rejoin <- struct{}{}:
	default:
	}
}

// countAliveLocked counts the alive members. Call with p.mu held.
func (p *Pool) countAliveLocked() int {
	n := 0
	for _, m := range p.members {
		if m.alive() {
			n++
		}
	}
	return n
}
