package protocol

import "fmt"

// MaxServiceNameLen is the longest service name ValidateServiceName accepts
// (a DNS label's limit).
const MaxServiceNameLen = 63

// ValidateServiceName checks that name can name a service: 1 to 63
// characters, lowercase ASCII letters, digits and '-', starting with a letter
// and not ending with '-'. Names become NATS subject tokens and DNS-like
// labels, so nothing else is allowed. The error matches
// ErrInvalidServiceName and says what a valid name looks like.
func ValidateServiceName(name string) error {
	const valid = "use 1-63 lowercase letters, digits and '-', starting with a letter and not ending with '-' (e.g. my-service)"
	bad := func(why string) error {
		return fmt.Errorf("%w %q: %s; %s", ErrInvalidServiceName, name, why, valid)
	}
	switch {
	case name == "":
		return fmt.Errorf("%w: the name is empty; %s", ErrInvalidServiceName, valid)
	case len(name) > MaxServiceNameLen:
		return bad(fmt.Sprintf("it is %d characters long", len(name)))
	case name[0] < 'a' || name[0] > 'z':
		return bad("it does not start with a lowercase letter")
	case name[len(name)-1] == '-':
		return bad("it ends with '-'")
	case SubjectRoutesPrefix+name == SubjectRoutesSync:
		return bad("it is reserved (baton's route sync uses it)")
	}
	for _, r := range name {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '-' {
			continue
		}
		return bad(fmt.Sprintf("it contains %q", r))
	}
	return nil
}

// TaskNameError places err, a ValidateServiceName error for the name taken
// from a task's name: field, at that field's line in file, and says how to
// name the service instead. It still matches ErrInvalidServiceName.
func TaskNameError(file string, spec *TaskSpec, err error) error {
	loc := file
	if line := spec.Lines["name"]; line > 0 {
		loc = fmt.Sprintf("%s:%d", file, line)
	}
	return fmt.Errorf("%s: name: %w (or name the service with -n NAME)", loc, err)
}
