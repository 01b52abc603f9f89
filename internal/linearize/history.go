package linearize

import (
	"fmt"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// History records the calls of concurrent clients. The zero value is not
// ready: use NewHistory. It is safe for concurrent use.
type History struct {
	start time.Time // the clock's zero; times are nanoseconds since

	mu  sync.Mutex // guards ops
	ops []porcupine.Operation
}

// NewHistory returns an empty history whose clock starts now.
func NewHistory() *History {
	return &History{start: time.Now()}
}

// Now is the time to record as a call's start or end: nanoseconds on the
// monotonic clock since the history began.
func (h *History) Now() int64 {
	return int64(time.Since(h.start))
}

// Add records a call by client (numbered from 0) that started at call and
// was answered at ret (both from Now). A call whose output is Unknown
// returns at infinity: its ret is ignored.
func (h *History) Add(client int, in Input, call int64, out Output, ret int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, porcupine.Operation{
		ClientId: client, Input: in, Call: call, Output: out, Return: ret,
	})
}

// Len is the number of calls recorded.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ops)
}

// Operations returns the history for porcupine: a copy in which every
// call with an Unknown outcome returns after every other call's return
// and start.
func (h *History) Operations() []porcupine.Operation {
	h.mu.Lock()
	defer h.mu.Unlock()
	return infinity(h.ops)
}

// infinity returns a copy of ops in which calls with an Unknown output
// return after every known time.
func infinity(ops []porcupine.Operation) []porcupine.Operation {
	var last int64
	for _, op := range ops {
		last = max(last, op.Call, op.Return)
	}
	out := make([]porcupine.Operation, len(ops))
	copy(out, ops)
	for i := range out {
		if out[i].Output.(Output).Result == Unknown {
			out[i].Return = last + 1
		}
	}
	return out
}

// Counts says how many calls of the history had each result, for a
// test's log: "up ok=12 already_exists=3 ...".
func (h *History) Counts() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	counts := map[string]int{}
	for _, op := range h.ops {
		counts[fmt.Sprintf("%s %s", op.Input.(Input).Kind, op.Output.(Output).Result)]++
	}
	return counts
}

// Check checks ops (from Operations) against Model for at most timeout.
// It returns porcupine's verdict (Ok, Illegal, or Unknown when the time
// ran out) and the information a visualization needs.
func Check(ops []porcupine.Operation, timeout time.Duration) (porcupine.CheckResult, porcupine.LinearizationInfo) {
	return porcupine.CheckOperationsVerbose(Model, ops, timeout)
}

// Visualize writes the HTML visualization of a check to path.
func Visualize(info porcupine.LinearizationInfo, path string) error {
	return porcupine.VisualizePath(Model, info, path)
}
