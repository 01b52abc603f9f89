package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/baton-dev/baton/internal/localcluster"
	"github.com/baton-dev/baton/protocol"
)

// failoverResult is the failover figures of one Raft timeout setting.
type failoverResult struct {
	// RaftTimeout is the --raft-timeout given, or "default" (none: 1s).
	RaftTimeout string `json:"raft_timeout"`
	Kills       int    `json:"kills"`
	// Elected is kill -9 of the leader -> a survivor names another
	// leader (GET /v1/operator/raft/peers); Accepted is kill -9 -> a
	// write accepted (201) by one of the survivors.
	Elected  stats `json:"elected"`
	Accepted stats `json:"write_accepted"`
	// Attempts is how many writes were sent (all survivors together)
	// until one was accepted, summed over the kills; Refused how many of
	// them were refused or failed.
	Attempts int `json:"write_attempts"`
	Refused  int `json:"writes_refused"`
	// Refusals counts the refused writes by answer (status and error
	// code, or the client's error).
	Refusals map[string]int `json:"refusals,omitempty"`
	// RefusalSamples holds the first answer of each kind of refusal.
	RefusalSamples map[string]string `json:"refusal_samples,omitempty"`
}

// failoverBudget bounds one setting's kills, restarts included.
const failoverBudget = 100 * time.Second

// failover kills the leader of a 3-coordinator cluster on hosts o.kills
// times (restarting it, with its data dir, until all 3 are healthy before
// the next kill) and measures how long until another leads and until a
// write is accepted.
func (b *bench) failover(hosts []string, raftTimeout string) (res *failoverResult, err error) {
	var extra []string
	if raftTimeout != "default" {
		extra = []string{"--raft-timeout", raftTimeout}
	}
	cl, err := b.startCluster("failover-"+raftTimeout, hosts, extra...)
	defer finish(procsOf(cl), &err)
	if err != nil {
		return nil, err
	}
	res = &failoverResult{RaftTimeout: raftTimeout}
	var elected, accepted []time.Duration
	defer func() {
		res.Kills = len(accepted)
		res.Elected, res.Accepted = summarize(elected, true), summarize(accepted, true)
	}()
	stop := time.Now().Add(failoverBudget)
	for k := range b.o.kills {
		if err := b.outOfTime(); err != nil {
			return res, err
		}
		if time.Now().After(stop) {
			progress("failover %s: stopping after %d kills (the setting's %s are spent)", raftTimeout, k, failoverBudget)
			break
		}
		leader := cl.LeaderID()
		if leader == "" {
			return res, errors.New("no leader before the kill")
		}
		lc, _ := cl.Coord(leader)
		// The leader has committed in its term: the cluster is in use.
		if err := up(b.ctx, lc.API); err != nil {
			return res, fmt.Errorf("write before the kill: %w", err)
		}
		e, a, attempts, refusals, err := b.killLeader(cl, leader)
		res.Attempts += attempts
		for why, r := range refusals {
			if res.Refusals == nil {
				res.Refusals, res.RefusalSamples = map[string]int{}, map[string]string{}
			}
			if res.Refusals[why] == 0 {
				res.RefusalSamples[why] = r.sample
			}
			res.Refusals[why] += r.n
			res.Refused += r.n
		}
		if err != nil {
			return res, err
		}
		elected, accepted = append(elected, e), append(accepted, a)
		progress("failover %s: kill %d of %s: new leader after %s, write accepted after %s (%d writes sent)",
			raftTimeout, k+1, leader, Duration(e), Duration(a), attempts)
		if err := cl.StartCoordinator(leader); err != nil {
			return res, err
		}
		if err := cl.WaitHealthy(30 * time.Second); err != nil {
			return res, fmt.Errorf("after restarting %s: %w", leader, err)
		}
	}
	return res, nil
}

func procsOf(cl *localcluster.Cluster) *localcluster.Procs {
	if cl == nil {
		return nil
	}
	return cl.Procs
}

// killLeader kill -9s the leader, then sends writes in a tight loop to
// each survivor (one client each, a fresh service each write) and polls
// the survivors' Raft peers, until a write is accepted and another
// leader is named, within 20 s.
func (b *bench) killLeader(cl *localcluster.Cluster, leader string) (elected, accepted time.Duration, attempts int, refusals map[string]*refusalCount, err error) {
	var survivors []localcluster.Coordinator
	for _, c := range cl.Coords {
		if c.ID != leader {
			survivors = append(survivors, c)
		}
	}
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	var (
		mu                      sync.Mutex
		electedAt, acceptedAt   time.Time
		newLeader               string
		lastWriteErr            error
		refused                 = map[string]*refusalCount{}
		wg                      sync.WaitGroup
		writesDone, pollingDone = make(chan struct{}), make(chan struct{})
		writeOnce, pollOnce     sync.Once
	)
	proc := cl.Proc(leader)
	start := time.Now()
	proc.Kill9()
	for _, s := range survivors {
		wg.Add(2)
		go func() { // writes
			defer wg.Done()
			for ctx.Err() == nil {
				select {
				case <-writesDone:
					return
				default:
				}
				err := up(ctx, s.API)
				at := time.Now()
				mu.Lock()
				attempts++
				if err == nil {
					if acceptedAt.IsZero() {
						acceptedAt = at
					}
					mu.Unlock()
					writeOnce.Do(func() { close(writesDone) })
					return
				}
				why := refusal(err)
				if refused[why] == nil {
					refused[why] = &refusalCount{sample: err.Error()}
				}
				refused[why].n++
				lastWriteErr = err
				mu.Unlock()
			}
		}()
		go func() { // the survivors' view of the leader
			defer wg.Done()
			for ctx.Err() == nil {
				select {
				case <-pollingDone:
					return
				default:
				}
				var p protocol.RaftPeersResponse
				if err := getJSON(ctx, s.API, "/v1/operator/raft/peers", time.Second, &p); err == nil {
					if l := localcluster.LeaderOf(p); l != "" && l != leader {
						at := time.Now()
						mu.Lock()
						if electedAt.IsZero() {
							electedAt, newLeader = at, l
						}
						mu.Unlock()
						pollOnce.Do(func() { close(pollingDone) })
						return
					}
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	if electedAt.IsZero() || acceptedAt.IsZero() {
		return 0, 0, attempts, refused, fmt.Errorf("after killing the leader %s: within 20s, new leader %q, a write accepted: %t (last refusal: %v)",
			leader, newLeader, !acceptedAt.IsZero(), lastWriteErr)
	}
	return electedAt.Sub(start), acceptedAt.Sub(start), attempts, refused, nil
}

// refusalCount counts one kind of refused write, with its first answer.
type refusalCount struct {
	n      int
	sample string
}

// refusal names a refused write's answer: its status and error code, or
// the client's error.
func refusal(err error) string {
	var re *refusedError
	if errors.As(err, &re) {
		if re.code != "" {
			return fmt.Sprintf("%d %s", re.status, re.code)
		}
		return fmt.Sprint(re.status)
	}
	return "no answer: " + err.Error()
}
