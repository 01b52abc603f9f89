package coordinator

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// raftNode bundles the Raft instance with the stores it must close.
type raftNode struct {
	raft      *raft.Raft
	wal       *raftwal.WAL
	meta      *metadb.BoltMetaDB
	transport *raft.NetworkTransport
	// startIndex is the last log index on disk when the node started: until
	// the FSM has applied it, the state is older than what was committed.
	startIndex uint64
	// startCommand is the index of the last command among those entries
	// (0 if none): Raft counts an entry applied once it has handed it to
	// the FSM, so the FSM's own index must reach this one too.
	startCommand uint64
	// existing says the node started with Raft state on disk.
	existing bool
	fsm      *FSM
	// id is this node's server id; normal its configured timeouts, and
	// short whether it still runs with a sole voter's (only the server's
	// leadership monitor touches them after openRaft).
	id     raft.ServerID
	normal raft.ReloadableConfig
	short  bool
}

// openRaft starts Raft with a raft-wal log and stable store and file
// snapshots in dataDir. A node with no existing state bootstraps a
// single-server cluster when cfg.Bootstrap is set.
func openRaft(cfg Config, fsm *FSM, notify chan bool) (*raftNode, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("coordinator: data dir is required (--data-dir)")
	}
	walDir := filepath.Join(cfg.DataDir, "raft", "wal")
	if err := os.MkdirAll(walDir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", walDir, err)
	}
	hlog := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: os.Stderr})
	// The WAL's metadata store is ours to close: raft-wal's Close leaves it
	// open (and locked), so a coordinator restarted in the same process
	// would wait for that lock forever.
	meta := &metadb.BoltMetaDB{}
	wal, err := raftwal.Open(walDir, raftwal.WithLogger(hlog), raftwal.WithMetaStore(meta))
	if err != nil {
		meta.Close()
		return nil, fmt.Errorf("open raft log in %s: %w", walDir, err)
	}
	// closeStores closes the log and its metadata after a failed start.
	closeStores := func(err error) (*raftNode, error) {
		wal.Close()
		meta.Close()
		return nil, err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.DataDir, "raft"), 3, hlog)
	if err != nil {
		return closeStores(fmt.Errorf("open snapshot store: %w", err))
	}
	addr, err := net.ResolveTCPAddr("tcp", cfg.RaftAddr)
	if err != nil {
		return closeStores(fmt.Errorf("raft address %q: %w", cfg.RaftAddr, err))
	}
	transport, err := newRaftTransport(cfg, addr, hlog)
	if err != nil {
		return closeStores(fmt.Errorf("raft transport on %s: %w", cfg.RaftAddr, err))
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hlog
	if cfg.RaftTimeout != time.Second {
		scale := func(d time.Duration) time.Duration {
			return time.Duration(float64(d) * float64(cfg.RaftTimeout) / float64(time.Second))
		}
		rc.HeartbeatTimeout = scale(rc.HeartbeatTimeout)
		rc.ElectionTimeout = scale(rc.ElectionTimeout)
		rc.LeaderLeaseTimeout = scale(rc.LeaderLeaseTimeout)
		rc.CommitTimeout = scale(rc.CommitTimeout)
	}
	rc.NotifyCh = notify
	rc.SnapshotThreshold = 2048
	rc.SnapshotInterval = 30 * time.Second
	// A cluster of one voter has nobody to hear from: it starts with short
	// election timeouts, so a restarted coordinator leads (and serves) in
	// about 100 ms instead of 1-2 s, and takes the normal ones as soon as
	// its configuration turns out to have other voters.
	normal := raft.ReloadableConfig{TrailingLogs: rc.TrailingLogs, SnapshotInterval: rc.SnapshotInterval,
		SnapshotThreshold: rc.SnapshotThreshold, HeartbeatTimeout: rc.HeartbeatTimeout, ElectionTimeout: rc.ElectionTimeout}
	// The lease cannot be reloaded: a node that is (to be) one of several
	// starts with the normal timeouts.
	short := !cfg.Clustered()
	if short {
		rc.HeartbeatTimeout = min(rc.HeartbeatTimeout, singleVoterTimeout)
		rc.ElectionTimeout = min(rc.ElectionTimeout, singleVoterTimeout)
		rc.LeaderLeaseTimeout = min(rc.LeaderLeaseTimeout, rc.HeartbeatTimeout)
	}

	existing, err := raft.HasExistingState(wal, wal, snaps)
	if err != nil {
		transport.Close()
		return closeStores(fmt.Errorf("read raft state: %w", err))
	}
	startIndex, err := wal.LastIndex()
	if err != nil {
		transport.Close()
		return closeStores(fmt.Errorf("read raft log: %w", err))
	}
	r, err := raft.NewRaft(rc, fsm, wal, wal, snaps, transport)
	if err != nil {
		transport.Close()
		return closeStores(fmt.Errorf("start raft: %w", err))
	}
	// A node that joins others never bootstraps alone: that would make a
	// second cluster of one.
	if !existing && cfg.Bootstrap && !cfg.Clustered() {
		f := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
			ID: rc.LocalID, Address: transport.LocalAddr(),
		}}})
		if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			r.Shutdown()
			transport.Close()
			return closeStores(fmt.Errorf("bootstrap raft: %w", err))
		}
	}
	n := &raftNode{raft: r, wal: wal, meta: meta, transport: transport, startIndex: startIndex,
		startCommand: lastCommandIndex(wal, startIndex), existing: existing, fsm: fsm, id: rc.LocalID, normal: normal, short: short}
	if err := n.adjustTimeouts(); err != nil {
		r.Shutdown()
		transport.Close()
		return closeStores(fmt.Errorf("raft timeouts: %w", err))
	}
	return n, nil
}

