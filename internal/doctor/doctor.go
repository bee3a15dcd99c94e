// Package doctor checks that this host can run paddock's sandboxes and says,
// for each missing piece, what it is and how to fix it. `paddock doctor`
// prints its report; tests use the same checks to skip with a clear reason.
package doctor

import (
	"context"
	"fmt"
	"io"
)

// Level says how much a failed check matters.
type Level int

// Levels of a check's outcome.
const (
	OK   Level = iota
	Warn       // paddock runs, with a feature missing
	Fail       // sandboxes cannot run
)

func (l Level) String() string {
	switch l {
	case OK:
		return "ok"
	case Warn:
		return "warn"
	default:
		return "FAIL"
	}
}

// Result is the outcome of one check.
type Result struct {
	Name   string
	Level  Level
	Detail string // what was found
	Fix    string // how to fix it, when Level > OK
}

// Check inspects one host property.
type Check struct {
	Name string
	Run  func(ctx context.Context) Result
}

// Options say which setup the checks are for.
type Options struct {
	// DataDir is the data dir `paddock serve` uses: user namespaces need
	// idmapped mounts on its filesystem, so the check probes there (or in
	// its nearest existing parent). Empty: the temp dir.
	DataDir string
}

// Run runs every check, writes a report to w and returns an error when any
// check failed outright.
func Run(ctx context.Context, w io.Writer, opts Options) error {
	results := RunChecks(ctx, opts)
	failed := 0
	for _, r := range results {
		fmt.Fprintf(w, "%-5s %-22s %s\n", r.Level, r.Name, r.Detail)
		if r.Level > OK && r.Fix != "" {
			fmt.Fprintf(w, "      %-22s fix: %s\n", "", r.Fix)
		}
		if r.Level == Fail {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("doctor: %d check(s) failed; sandboxes cannot run on this host", failed)
	}
	fmt.Fprintln(w, "this host can run paddock sandboxes")
	return nil
}

// RunChecks runs every check and returns the results in order.
func RunChecks(ctx context.Context, opts Options) []Result {
	var out []Result
	for _, c := range checks(opts) {
		r := c.Run(ctx)
		r.Name = c.Name
		out = append(out, r)
	}
	return out
}

// SandboxReady returns "" when the host can run sandboxes, else the reason it
// cannot: tests skip with it.
func SandboxReady(ctx context.Context) string {
	for _, r := range RunChecks(ctx, Options{}) {
		if r.Level == Fail {
			return fmt.Sprintf("%s: %s (fix: %s)", r.Name, r.Detail, r.Fix)
		}
	}
	return ""
}
