package membership

import (
	"encoding/json"
	"time"

	"github.com/hashicorp/memberlist"
)

// memberlist tells the others of a graceful leave (a dead message sent by
// the node itself) but does not say so to its event delegate, which sees
// the same NotifyLeave for a crash. So, as Serf does, a leaving node first
// gossips a leave intent; a member whose intent was heard is "left" when
// memberlist drops it, else "failed".

// msgLeaveIntent is the first byte of a leave intent message.
const msgLeaveIntent byte = 1

// leaveIntentTTL is how long a heard intent marks its node's next
// departure as a leave.
const leaveIntentTTL = time.Minute

type leaveIntent struct {
	Node string `json:"node"`
	// Nonce tells one intent from another of the same node (a restarted
	// node leaving again), so that each is rebroadcast once.
	Nonce int64 `json:"nonce"`
}

type heardIntent struct {
	nonce int64
	at    time.Time
}

// intentBroadcast is a leave intent in memberlist's broadcast queue; a
// newer intent of the same node replaces an older one.
type intentBroadcast struct {
	node string
	msg  []byte
	done chan struct{} // closed by Finished; nil when no one waits
}

var _ memberlist.NamedBroadcast = (*intentBroadcast)(nil)

func (b *intentBroadcast) Name() string                          { return "leave/" + b.node }
func (b *intentBroadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b *intentBroadcast) Message() []byte                       { return b.msg }
func (b *intentBroadcast) Finished() {
	if b.done != nil {
		close(b.done)
	}
}

func encodeIntent(i leaveIntent) []byte {
	raw, _ := json.Marshal(i)
	return append([]byte{msgLeaveIntent}, raw...)
}

// onIntent records an intent heard from another member, passes it on
// once, and turns the member's "failed" into "left" if its dead message
// came first.
func (p *Pool) onIntent(buf []byte) {
	var in leaveIntent
	if err := json.Unmarshal(buf, &in); err != nil || in.Node == "" || in.Node == p.name {
		return
	}
	p.mu.Lock()
	if h, ok := p.intents[in.Node]; ok && h.nonce == in.Nonce {
		p.mu.Unlock()
		return
	}
	now := time.Now()
	for name, h := range p.intents {
		if now.Sub(h.at) > leaveIntentTTL {
			delete(p.intents, name)
		}
	}
	p.intents[in.Node] = heardIntent{nonce: in.Nonce, at: now}
	if m := p.members[in.Node]; m != nil && m.Status == StatusFailed {
		m.Status = StatusLeft
		p.log.Info("gossip member left", "member", m.Name, "addr", m.Addr)
		p.notifyLocked()
	}
	p.mu.Unlock()
	p.broadcasts.QueueBroadcast(&intentBroadcast{node: in.Node, msg: encodeIntent(in)})
}

// leftIntended reports whether name announced it was leaving. Call with
// p.mu held.
func (p *Pool) leftIntended(name string) bool {
	h, ok := p.intents[name]
	return ok && time.Since(h.at) <= leaveIntentTTL
}
