package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/baton-dev/baton/internal/localcluster"
)

// writeResult is one API write figure: sequential latency and the
// throughput of concurrent clients.
type writeResult struct {
	// Cluster says which coordinators and where the writes went.
	Cluster string `json:"cluster"`
	// Latency is of sequential writes (one at a time).
	Latency   stats `json:"latency"`
	SeqErrors int   `json:"sequential_errors"`
	// Throughput is accepted writes per second with Clients concurrent
	// clients, Writes of them in Elapsed (Errors not counted).
	Clients    int      `json:"clients"`
	Writes     int      `json:"writes"`
	Errors     int      `json:"errors"`
	Elapsed    Duration `json:"elapsed"`
	Throughput float64  `json:"writes_per_second"`
	FirstError string   `json:"first_error,omitempty"`
	// RaftTimeout is the coordinators' --raft-timeout ("default": 1s);
	// Elections counts the elections their logs show after the cluster
	// formed (a leader that stalls under load loses its lease).
	RaftTimeout string `json:"raft_timeout"`
	Elections   int    `json:"elections"`
}

// writes measures the API's writes on one coordinator, then on three
// (round-robin to all, so 2/3 are forwarded, and to the leader only).
func (b *bench) writes(res *results) (err error) {
	one, err := b.startCluster("writes-1", singleHost)
	if err != nil {
		finish(procsOf(one), &err)
		return err
	}
	r, err := b.writeFigures("1 node", []string{one.Coords[0].API})
	r.RaftTimeout = "default"
	res.Writes = append(res.Writes, r)
	finish(procsOf(one), &err)
	if err != nil {
		return err
	}

	// A fresh cluster for each figure: each starts with no services.
	for i, leaderOnly := range []bool{false, true} {
		if err := b.writesOn3(res, fmt.Sprintf("writes-3-%d", i+1), writesHosts[i], leaderOnly); err != nil {
			return err
		}
	}
	return nil
}

// writesOn3 measures writes on 3 coordinators: round-robin to all three,
// or to the leader only.
func (b *bench) writesOn3(res *results, name string, hosts []string, leaderOnly bool) (err error) {
	var extra []string
	if t := b.o.writesRaftTimeout; t != "default" {
		extra = []string{"--raft-timeout", t}
	}
	cl, err := b.startCluster(name, hosts, extra...)
	defer finish(procsOf(cl), &err)
	if err != nil {
		return err
	}
	formed := elections(cl.Procs)
	var apis []string
	for _, c := range cl.Coords {
		apis = append(apis, c.API)
	}
	what := "3 nodes, round-robin (2/3 forwarded)"
	if leaderOnly {
		lc, ok := cl.Coord(cl.LeaderID())
		if !ok {
			return fmt.Errorf("no leader among %d coordinators", len(cl.Coords))
		}
		apis, what = []string{lc.API}, "3 nodes, leader only"
	}
	r, err := b.writeFigures(what, apis)
	r.RaftTimeout, r.Elections = b.o.writesRaftTimeout, elections(cl.Procs)-formed
	res.Writes = append(res.Writes, r)
	return err
}

// elections counts the elections in the logs of a cluster's processes:
// hashicorp/raft's warnings of a follower that starts one and of a
// candidate that starts another.
func elections(ps *localcluster.Procs) int {
	n := 0
	for _, p := range ps.All() {
		buf, err := os.ReadFile(p.LogPath)
		if err == nil {
			n += bytes.Count(buf, []byte("heartbeat timeout reached, starting election")) +
				bytes.Count(buf, []byte("Election timeout reached, restarting election"))
		}
	}
	return n
}

// writeFigures sends o.seqWrites sequential writes (at most 30 s) and
// then runs o.clients concurrent clients for o.throughput (at most
// o.maxWrites writes), round-robin over apis.
func (b *bench) writeFigures(name string, apis []string) (writeResult, error) {
	r := writeResult{Cluster: name, Clients: b.o.clients}
	// Sequential.
	var lat []time.Duration
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; i < b.o.seqWrites && time.Now().Before(deadline); i++ {
		if err := b.outOfTime(); err != nil {
			return r, err
		}
		start := time.Now()
		if err := up(b.ctx, apis[i%len(apis)]); err != nil {
			r.SeqErrors++
			if r.FirstError == "" {
				r.FirstError = err.Error()
			}
			continue
		}
		lat = append(lat, time.Since(start))
	}
	r.Latency = summarize(lat, false)
	if len(lat) < b.o.seqWrites/2 {
		return r, fmt.Errorf("%s: only %d of %d sequential writes accepted (%s)", name, len(lat), b.o.seqWrites, r.FirstError)
	}

	// Concurrent.
	ctx, cancel := context.WithTimeout(b.ctx, b.o.throughput)
	defer cancel()
	var (
		next, ok, failed atomic.Int64
		wg               sync.WaitGroup
		errOnce          sync.Once
	)
	start := time.Now()
	for range b.o.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				n := next.Add(1)
				if n > int64(b.o.maxWrites) {
					cancel()
					return
				}
				err := up(ctx, apis[int(n)%len(apis)])
				switch {
				case err == nil:
					ok.Add(1)
				case ctx.Err() != nil:
					// cut off by the end of the run: not counted
				default:
					failed.Add(1)
					errOnce.Do(func() {
						if r.FirstError == "" {
							r.FirstError = err.Error()
						}
					})
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	r.Writes, r.Errors, r.Elapsed = int(ok.Load()), int(failed.Load()), Duration(elapsed)
	r.Throughput = float64(r.Writes) / elapsed.Seconds()
	progress("writes, %s: p50 %s, p99 %s over %d sequential writes; %.0f writes/s with %d clients (%d in %s, %d errors)",
		name, r.Latency.Median, r.Latency.P99, r.Latency.N, r.Throughput, r.Clients, r.Writes, r.Elapsed, r.Errors)
	if err := b.outOfTime(); err != nil {
		return r, err
	}
	if r.Errors > r.Writes/100 {
		return r, fmt.Errorf("%s: %d of %d concurrent writes failed (%s)", name, r.Errors, r.Errors+r.Writes, r.FirstError)
	}
	return r, nil
}
