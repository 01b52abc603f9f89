package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/baton-dev/baton/internal/membership"
	"github.com/baton-dev/baton/protocol"
)

// Bundles: a version's code, stored by every coordinator.
//
// An upload (PUT /v1/bundles/{digest}, bundles_api.go) is stored on the
// coordinator that receives it, hashed as it is written, then pushed to
// the other voters (PUT /v1/internal/bundles/{digest}); once a majority
// of the voters hold it, bundle_add is committed through Raft and the
// upload is acknowledged. So a committed bundle survives whatever loses
// the cluster less than its quorum, and a version may name it.
//
// Every coordinator then repairs (repair, below): it fetches each
// committed bundle it lacks from another coordinator, and removes the
// files of bundles that were deleted and of uploads never committed.
// The leader deletes bundles no version has named for
// Config.BundleGrace (reconcile_bundles.go). Agents fetch a bundle in
// chunks over NATS from any coordinator (bundles_nats.go).

// bundleService is a coordinator's part in storing bundles: its files,
// the transfers to and from other coordinators, the repair loop and the
// agents' chunk requests.
type bundleService struct {
	s     *Server
	log   *slog.Logger
	store *bundleStore
	// client carries bundles to and from other coordinators: as
	// Server.peers (mutual TLS as a coordinator), without its overall
	// timeout; each transfer has a deadline of its size (transferTimeout).
	client *http.Client
	// kick wakes the repair loop early (buffered 1).
	kick chan struct{}

	// pullSlots bounds concurrent pulls, chunkSlots concurrent chunk
	// reads, waiting the chunk requests waiting for a placement or a
	// pull.
	pullSlots  chan struct{}
	chunkSlots chan struct{}
	waiting    chan struct{}
	// bufs holds chunk buffers of protocol.MaxBundleChunk bytes.
	bufs sync.Pool

	// mu guards ctx, stopped and pulls. wg counts the work goBackground
	// started; stop waits for it.
	mu      sync.Mutex
	ctx     context.Context
	stopped bool
	pulls   map[string]*pullCall
	wg      sync.WaitGroup

	// known is the set of committed bundles the last repair pass saw: one
	// gone from the state since was deleted. Only the repair loop uses it.
	known map[string]bool
}

// pullCall is a pull in progress; every caller of ensure for the same
// bundle waits for the one pull.
type pullCall struct {
	done chan struct{}
	err  error // set before done is closed
}

const (
	// maxPulls is how many bundles a coordinator fetches at once.
	maxPulls = 2
	// maxChunkReads is how many chunk requests are read and answered at
	// once; more wait (NATS holds them).
	maxChunkReads = 8
	// maxChunkWaiting bounds the chunk requests waiting for a placement
	// or a pull; past it a request is refused as busy.
	maxChunkWaiting = 32
)

func newBundleService(s *Server) (*bundleService, error) {
	store, err := openBundleStore(filepath.Join(s.cfg.DataDir, "bundles"))
	if err != nil {
		return nil, fmt.Errorf("coordinator: bundles: %w", err)
	}
	client, _, err := newPeerClient(s.cfg)
	if err != nil {
		return nil, err
	}
	tr := client.Transport.(*http.Transport).Clone()
	// A push waits for the other's "100 Continue": one that holds the
	// bundle already answers without taking the bytes.
	tr.ExpectContinueTimeout = 5 * time.Second
	// The answer to a push comes once the other has synced the file.
	tr.ResponseHeaderTimeout = 2 * time.Minute
	tr.DisableCompression = true
	b := &bundleService{
		s:          s,
		log:        s.log.With("component", "bundles"),
		store:      store,
		client:     &http.Client{Transport: tr},
		kick:       make(chan struct{}, 1),
		pullSlots:  make(chan struct{}, maxPulls),
		chunkSlots: make(chan struct{}, maxChunkReads),
		waiting:    make(chan struct{}, maxChunkWaiting),
		pulls:      map[string]*pullCall{},
	}
	b.bufs.New = func() any {
		buf := make([]byte, protocol.MaxBundleChunk)
		return &buf
	}
	return b, nil
}

// transferTimeout bounds one transfer of size bytes between coordinators:
// a minute, plus a second per 4 MiB.
func transferTimeout(size int64) time.Duration {
	return time.Minute + time.Duration(size/(4<<20))*time.Second
}

