package coordinator

import (
	"strings"

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
	label := subjectLabel(m)
	s.metrics.invalidMessages.WithLabelValues(label).Inc()
	if ok, held := s.badMessages.Allow(label); ok {
		s.log.Warn("invalid message dropped", "subject", m.Subject, "bytes", len(m.Data), "error", err, "dropped_since_last_log", held)
	}
	return false
}

// subjectLabel names a message's subject in metrics and log limits: the
// subscription's pattern (baton.agent.*.status), not the subject, whose
// sender token anyone on NATS could make unbounded.
func subjectLabel(m *nats.Msg) string {
	if m.Sub != nil && m.Sub.Subject != "" {
		return m.Sub.Subject
	}
	return m.Subject
}

// sameSender reports whether the sender a per-sender subject names
// (protocol.AgentStatusSubject, LBAckSubject, SpecGetSubject; prefix is
// everything before the id) is the one the message's content names. A
// message that fails is dropped, counted in
// baton_coordinator_identity_mismatch_total and logged: with NATS
// permissions a sender can only publish under its own id, so its content
// must not speak for another.
func (s *Server) sameSender(m *nats.Msg, prefix, contentID string) bool {
	subjectID := protocol.SenderOf(m.Subject, prefix)
	if subjectID != "" && subjectID == contentID {
		return true
	}
	label := subjectLabel(m)
	s.metrics.identityMismatch.WithLabelValues(label).Inc()
	if ok, held := s.badMessages.Allow("identity " + label); ok {
		s.log.Warn("message dropped: its subject and content name different senders", "subject", m.Subject, "sender_in_content", contentID, "dropped_since_last_log", held)
	}
	return false
}

// replyable reports whether m's reply subject is an inbox: a coordinator
// may publish anywhere, so a request naming a control subject as its
// reply (baton.routes.web, say) must not make it publish there. One that
// does not is dropped, counted and logged.
func (s *Server) replyable(m *nats.Msg) bool {
	if validReply(m.Reply) {
		return true
	}
	s.metrics.invalidMessages.WithLabelValues(subjectLabel(m)).Inc()
	if ok, held := s.badMessages.Allow("reply " + subjectLabel(m)); ok {
		s.log.Warn("request dropped: its reply subject is not an inbox", "subject", m.Subject, "reply", m.Reply, "dropped_since_last_log", held)
	}
	return false
}

// validReply reports whether reply is a subject under protocol.InboxRoot.
func validReply(reply string) bool {
	return strings.HasPrefix(reply, protocol.InboxRoot) && len(reply) > len(protocol.InboxRoot)
}
