package fake

import (
	"slices"
	"sync"
	"time"
)

// Clock is a clock the test sets and moves by hand; safe for concurrent
// use. Pass its Now (and After) where a package takes a clock (a Config's
// Now).
type Clock struct {
	mu     sync.Mutex // guards the fields below
	t      time.Time
	timers []timer
}

type timer struct {
	at time.Time
	ch chan time.Time
}

// NewClock returns a clock standing at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// After is time.After on this clock: the channel gets the clock's time
// once Set or Advance moves it to d from now (at once for d <= 0).
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.t
		return ch
	}
	c.timers = append(c.timers, timer{c.t.Add(d), ch})
	return ch
}

// Timers is how many After channels have not fired yet.
func (c *Clock) Timers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
	c.fireLocked()
}

// Advance moves the clock on by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	c.fireLocked()
}

func (c *Clock) fireLocked() {
	c.timers = slices.DeleteFunc(c.timers, func(t timer) bool {
		if t.at.After(c.t) {
			return false
		}
		t.ch <- c.t
		return true
	})
}
