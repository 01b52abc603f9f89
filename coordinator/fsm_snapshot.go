package coordinator

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"

	"github.com/hashicorp/raft"
)

// Snapshot copies the state under the lock (a structural copy, no
// encoding); Persist encodes and writes it. It also restarts the count of
// log bytes applied since the last snapshot.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	st := f.State()
	f.sinceSnapshot.Store(0)
	return &fsmSnapshot{state: st}, nil
}

// Restore replaces the whole state with a snapshot's.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	s := NewState()
	if err := json.NewDecoder(bufio.NewReaderSize(rc, 1<<20)).Decode(s); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	// Snapshots written before versions carried their spec digest.
	for _, vs := range s.Versions {
		for _, v := range vs {
			if v.SpecDigest == "" {
				v.SpecDigest = specDigest(&v.Spec)
			}
		}
	}
	s.idx = buildIndex(s)
	f.mu.Lock()
	f.state = s
	f.gen++
	f.mu.Unlock()
	return nil
}

type fsmSnapshot struct{ state *State }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	w := bufio.NewWriterSize(sink, 1<<20)
	if err := json.NewEncoder(w).Encode(s.state); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	if err := w.Flush(); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
