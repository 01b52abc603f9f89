package fleetsim

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/protocol"
)

// LB is one sim LB node: it keeps the newest route table of each service,
// acknowledges the epochs it holds and syncs every SyncInterval. Nothing
// listens on the services' ports.
type LB struct {
	id   string
	nc   *nats.Conn
	sync time.Duration
	poke chan struct{}
	// resync asks for a sync after a reconnection.
	resync chan struct{}

	// mu guards tables and flips.
	mu     sync.Mutex
	tables map[string]protocol.RouteTable
	// flips records, per service and version v, when a table whose
	// ActiveVersions is exactly [v] first arrived.
	flips map[string]map[int]time.Time
}

func newLB(n int, sync time.Duration) *LB {
	return &LB{
		id:     fmt.Sprintf("sim-lb-%d", n),
		sync:   sync,
		poke:   make(chan struct{}, 1),
		resync: make(chan struct{}, 1),
		tables: map[string]protocol.RouteTable{},
		flips:  map[string]map[int]time.Time{},
	}
}

// ID is the LB's id (sim-lb-1 ...).
func (l *LB) ID() string { return l.id }

func (l *LB) connect(url string, reconnectWait time.Duration) error {
	nc, err := nats.Connect(url,
		nats.Name(l.id),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(-1),
		nats.NoCallbacksAfterClientClose(),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}),
		nats.ReconnectHandler(func(*nats.Conn) {
			select {
			case l.resync <- struct{}{}:
			default:
			}
		}),
	)
	if err != nil {
		return fmt.Errorf("%s: connect: %w", l.id, err)
	}
	l.nc = nc
	_, err = nc.Subscribe(protocol.SubjectRoutesAll, func(m *nats.Msg) {
		if m.Subject == protocol.SubjectRoutesSync {
			return // another LB's sync request
		}
		var t protocol.RouteTable
		if protocol.DecodeMessage(m.Data, protocol.MaxMessageBytes, &t) != nil || t.Validate() != nil {
			return
		}
		if l.applyTables(time.Now(), []protocol.RouteTable{t}) {
			l.wake()
		}
	})
	if err != nil {
		nc.Close()
		return fmt.Errorf("%s: subscribe: %w", l.id, err)
	}
	return nil
}

func (l *LB) wake() {
	select {
	case l.poke <- struct{}{}:
	default:
	}
}

// applyTables keeps each table newer than the one held; it reports
// whether any was.
func (l *LB) applyTables(now time.Time, ts []protocol.RouteTable) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	changed := false
	for _, t := range ts {
		if prev, ok := l.tables[t.Service]; ok && t.Epoch <= prev.Epoch {
			continue
		}
		l.tables[t.Service] = t
		changed = true
		if len(t.ActiveVersions) == 1 {
			v := t.ActiveVersions[0]
			m := l.flips[t.Service]
			if m == nil {
				m = map[int]time.Time{}
				l.flips[t.Service] = m
			}
			if _, ok := m[v]; !ok {
				m[v] = now
			}
		}
	}
	return changed
}

func (l *LB) ack() {
	l.mu.Lock()
	ack := protocol.LBAck{LBID: l.id, Epochs: make(map[string]uint64, len(l.tables))}
	for s, t := range l.tables {
		ack.Epochs[s] = t.Epoch
	}
	l.mu.Unlock()
	if body, err := json.Marshal(ack); err == nil {
		_ = l.nc.Publish(protocol.LBAckSubject(l.id), body)
	}
}

func (l *LB) syncOnce(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	msg, err := l.nc.RequestWithContext(rctx, protocol.SubjectRoutesSync, nil)
	if err != nil {
		return
	}
	var rs protocol.RouteSync
	if protocol.DecodeMessage(msg.Data, protocol.MaxMessageBytes, &rs) != nil {
		return
	}
	valid := rs.Tables[:0]
	for _, t := range rs.Tables {
		if t.Validate() == nil {
			valid = append(valid, t)
		}
	}
	l.applyTables(time.Now(), valid)
}

// run syncs at start, after each reconnection and every sync interval, and acknowledges after
// changes (debounced) and with every sync.
func (l *LB) run(ctx context.Context) {
	tick := time.NewTicker(l.sync)
	defer tick.Stop()
	l.syncOnce(ctx)
	l.ack()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			l.syncOnce(ctx)
			l.ack()
		case <-l.resync:
			l.syncOnce(ctx)
			l.ack()
		case <-l.poke:
			select {
			case <-ctx.Done():
				return
			case <-time.After(publishCoalesce):
			}
			select { // a wake during the debounce is covered by this ack
			case <-l.poke:
			default:
			}
			l.ack()
		}
	}
}

// Table returns the table held for service.
func (l *LB) Table(service string) (protocol.RouteTable, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.tables[service]
	return t, ok
}

// FlipTime returns when a table routing only to version v of service
// first arrived.
func (l *LB) FlipTime(service string, v int) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.flips[service][v]
	return t, ok
}

func (l *LB) close() {
	if l.nc != nil {
		l.nc.Close()
	}
}