// raftTransportTimeout bounds a Raft RPC's I/O (and, with TLS, a
// handshake).
const raftTransportTimeout = 5 * time.Second

// newRaftTransport listens for Raft on cfg.RaftAddr, advertised as addr:
// plain TCP, or mutual TLS between coordinators when cfg.TLS is set (see
// tlsStreamLayer).
func newRaftTransport(cfg Config, addr *net.TCPAddr, hlog hclog.Logger) (*raft.NetworkTransport, error) {
	if !cfg.TLS.Enabled() {
		return raft.NewTCPTransportWithLogger(cfg.RaftAddr, addr, 4, raftTransportTimeout, hlog)
	}
	stream, err := newTLSStreamLayer(cfg.RaftAddr, addr, cfg.TLS, raftTransportTimeout, hlog)
	if err != nil {
		return nil, err
	}
	return raft.NewNetworkTransportWithLogger(stream, 4, raftTransportTimeout, hlog), nil
}

// adjustTimeouts gives Raft its normal timeouts once the configuration
// has a voter other than this node (see singleVoterTimeout). The server
// calls it every second.
func (n *raftNode) adjustTimeouts() error {
	if !n.short || soleVoter(n.raft, n.id) {
		return nil
	}
	if err := n.raft.ReloadConfig(n.normal); err != nil {
		return err
	}
	n.short = false
	return nil
}

// singleVoterTimeout is the heartbeat and election timeout of a cluster
// whose only voter is this node.
const singleVoterTimeout = 100 * time.Millisecond

// soleVoter reports whether the latest configuration's only voter is id.
func soleVoter(r *raft.Raft, id raft.ServerID) bool {
	f := r.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	voters := 0
	self := false
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage == raft.Voter {
			voters++
			self = self || srv.ID == id
		}
	}
	return voters == 1 && self
}

// lastCommandIndex finds the last command entry at or before last,
// looking back over at most a few thousand entries (the tail of a log is
// commands with a few no-op and configuration entries between them).
func lastCommandIndex(store raft.LogStore, last uint64) uint64 {
	first, err := store.FirstIndex()
	if err != nil {
		return 0
	}
	for i := last; i >= first && i > 0 && last-i < 4096; i-- {
		var l raft.Log
		if store.GetLog(i, &l) != nil {
			return 0
		}
		if l.Type == raft.LogCommand {
			return i
		}
	}
	return 0
}

// caughtUp reports whether the FSM has applied every entry that was in the
// log when the node started, with the applied and wanted indexes.
func (n *raftNode) caughtUp() (bool, uint64, uint64) {
	applied := n.raft.AppliedIndex()
	ok := applied >= n.startIndex && n.fsm.Index() >= n.startCommand
	if !ok {
		applied = min(applied, n.fsm.Index())
	}
	return ok, applied, n.startIndex
}

// Close shuts Raft down and closes its stores.
func (n *raftNode) Close() error {
	err := n.raft.Shutdown().Error()
	n.transport.Close()
	if cerr := n.wal.Close(); err == nil {
		err = cerr
	}
	if cerr := n.meta.Close(); err == nil {
		err = cerr
	}
	return err
}

// raftApply is the only write path. It encodes the command, applies it and
// unwraps both Raft's error and the FSM's.
func (s *Server) raftApply(t CommandType, cmd any) (any, uint64, error) {
	buf, err := encodeCommand(t, cmd)
	if err != nil {
		return nil, 0, err
	}
	start := time.Now()
	f := s.raft.raft.Apply(buf, 10*time.Second)
	err = f.Error()
	s.metrics.applySeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader):
			return nil, 0, fmt.Errorf("%w: %v", ErrNotLeader, err)
		case errors.Is(err, raft.ErrLeadershipLost):
			return nil, 0, ErrOutcomeUnknown
		}
		return nil, 0, fmt.Errorf("raft apply %s: %w", t, err)
	}
	resp := f.Response()
	if err, ok := resp.(error); ok {
		return nil, f.Index(), err
	}
	s.metrics.commands.WithLabelValues(t.String()).Inc()
	return resp, f.Index(), nil
}

var _ io.Closer = (*raftNode)(nil)