// start lets work begin; background work stops with ctx. Server.Run
// calls it before it serves the API.
func (b *bundleService) start(ctx context.Context) {
	b.mu.Lock()
	b.ctx = ctx
	b.mu.Unlock()
}

// stop waits for the background work, once ctx has ended; no more
// starts.
func (b *bundleService) stop() {
	b.mu.Lock()
	b.stopped = true
	b.mu.Unlock()
	b.wg.Wait()
}

// goBackground runs fn in a goroutine that stop waits for, unless the
// service stopped (or never started): then it reports false.
func (b *bundleService) goBackground(fn func(ctx context.Context)) bool {
	b.mu.Lock()
	if b.stopped || b.ctx == nil {
		b.mu.Unlock()
		return false
	}
	ctx := b.ctx
	b.wg.Add(1)
	b.mu.Unlock()
	go func() {
		defer b.wg.Done()
		fn(ctx)
	}()
	return true
}

// errStopping means the coordinator is shutting down.
var errStopping = errors.New("the coordinator is shutting down")

// kickRepair makes the repair loop look soon (after a bundle is added or
// deleted).
func (b *bundleService) kickRepair() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// run answers agents' chunk requests and repairs this coordinator's
// bundles (at start, every BundleRepairInterval, and when kicked) until
// ctx ends.
func (b *bundleService) run(ctx context.Context) {
	sub, err := b.s.nc.QueueSubscribe(protocol.SubjectBundleGetAll, protocol.QueueCoordinators, b.onChunkRequest)
	if err != nil {
		b.log.Error("subscribe failed", "subject", protocol.SubjectBundleGetAll, "error", err)
	} else {
		defer func() { _ = sub.Unsubscribe() }()
	}
	ticker := time.NewTicker(b.s.cfg.BundleRepairInterval)
	defer ticker.Stop()
	// retry comes soon while the node replays its log: what it stores
	// cannot be judged against a state that is not caught up.
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		if !b.repair(ctx) {
			retry.Reset(200 * time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-b.kick:
		case <-retry.C:
		}
	}
}

// repair makes this coordinator's files match the committed bundles: it
// removes the files of deleted bundles and, after BundleGrace, of
// uploads never committed, then fetches the committed bundles it lacks.
// It reports false, doing nothing, while the FSM is still replaying the
// log the node started with.
func (b *bundleService) repair(ctx context.Context) bool {
	if ok, _, _ := b.s.raft.caughtUp(); !ok {
		return false
	}
	var want map[string]BundleRecord
	b.s.fsm.Read(func(st *State) { want = maps.Clone(st.Bundles) })
	stored, err := b.store.list()
	if err != nil {
		b.log.Warn("cannot list bundle files", "dir", b.store.dir, "error", err)
		return true
	}
	have := map[string]bool{}
	for _, f := range stored {
		if _, ok := want[f.digest]; ok {
			have[f.digest] = true
			continue
		}
		reason := ""
		switch {
		case b.known[f.digest]:
			reason = "deleted"
		case time.Since(f.modTime) > b.s.cfg.BundleGrace:
			reason = "never committed"
		default:
			continue // an upload on its way to being committed
		}
		if b.store.remove(f.digest) {
			b.log.Info("bundle file removed", "digest", f.digest, "bytes", f.size, "reason", reason)
		}
	}
	b.known = make(map[string]bool, len(want))
	for d := range want {
		b.known[d] = true
	}
	for _, d := range slices.Sorted(maps.Keys(want)) {
		if have[d] || b.store.pinned(d) {
			continue // held, or on its way here
		}
		if ctx.Err() != nil {
			return true
		}
		if err := b.ensure(ctx, d); err != nil && ctx.Err() == nil {
			if ok, held := b.s.badMessages.Allow("bundle-repair " + d); ok {
				b.log.Warn("bundle missing here and not fetched; retrying", "digest", d, "error", err, "failures_since_last_log", held)
			}
		}
	}
	b.recordStored()
	return true
}

// recordStored sets the stored-bundle gauges.
func (b *bundleService) recordStored() {
	stored, err := b.store.list()
	if err != nil {
		return
	}
	var total int64
	for _, f := range stored {
		total += f.size
	}
	b.s.metrics.bundlesStored.Set(float64(len(stored)))
	b.s.metrics.bundleBytes.Set(float64(total))
}

