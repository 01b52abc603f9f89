package fleetsim

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// The simulator plays a fleet whose agents and LBs would run on machines
// of their own; here they share the coordinator's cores. Lowering the
// simulator's priority (LowerPriority) keeps it from inflating the
// coordinator's latencies, while the coordinator it starts keeps the
// priority the simulator was started with: processes are started from
// one OS thread (the launcher) that is never reniced, and a child takes
// the priority of the thread that forked it.

var launcher struct {
	once sync.Once
	tid  int
	reqs chan func()
}

// launch runs fn (which starts a process) on the launcher's thread.
func launch(fn func()) {
	launcher.once.Do(func() {
		launcher.reqs = make(chan func())
		ready := make(chan int)
		go func() {
			runtime.LockOSThread() // never unlocked: this thread only starts processes
			ready <- syscall.Gettid()
			for f := range launcher.reqs {
				f()
			}
		}()
		launcher.tid = <-ready
	})
	done := make(chan struct{})
	launcher.reqs <- func() { fn(); close(done) }
	<-done
}

// LowerPriority sets the nice value of every thread of this process but
// the launcher's to nice, and keeps doing so for new threads every second
// until ctx ends. nice <= 0 does nothing. Elsewhere than on Linux it does
// nothing at all.
func LowerPriority(ctx context.Context, nice int) {
	if nice <= 0 {
		return
	}
	launch(func() {}) // start the launcher before any renice
	renice := func() {
		entries, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return
		}
		for _, e := range entries {
			tid, err := strconv.Atoi(e.Name())
			if err != nil || tid == launcher.tid {
				continue
			}
			_ = syscall.Setpriority(syscall.PRIO_PROCESS, tid, nice)
		}
	}
	renice()
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				renice()
			}
		}
	}()
}
