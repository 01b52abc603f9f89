// Package logutil holds logging helpers shared by baton's daemons.
package logutil

import (
	"sync"
	"time"
)

// Limiter lets a message through at most once per interval per key, so
// that a flood of bad input (a hostile process publishing garbage) cannot
// fill the logs; what it holds back is still counted in metrics by the
// caller. The zero value is not usable; use NewLimiter. Safe for
// concurrent use.
type Limiter struct {
	every time.Duration
	mu    sync.Mutex
	last  map[string]time.Time
	// dropped counts suppressed messages per key since the last one let
	// through.
	dropped map[string]int
}

// NewLimiter returns a Limiter that allows one message per key every
// interval.
func NewLimiter(every time.Duration) *Limiter {
	return &Limiter{every: every, last: map[string]time.Time{}, dropped: map[string]int{}}
}

// Allow reports whether a message for key may be logged now, and how many
// were held back since the last one that was.
func (l *Limiter) Allow(key string) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if t, seen := l.last[key]; seen && now.Sub(t) < l.every {
		l.dropped[key]++
		return false, 0
	}
	if len(l.last) > 1024 {
		// Keys come from a fixed set (subjects, kinds); a bound anyway.
		clear(l.last)
	}
	l.last[key] = now
	n := l.dropped[key]
	delete(l.dropped, key)
	return true, n
}