// ensure returns once this coordinator holds the committed bundle digest,
// fetching it from another coordinator if needed. Concurrent callers for
// one bundle share one fetch, which goes on if a caller gives up.
func (b *bundleService) ensure(ctx context.Context, digest string) error {
	if _, ok := b.store.stat(digest); ok {
		return nil
	}
	b.mu.Lock()
	c, ok := b.pulls[digest]
	if !ok {
		c = &pullCall{done: make(chan struct{})}
		b.pulls[digest] = c
	}
	b.mu.Unlock()
	if !ok {
		started := b.goBackground(func(ctx context.Context) {
			c.err = b.pull(ctx, digest)
			b.mu.Lock()
			delete(b.pulls, digest)
			b.mu.Unlock()
			close(c.done)
		})
		if !started {
			c.err = errStopping
			b.mu.Lock()
			delete(b.pulls, digest)
			b.mu.Unlock()
			close(c.done)
		}
	}
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pull fetches a committed bundle from the first other coordinator that
// sends it whole.
func (b *bundleService) pull(ctx context.Context, digest string) error {
	select {
	case b.pullSlots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-b.pullSlots }()
	if _, ok := b.store.stat(digest); ok {
		return nil
	}
	var rec BundleRecord
	var committed bool
	b.s.fsm.Read(func(st *State) { rec, committed = st.Bundles[digest] })
	if !committed {
		return fmt.Errorf("bundle %s is not committed", digest)
	}
	unpin := b.store.pin(digest)
	defer unpin()
	peers := b.s.otherCoordinators()
	if len(peers) == 0 {
		return errors.New("no other coordinator is known to fetch it from")
	}
	var problems []string
	for _, p := range peers {
		start := time.Now()
		err := b.pullFrom(ctx, p, digest, rec.Size)
		if err == nil {
			b.s.metrics.bundleTransfers.WithLabelValues("pull", "ok").Inc()
			b.log.Info("bundle fetched from another coordinator", "digest", digest, "bytes", rec.Size, "from", p.id, "took", time.Since(start).Round(time.Millisecond).String())
			return nil
		}
		b.s.metrics.bundleTransfers.WithLabelValues("pull", "error").Inc()
		problems = append(problems, p.id+": "+err.Error())
		if ctx.Err() != nil {
			break
		}
	}
	return fmt.Errorf("no coordinator sent it (%s)", strings.Join(problems, "; "))
}

func (b *bundleService) pullFrom(ctx context.Context, p peer, digest string, size int64) error {
	ctx, cancel := context.WithTimeout(ctx, transferTimeout(size))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.s.peerScheme+"://"+p.api+"/v1/internal/bundles/"+digest, nil)
	if err != nil {
		return err
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return peerError(resp)
	}
	_, err = b.store.write(digest, resp.Body, size)
	return err
}

// peer is another coordinator's id and API address.
type peer struct{ id, api string }

// otherCoordinators returns the coordinators gossip shows alive, but this
// one, in random order (so that the fetches of many nodes spread).
func (s *Server) otherCoordinators() []peer {
	if s.pool == nil {
		return nil
	}
	var out []peer
	for _, m := range s.pool.Alive(membership.RoleCoordinator) {
		if m.Meta.ID != s.cfg.NodeID && m.Meta.API != "" {
			out = append(out, peer{m.Meta.ID, m.Meta.API})
		}
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// peerError reads another coordinator's error answer.
func peerError(resp *http.Response) error {
	var e protocol.APIError
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(body, &e) == nil && e.Message != "" {
		return fmt.Errorf("%s: %s", resp.Status, e.Message)
	}
	return fmt.Errorf("%s", resp.Status)
}

// replication is how far an upload spread: the voters that hold it (this
// node first, when it votes), how many must, and why the others do not.
type replication struct {
	held     []string
	voters   int
	need     int
	problems []string
}

func (r replication) ok() bool { return r.voters > 0 && len(r.held) >= r.need }

// replicate pushes a bundle this node stored to every other voter, and
// returns once a majority of the voters (this node included) hold it, or
// every push has ended. Pushes still running then go on in the
// background: the bundle reaches every coordinator it can as soon as it
// can, and repair does the rest.
func (b *bundleService) replicate(digest string, size int64) replication {
	var rep replication
	f := b.s.raft.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		rep.problems = append(rep.problems, "raft configuration: "+err.Error())
		return rep
	}
	var others []string
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage != raft.Voter {
			continue
		}
		rep.voters++
		if string(srv.ID) == b.s.cfg.NodeID {
			rep.held = append(rep.held, b.s.cfg.NodeID)
		} else {
			others = append(others, string(srv.ID))
		}
	}
	rep.need = rep.voters/2 + 1
	type result struct {
		id  string
		err error
	}
	results := make(chan result, len(others))
	for _, id := range others {
		started := b.goBackground(func(ctx context.Context) {
			results <- result{id, b.push(ctx, id, digest, size)}
		})
		if !started {
			results <- result{id, errStopping}
		}
	}
	for range others {
		if len(rep.held) >= rep.need {
			break
		}
		r := <-results
		if r.err != nil {
			rep.problems = append(rep.problems, r.id+": "+r.err.Error())
			continue
		}
		rep.held = append(rep.held, r.id)
	}
	return rep
}

