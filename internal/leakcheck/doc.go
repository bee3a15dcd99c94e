// Package leakcheck lets integration tests prove that sandboxes leave
// nothing behind: mounts under a data dir, loop devices backed by a file
// there, cgroups named paddock/<id> (any v1 controller or v2), network
// namespaces, and processes (children of the test, or anything in a
// paddock/ cgroup). Take a Snapshot before, and Check
// after; Check retries briefly because killed processes take a moment to go.
// A zombie whose parent is init is not counted: it is dead and init's to
// reap (a sandbox whose paddock was killed is reparented to init, and a
// minimal init may take seconds to reap it).
package leakcheck

import (
	"fmt"
	"slices"
	"time"
)

// Scope narrows what a snapshot looks at, so parallel tests do not see each
// other's sandboxes.
type Scope struct {
	// Dirs: mounts at or below these paths count, as do mounts with a path
	// component equal to one of IDs. Neither given: every mount whose path
	// contains "paddock".
	Dirs []string
	// IDs: only cgroups paddock/<id> (and processes in them) for these ids;
	// an entry ending in "*" is a prefix ("rt-*"). Empty: every cgroup below
	// paddock/, which other test processes on the host may also create.
	IDs []string
	// Children also counts this process's child processes, nsfs mounts and
	// network namespaces this process holds open; only safe when no parallel
	// test spawns processes of its own.
	Children bool
	// LinkPrefix counts network interfaces of this namespace whose name
	// starts with it ("pd": the host ends of sandbox veths). Empty: none.
	LinkPrefix string
}

// TB is the part of testing.TB a check reports to. It is an interface of
// its own so that paddock's binary (bench soak) can take snapshots without
// linking package testing.
type TB interface {
	Helper()
	Errorf(format string, args ...any)
	Cleanup(func())
}

// State is what a snapshot found; each entry is a human-readable key.
type State struct {
	scope   Scope
	Entries []string
}

// Snapshot records the scope's current resources.
func Snapshot(scope Scope) State {
	return State{scope: scope, Entries: collect(scope)}
}

// Leaks returns the entries of after that s does not have.
func (s State) Leaks(after State) []string {
	var out []string
	for _, e := range after.Entries {
		if !slices.Contains(s.Entries, e) {
			out = append(out, e)
		}
	}
	return out
}

// Check fails t for every resource present now but not at the snapshot,
// after giving dying processes up to 5 s to go.
func (s State) Check(t TB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		leaks := s.Leaks(Snapshot(s.scope))
		if len(leaks) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, l := range leaks {
				t.Errorf("leak: %s", l)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Check snapshots now and checks at the end of the test. Call it before
// anything that registers its own cleanup, so it runs last.
func Check(t TB, scope Scope) {
	t.Helper()
	s := Snapshot(scope)
	t.Cleanup(func() { s.Check(t) })
}

func (s State) String() string { return fmt.Sprint(s.Entries) }
