package lbnode

// Checks on what the node receives. Route tables come over NATS, where a
// bug in the leader, a mismatched version or any process allowed to publish
// may put anything: a message is bounded before it is decoded and validated
// (protocol.RouteTable.Validate) after, and an invalid one is dropped,
// logged at warn and counted in baton_lb_invalid_messages_total. It is
// never applied in part; an invalid table of a sync reply drops that table
// only.

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/baton-dev/baton/protocol"
)

// maxLoggedInvalid bounds the warnings one sync reply produces; the rest
// are counted and summed up in one line.
const maxLoggedInvalid = 10

// decodeTable decodes and checks a table pushed on subject
// (baton.routes.<service>). A table without a service name is taken to be
// the subject's; one naming another service is refused.
func decodeTable(subject string, data []byte) (*protocol.RouteTable, error) {
	if len(data) > protocol.MaxMessageBytes {
		return nil, fmt.Errorf("%w: %d bytes; at most %d", protocol.ErrInvalidMessage, len(data), protocol.MaxMessageBytes)
	}
	var t protocol.RouteTable
	if err := json.Unmarshal(data, &t); err != nil {
		return nil, fmt.Errorf("%w: not a route table: %v", protocol.ErrInvalidMessage, err)
	}
	name := strings.TrimPrefix(subject, protocol.SubjectRoutesPrefix)
	if t.Service == "" {
		t.Service = name
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	// Both names are valid (so short) once Validate has passed.
	if t.Service != name {
		return nil, fmt.Errorf("%w: service: table for %q published on the subject of %q", protocol.ErrInvalidMessage, t.Service, abbreviate(name))
	}
	return &t, nil
}

// syncReply is a route sync reply, checked.
type syncReply struct {
	// tables are the valid tables.
	tables []protocol.RouteTable
	// invalid has one error per invalid table, naming its index.
	invalid []error
	// present names every service the reply lists, with a valid table or
	// not (see pruneAbsent).
	present map[string]bool
	// maxEpoch is the newest epoch among the valid tables.
	maxEpoch uint64
}

// decodeSync decodes a sync reply and checks each of its tables. The error
// is for a reply that cannot be used at all: too large, undecodable, or
// listing more than protocol.MaxServices tables.
func decodeSync(data []byte) (*syncReply, error) {
	if len(data) > protocol.MaxMessageBytes {
		return nil, fmt.Errorf("%w: %d bytes; at most %d", protocol.ErrInvalidMessage, len(data), protocol.MaxMessageBytes)
	}
	var rs protocol.RouteSync
	if err := json.Unmarshal(data, &rs); err != nil {
		return nil, fmt.Errorf("%w: not a route sync reply: %v", protocol.ErrInvalidMessage, err)
	}
	if len(rs.Tables) > protocol.MaxServices {
		return nil, fmt.Errorf("%w: tables: %d tables; at most %d", protocol.ErrInvalidMessage, len(rs.Tables), protocol.MaxServices)
	}
	r := &syncReply{tables: rs.Tables[:0], present: make(map[string]bool, len(rs.Tables))}
	for i := range rs.Tables {
		t := rs.Tables[i]
		r.present[t.Service] = true
		if err := t.Validate(); err != nil {
			r.invalid = append(r.invalid, fmt.Errorf("tables[%d]: %w", i, err))
			continue
		}
		r.tables = append(r.tables, t) // in place: index len(r.tables) <= i
		r.maxEpoch = max(r.maxEpoch, t.Epoch)
	}
	return r, nil
}

// applySync applies a sync reply's valid tables, drops (logs and counts)
// its invalid ones and prunes the services it no longer lists.
func (n *Node) applySync(r *syncReply) {
	for i, err := range r.invalid {
		if i == maxLoggedInvalid {
			n.log.Warn("more invalid route tables in sync reply ignored", "subject", protocol.SubjectRoutesSync,
				"count", len(r.invalid)-maxLoggedInvalid)
			break
		}
		n.log.Warn("invalid route table in sync reply ignored", "subject", protocol.SubjectRoutesSync, "error", err)
	}
	n.metrics.invalidMessages.WithLabelValues(subjectLabelSync).Add(float64(len(r.invalid)))
	n.applyTables(r.tables)
	n.pruneAbsent(r.present, r.maxEpoch)
}

// invalidMessage drops a message: a warning with the reason and a count.
func (n *Node) invalidMessage(label, subject string, err error) {
	n.metrics.invalidMessages.WithLabelValues(label).Inc()
	n.log.Warn("invalid message ignored", "subject", abbreviate(subject), "error", err)
}

// abbreviate shortens s for a log line, as protocol's messages do.
func abbreviate(s string) string {
	const limit = 64
	if len(s) <= limit {
		return s
	}
	return s[:limit] + fmt.Sprintf("...(%d bytes)", len(s))
}