// push sends a stored bundle to the coordinator id.
func (b *bundleService) push(ctx context.Context, id, digest string, size int64) (err error) {
	defer func() {
		result := "ok"
		if err != nil {
			result = "error"
			b.log.Warn("bundle not pushed to a coordinator", "digest", digest, "to", id, "error", err)
		}
		b.s.metrics.bundleTransfers.WithLabelValues("push", result).Inc()
	}()
	api := b.s.memberAPI(id)
	if api == "" {
		return errors.New("its API address is not known (it is not in the gossip pool)")
	}
	f, fi, err := b.store.open(digest)
	if err != nil {
		return fmt.Errorf("open the local copy: %w", err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(ctx, transferTimeout(size))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, b.s.peerScheme+"://"+api+"/v1/internal/bundles/"+digest, f)
	if err != nil {
		return err
	}
	req.ContentLength = fi.Size()
	req.Header.Set("Expect", "100-continue")
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := b.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		return peerError(resp)
	}
	return nil
}

// memberAPI returns the API address gossip knows for coordinator id ("" if
// none).
func (s *Server) memberAPI(id string) string {
	if s.pool == nil {
		return ""
	}
	if m, ok := s.pool.Member(membership.RoleCoordinator, id); ok {
		return m.Meta.API
	}
	return ""
}

// bundleCommitRequest is what a coordinator that took an upload sends the
// leader to commit it (POST /v1/internal/bundles/{digest}/commit).
type bundleCommitRequest struct {
	Size int64 `json:"size"`
}

// commit commits bundle_add: here if this node leads, else through the
// leader's internal endpoint, retried (adding is idempotent) while no
// leader is known, for up to holdTimeout.
func (b *bundleService) commit(ctx context.Context, digest string, size int64) (BundleRecord, error) {
	deadline := time.Now().Add(b.s.holdTimeout())
	var lastErr error
	for {
		res, _, err := b.s.raftApply(CmdBundleAdd, BundleAddCmd{Digest: digest, Size: size, At: time.Now()})
		if err == nil {
			return res.(BundleRecord), nil
		}
		if !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrOutcomeUnknown) {
			return BundleRecord{}, err
		}
		lastErr = err
		if id, api := b.s.leaderAPI(); api != "" {
			rec, permanent, err := b.commitAt(ctx, api, digest, size)
			if err == nil {
				return rec, nil
			}
			lastErr = fmt.Errorf("leader %s: %w", id, err)
			if permanent {
				return BundleRecord{}, lastErr
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return BundleRecord{}, fmt.Errorf("%w: %v", ErrNotLeader, lastErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// commitAt asks the coordinator at api to commit bundle_add. permanent
// says a retry would get the same answer.
func (b *bundleService) commitAt(ctx context.Context, api, digest string, size int64) (rec BundleRecord, permanent bool, err error) {
	body, _ := json.Marshal(bundleCommitRequest{Size: size})
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.s.peerScheme+"://"+api+"/v1/internal/bundles/"+digest+"/commit", strings.NewReader(string(body)))
	if err != nil {
		return rec, true, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.s.peers.Do(req)
	if err != nil {
		return rec, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return rec, resp.StatusCode < 500, peerError(resp)
	}
	var info protocol.BundleInfo
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&info); err != nil {
		return rec, false, err
	}
	return BundleRecord{Size: info.Size, UploadedAt: info.UploadedAt}, false, nil
}
