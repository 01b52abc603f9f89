package protocol

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidSpec is matched (with errors.Is) by every error ParseTask
// returns: a *SpecError for one problem, SpecErrors for several. The API
// reports it with code CodeInvalidSpec.
var ErrInvalidSpec = errors.New("invalid task spec")

// ErrInvalidServiceName is matched (with errors.Is) by the errors
// ValidateServiceName returns. The API reports it with code CodeInvalidName.
var ErrInvalidServiceName = errors.New("invalid service name")

// SpecError is one problem in a task YAML, located by file and line.
// Error() formats it as `file:line: field: message`, for example
//
//	task.yaml:7: resources.cpus: "four" is not a number (use 4 or 4+)
//
// Field is the dotted path of the offending key (empty for problems with the
// file as a whole, then the format is `file:line: message`). Message says
// what is wrong and what would be valid.
//
// Line is 0 for a problem that is not in the file but in what came with it,
// such as a bad `--env KEY=VALUE` override (Field `--env KEY`); Error()
// then leaves the line out: `file: field: message`.
type SpecError struct {
	File    string
	Line    int
	Field   string
	Message string
}

// Error implements error.
func (e *SpecError) Error() string {
	loc := fmt.Sprintf("%s:%d", e.File, e.Line)
	if e.Line == 0 {
		loc = e.File
	}
	if e.Field == "" {
		return fmt.Sprintf("%s: %s", loc, e.Message)
	}
	return fmt.Sprintf("%s: %s: %s", loc, e.Field, e.Message)
}

// Is reports whether target is ErrInvalidSpec.
func (e *SpecError) Is(target error) bool { return target == ErrInvalidSpec }

// SpecErrors is several problems in one task YAML, ordered by line. Error()
// puts each on its own line.
type SpecErrors []*SpecError

// Error implements error.
func (es SpecErrors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Is reports whether target is ErrInvalidSpec.
func (es SpecErrors) Is(target error) bool { return target == ErrInvalidSpec }

// Unwrap returns the individual problems, so errors.As can find a *SpecError.
func (es SpecErrors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}
