// Package crashpoint lets the crash tests kill paddock at a named moment of
// an operation, so that what a restart finds is chosen, not a race against
// a timer. Code marks a moment with Hit("node/create/after-driver"), named
// by what has just happened; when the environment variable PADDOCK_CRASHPOINT
// names that point, the process prints one line to stderr and SIGKILLs
// itself there. "name@N" fires on the point's Nth hit (a moment in the middle
// of a stream or a copy). The variable is read once; without it Hit is a
// load and a comparison.
package crashpoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// EnvVar names the point (and optionally "@N", the hit) to crash at.
const EnvVar = "PADDOCK_CRASHPOINT"

// armed is the point this process crashes at: read from the environment
// once, on the first Hit.
var armed = sync.OnceValue(func() point { return parse(os.Getenv(EnvVar)) })

// hits counts the armed point's hits; only that point is counted.
var hits atomic.Int64

type point struct {
	name string // "" disarmed
	nth  int64  // the hit that fires, from 1
}

// parse reads "name" or "name@N"; anything malformed disarms, since a typo
// in a test's variable must not crash a server at a point nobody named.
func parse(v string) point {
	name, nth, found := strings.Cut(v, "@")
	if name == "" {
		return point{}
	}
	p := point{name: name, nth: 1}
	if found {
		n, err := strconv.ParseInt(nth, 10, 64)
		if err != nil || n < 1 {
			return point{}
		}
		p.nth = n
	}
	return p
}

// Hit kills the process with SIGKILL if PADDOCK_CRASHPOINT names this point
// and this is the hit it names; otherwise it returns at once.
func Hit(name string) {
	p := armed()
	if p.name == "" || p.name != name || hits.Add(1) != p.nth {
		return
	}
	// The test reads this line to know the process died here and not of
	// something else.
	fmt.Fprintf(os.Stderr, "crashpoint: %s (hit %d)\n", name, p.nth)
	self, err := os.FindProcess(os.Getpid())
	if err == nil {
		err = self.Kill()
	}
	if err != nil {
		// Going on would make the test lie about where the process died.
		fmt.Fprintf(os.Stderr, "crashpoint: %s: cannot kill this process: %v\n", name, err)
		os.Exit(137)
	}
	select {} // SIGKILL to oneself lands before the next instruction counts
}
