//go:build !linux

package fleetsim

import "context"

// launch runs fn: only Linux threads have priorities of their own.
func launch(fn func()) { fn() }

// LowerPriority does nothing outside Linux (see nice_linux.go).
func LowerPriority(context.Context, int) {}
