// Package protocol is the shared language of baton's processes: the task spec
// and its parser, the state types kept in the coordinator's Raft FSM, the
// messages exchanged over NATS and the HTTP API's request and response bodies.
//
// It imports only the standard library and the YAML parser, so every role
// (coordinator, agent, LB node, CLI) can depend on it without pulling in the
// others.
package protocol
