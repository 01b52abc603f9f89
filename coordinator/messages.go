package coordinator

import (
	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/protocol"
)

// decodeMessage decodes a NATS message into v and validates it. A message
// over max bytes, one that is not one JSON value of v's shape, and one
// that validate rejects are dropped: counted in
// baton_coordinator_invalid_messages_total{subject} and logged (at most
// once per subject every few seconds, with the number held back). It
// reports whether v may be used.
func (s *Server) decodeMessage(m *nats.Msg, max int, v any, validate func() error) bool {
	err := protocol.DecodeMessage(m.Data, max, v)
	if err == nil {
		err = validate()
	}
	if err == nil {
		return true
	}
	s.metrics.invalidMessages.WithLabelValues(m.Subject).Inc()
	if ok, held := s.badMessages.Allow(m.Subject); ok {
		s.log.Warn("invalid message dropped", "subject", m.Subject, "bytes", len(m.Data), "error", err, "dropped_since_last_log", held)
	}
	return false
}
