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
type SpecError struct {
	File    string
	Line    int
	Field   string
	Message string
}

// Error implements error.
func (e *SpecError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Message)
	}
	return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Field, e.Message)
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
