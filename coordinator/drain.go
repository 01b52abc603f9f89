package coordinator

import (
	"time"

	"github.com/baton-dev/baton/protocol"
)

// drain tracks one SHUTTING_DOWN replica from "LBs told to stop routing to
// it" to "stopped on its agent".
type drain struct {
	epoch     uint64    // first published table epoch without the replica
	started   time.Time // when the leader first saw it shutting down
	ackedAt   time.Time // every live LB acknowledged epoch (or AckTimeout passed)
	idleAt    time.Time // no live LB has requests in flight to it (or DrainTimeout passed)
	removedAt time.Time // taken out of its agent's desired set
}

// drainPolicy is the part of the configuration drains use.
type drainPolicy struct {
	AckTimeout, DrainTimeout, DrainDelay time.Duration
}

// drainVerdict is what drainStep decided.
type drainVerdict struct {
	// Done: the replica may be stopped (taken out of its desired set).
	Done bool
	// WakeAt: when to look again, if not done.
	WakeAt time.Time
	// Warning, if set, says a bound was reached and the drain went on.
	Warning string
}

// drainStep advances one drain: every live LB must have acknowledged a
// table without the replica (bounded by AckTimeout), then no LB may have
// requests in flight to it (bounded by DrainTimeout), then DrainDelay
// passes. A new leader first hears from the LBs (they ack the tables it
// sends on taking over): until AckTimeout after leaderSince an empty or
// partial set of acks says nothing about what is in flight. It records
// progress in d and has no other effect.
func drainStep(d *drain, r *protocol.Replica, lbs []lbInfo, now, leaderSince time.Time, pol drainPolicy) drainVerdict {
	if d == nil {
		return drainVerdict{} // not yet out of a published table
	}
	if grace := leaderSince.Add(pol.AckTimeout); now.Before(grace) {
		return drainVerdict{WakeAt: grace}
	}
	var warning string
	if d.ackedAt.IsZero() {
		acked := true
		for _, lb := range lbs {
			if lb.epochs[r.Service] < d.epoch {
				acked = false
				break
			}
		}
		if !acked && now.Sub(d.started) <= pol.AckTimeout {
			return drainVerdict{WakeAt: d.started.Add(pol.AckTimeout)}
		}
		if !acked {
			warning = "drain: not every LB acknowledged the new table in time; going on"
		}
		d.ackedAt = now
	}
	if d.idleAt.IsZero() {
		var inFlight int64
		for _, lb := range lbs {
			inFlight += lb.draining[r.Endpoint]
		}
		if inFlight > 0 && now.Sub(d.ackedAt) <= pol.DrainTimeout {
			return drainVerdict{WakeAt: d.ackedAt.Add(pol.DrainTimeout), Warning: warning}
		}
		if inFlight > 0 {
			warning = "drain: requests still in flight after the drain timeout; stopping the replica"
		}
		d.idleAt = now
	}
	if ready := d.idleAt.Add(pol.DrainDelay); now.Before(ready) {
		return drainVerdict{WakeAt: ready, Warning: warning}
	}
	return drainVerdict{Done: true, Warning: warning}
}

// drained reports whether a shutting-down replica may be stopped now (see
// drainStep), recording when it was first taken out of its desired set.
func (c *controller) drained(r *protocol.Replica, lbs []lbInfo, now time.Time) bool {
	key := r.Key()
	d := c.drains[key]
	v := drainStep(d, r, lbs, now, c.leaderSince, drainPolicy{
		AckTimeout: c.cfg.AckTimeout, DrainTimeout: c.cfg.DrainTimeout, DrainDelay: c.cfg.DrainDelay})
	if v.Warning != "" {
		c.log.Warn(v.Warning, "replica", key, "drain_timeout", c.cfg.DrainTimeout.String())
	}
	if !v.WakeAt.IsZero() {
		c.wakeAt(v.WakeAt)
	}
	if v.Done && d.removedAt.IsZero() {
		d.removedAt = now
	}
	return v.Done
}
