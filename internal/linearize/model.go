// Package linearize checks that histories of calls to baton's service API,
// as clients saw them, are linearizable: that each call can be placed at
// one instant between its start and its answer so that the answers are
// those of one coordinator applying the calls one at a time. It holds a
// porcupine model of the API (Model) and a recorder of histories
// (History).
//
// The model, per service name (names are independent partitions):
//
//   - absent: up answers ok (version 1) and the service is present;
//     update and down answer not_found; a status does not find it.
//   - present at version v: up answers already_exists; update answers ok
//     with version v+1; down answers ok with version v and the service is
//     deleting; a status finds version v, not shutting down.
//   - deleting at version v: the service is SHUTTING_DOWN until the
//     controller removes it, an internal event at a time no client sees.
//     Until then up and update answer the "is shutting down" conflict,
//     down answers ok with version v again (the FSM does not refuse a
//     second delete), and a status finds version v shutting down. The
//     removal may come before any call: so a deleting service is
//     "deleting, maybe already gone", and the answers decide which (a
//     status that does not find it, or an up that succeeds, means it was
//     gone). Gone, it is absent.
//
// A call whose outcome is unknown (a transport error after the request was
// sent, a timeout, 503 unavailable) is recorded with Result Unknown and
// returns "at infinity", after every other call: it may have been applied
// at any instant after it started, or never (then it is placed after
// everything, where it changes nothing anyone saw). The model accepts it
// with whatever answer it would have given. A call refused with nothing
// done (no_quorum, no_leader, not_leader, catching_up, connection refused)
// is left out of the history, as is a status whose answer never came (a
// read changes nothing).
package linearize

import (
	"fmt"
	"sort"

	"github.com/anishathalye/porcupine"
)

// Kind is the API call an operation made.
type Kind int

// The calls of the service API.
const (
	// Up is POST /v1/services.
	Up Kind = iota
	// Update is POST /v1/services/{name}/update.
	Update
	// Down is DELETE /v1/services/{name}.
	Down
	// Status is GET /v1/status?service={name}[&consistent].
	Status
)

func (k Kind) String() string {
	switch k {
	case Up:
		return "up"
	case Update:
		return "update"
	case Down:
		return "down"
	case Status:
		return "status"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Input is one call: what was asked of which service.
type Input struct {
	Kind Kind
	Name string
	// Consistent marks a status read with ?consistent. A read without it
	// may be stale and promises nothing: the model accepts any answer.
	Consistent bool
}

// Result is how a call was answered.
type Result int

// The answers a call can get.
const (
	// OK: the write was done (Version is the service's latest version
	// then), or the status found the service (Version and ShuttingDown
	// are what it showed).
	OK Result = iota
	// AlreadyExists: 409 already_exists (up of a present service).
	AlreadyExists
	// NotFound: 404 not_found (update or down of an absent service; a
	// status that does not list it).
	NotFound
	// Deleting: 409 "... is shutting down" (up or update of a service
	// still being deleted).
	Deleting
	// Unknown: the outcome is not known (transport error after sending,
	// timeout, 503 unavailable). Only writes are recorded with it.
	Unknown
)

func (r Result) String() string {
	switch r {
	case OK:
		return "ok"
	case AlreadyExists:
		return "already_exists"
	case NotFound:
		return "not_found"
	case Deleting:
		return "deleting"
	case Unknown:
		return "unknown"
	}
	return fmt.Sprintf("Result(%d)", int(r))
}

// Output is a call's answer.
type Output struct {
	Result Result
	// Version: with OK, the version the write answered or the status
	// showed.
	Version int
	// ShuttingDown: with OK of a status, whether the service showed
	// SHUTTING_DOWN.
	ShuttingDown bool
}

// state is one service's state as clients can observe it. The zero value
// is absent. It is comparable: porcupine compares states with ==.
type state struct {
	present  bool
	version  int  // latest version while present
	deleting bool // down committed; the removal may or may not have come
}

var absent = state{}

func (s state) String() string {
	switch {
	case !s.present:
		return "absent"
	case s.deleting:
		return fmt.Sprintf("v%d deleting (maybe gone)", s.version)
	}
	return fmt.Sprintf("v%d", s.version)
}

// answer is what a call in state s answers and the state after it.
func answer(s state, in Input) (Output, state) {
	switch in.Kind {
	case Up:
		switch {
		case !s.present:
			return Output{Result: OK, Version: 1}, state{present: true, version: 1}
		case s.deleting:
			return Output{Result: Deleting}, s
		}
		return Output{Result: AlreadyExists}, s
	case Update:
		switch {
		case !s.present:
			return Output{Result: NotFound}, s
		case s.deleting:
			return Output{Result: Deleting}, s
		}
		next := state{present: true, version: s.version + 1}
		return Output{Result: OK, Version: next.version}, next
	case Down:
		if !s.present {
			return Output{Result: NotFound}, s
		}
		next := state{present: true, version: s.version, deleting: true}
		return Output{Result: OK, Version: s.version}, next
	case Status:
		if !s.present {
			return Output{Result: NotFound}, s
		}
		return Output{Result: OK, Version: s.version, ShuttingDown: s.deleting}, s
	}
	panic(fmt.Sprintf("linearize: unknown call kind %d", in.Kind))
}

// step returns the states a call can leave s in, given its output; none if
// the output is impossible in s. A deleting service may have been removed
// before the call, so both are tried.
func step(s state, in Input, out Output) []any {
	if in.Kind == Status && !in.Consistent {
		return []any{s}
	}
	before := []state{s}
	if s.deleting {
		before = append(before, absent)
	}
	var after []any
	for _, b := range before {
		want, next := answer(b, in)
		if out.Result == Unknown || want == out {
			after = append(after, next)
		}
	}
	return after
}

// Model is the porcupine model of baton's service API, partitioned by
// service name. Inputs are Input values, outputs Output values.
var Model = (&porcupine.NondeterministicModel{
	Partition: partition,
	Init:      func() []any { return []any{absent} },
	Step: func(s, in, out any) []any {
		return step(s.(state), in.(Input), out.(Output))
	},
	DescribeOperation: func(in, out any) string { return describe(in.(Input), out.(Output)) },
	DescribeState:     func(s any) string { return s.(state).String() },
}).ToModel()

// partition splits a history by service name: the services are
// independent, so the history is linearizable if each name's is.
func partition(history []porcupine.Operation) [][]porcupine.Operation {
	byName := map[string][]porcupine.Operation{}
	for _, op := range history {
		name := op.Input.(Input).Name
		byName[name] = append(byName[name], op)
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([][]porcupine.Operation, 0, len(names))
	for _, n := range names {
		out = append(out, byName[n])
	}
	return out
}

// describe writes one operation for the visualization: "update(a) -> ok v3".
func describe(in Input, out Output) string {
	call := fmt.Sprintf("%s(%s)", in.Kind, in.Name)
	if in.Kind == Status && !in.Consistent {
		call = fmt.Sprintf("status(%s, stale ok)", in.Name)
	}
	res := out.Result.String()
	if out.Result == OK && out.Version > 0 {
		res += fmt.Sprintf(" v%d", out.Version)
	}
	if out.ShuttingDown {
		res += " shutting down"
	}
	return call + " -> " + res
}
